"""The SI block of the Overview page: what the run's SI measures (method, σ, unit) and whether it was verified
against retraining on this data (``infoscope verify-si``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.state import RunView

_ONE = {"classes": "class", "sources": "source"}


LABEL_W, LABEL_F = "label-noise info, weights (nats)", "label-noise info, predictions (nats)"


def label_information(rv: RunView) -> dict:
    """The manifest's label-noise information section of the SI score ({} if absent)."""
    meta = (rv.run.manifest.get("scores", {}) or {}).get("si_function") or {}
    return (meta.get("info") or {}).get("label_information") or {}


def set_information(rv: RunView, kind: str) -> pd.DataFrame | None:
    """Unique information of each class / source left out as a whole, and the label-noise information about its
    labels (nats), from the manifest; None if neither is there."""
    meta = (rv.run.manifest.get("scores", {}) or {}).get("si_function") or {}
    sets = ((meta.get("info") or {}).get("set_information") or {}).get(kind) or {}
    labels = label_information(rv).get(kind) or {}
    if not sets and not labels:
        return None
    one = _ONE.get(kind, kind)
    rows = []
    for k in list(sets) + [k for k in labels if k not in sets]:
        v, lv = sets.get(k) or {}, labels.get(k) or {}
        row = {one: k}
        if sets:
            row.update({"SI weights (nats)": v.get("si_weights"), "SI predictions (nats)": v.get("si_function")})
        if labels:
            row.update({LABEL_W: lv.get("weights"), LABEL_F: lv.get("function")})
        rows.append(row)
    return pd.DataFrame(rows)


def set_information_table(rv: RunView, kind: str) -> None:
    """The table of ``set_information`` with what it means."""
    t = set_information(rv, kind)
    if t is None:
        return
    one = _ONE.get(kind, kind)
    st.markdown(f"**Unique information of each {one}** (the whole {one} left out at once, in nats; "
                "not a sum of its images' scores: redundant images each score low but together carry a lot)")
    if LABEL_W in t.columns:
        st.caption(f"**Label-noise information** of a {one}: what the head's weights (predictions) hold about this "
                   f"{one}'s labels beyond its images, given every other label, I(W; Y_S | X, rest) in nats "
                   f"(σ = {label_information(rv).get('sigma')}; Harutyunyan et al., ICML 2020). High where the "
                   "labels are uncertain yet the head fits them: memorised noise.")
    st.dataframe(t, hide_index=True, width="stretch")


def reproducibility_text(rep: dict) -> str:
    """One sentence: how far the SI ranking is the data's rather than the cross-fitting's randomness."""
    w, f, n = rep.get("si_weights"), rep.get("si_function"), rep.get("repeats")
    if f is not None and f >= 1.0 and (w is None or w >= 1.0):
        return f"**Reproducible ranking**: {rep.get('basis', 'fixed features')}."
    top = rep.get("top_overlap") or {}
    tf, tw, frac = top.get("si_function"), top.get("si_weights"), top.get("fraction")
    top_txt = (f" The top {frac:.0%} of rows would be shared with such a run at ≈ **{tf:.2f}** (predictions) / "
               f"{tw:.2f} (weights)." if tf is not None and tw is not None and frac else "")
    return (f"**Reproducibility of the ranking ≈ {f:.2f}** (predictions) / {w:.2f} (weights): the expected "
            f"Spearman correlation with a run that differs only in its seeds, estimated from {n} cross-fittings "
            f"({rep.get('stopped', '')}).{top_txt} Rows near each other in the ranking may swap places between "
            "runs; the tails (flipped labels, duplicates) do not.")


def si_block(rv: RunView) -> None:
    """Method, features, σ and unit of the run's SI, and the verify-si figures (or how to get them)."""
    meta = (rv.run.manifest.get("scores", {}) or {}).get("si_function") or {}
    if not meta:
        return
    p = meta.get("params") or {}
    st.subheader("Smooth unique information")
    if p.get("method") == "head":
        t = p.get("eta_t_per_problem") or []
        t_txt = ", ".join(dict.fromkeys(f"{float(x):.3g}" for x in t if isinstance(x, (int, float))))
        how = ("early stopping on the held-out error of all its head problems together"
               if p.get("t_choice") == "pooled" else "early stopping")
        st.markdown(
            f"A wide ReLU head on **{p.get('features', '?')}** features (rows never shaped their own features), "
            f"trained for a finite time ηt = {t_txt or '?'} ({how}), λ = {p.get('lam')}; exact kernel, no "
            f"projection. Values in **nats** with σ = {p.get('sigma')}; shown as percentiles in the grids.")
    else:
        st.markdown(f"Method `{p.get('method', 'network')}`: the whole network linearized at "
                    f"`{p.get('linearize_at', '?')}`, projection d = {p.get('projection_dim')}: an approximation "
                    "(see bench/results/si_default.md). Values in nats with σ = " f"{p.get('sigma')}.")
    rep = (meta.get("info") or {}).get("reproducibility") or {}
    if rep.get("si_function") is not None:
        st.markdown(reproducibility_text(rep))
    allv = (((meta.get("info") or {}).get("set_information") or {}).get("all") or {})
    if allv:
        st.markdown(f"Information of the whole training set in the heads: **{allv.get('si_function', 0):.4g} nats** "
                    f"(predictions), {allv.get('si_weights', 0):.4g} nats (weights).")
    label_block(rv)
    ver = rv.run.si_verification()
    if ver:
        st.success(f"Verified on this data: r = {ver['pearson_weights']:.3f} (weights) / "
                   f"{ver['pearson_function']:.3f} (predictions), Spearman {ver['spearman_weights']:.3f} / "
                   f"{ver['spearman_function']:.3f}, {int(ver['n'])} rows retrained.", icon=":material/verified:")
    else:
        st.info(f"Not verified on this data yet: run `infoscope verify-si --run {rv.run.path}`.",
                icon=":material/help:")


def label_block(rv: RunView) -> None:
    """The label-noise information I(W; Y | X) of the run's SI head, with σ and a plain-language reading."""
    li = label_information(rv)
    allv = li.get("all") or {}
    if li.get("skipped"):
        st.caption(f"Label-noise information I(W; Y | X) not computed: {li['skipped']}.")
    if not allv:
        return
    st.markdown(
        f"**Label-noise information** I(W; Y | X): **{allv.get('weights', 0):.4g} nats** in the head's weights, "
        f"{allv.get('function', 0):.4g} nats in its predictions on held-out images (σ = {li.get('sigma')}). "
        "How much the trained head remembers about the labels *beyond what the images say*: labels are treated "
        "as random around a prediction from a network that did not see them, so a clean, easy dataset scores "
        "low and noisy or ambiguous labels that the head fits anyway score high (Harutyunyan, Reing, Ver Steeg, "
        "Galstyan, ICML 2020).")
    st.caption(f"Labels given the images: {li.get('labels_given_inputs', '?')}; computed on "
               f"{li.get('computed_on', '?')}. {li.get('gaussian', '')}.")
