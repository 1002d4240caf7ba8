"""The SI block of the Overview page: what the run's SI measures (method, σ, unit) and whether it was verified
against retraining on this data (``infoscope verify-si``)."""

from __future__ import annotations

import streamlit as st

from dashboard.state import RunView


def si_block(rv: RunView) -> None:
    """Method, features, σ and unit of the run's SI, and the verify-si figures (or how to get them)."""
    meta = (rv.run.manifest.get("scores", {}) or {}).get("si_function") or {}
    if not meta:
        return
    p = meta.get("params") or {}
    st.subheader("Smooth unique information")
    if p.get("method") == "head":
        t = p.get("eta_t_per_problem") or []
        t_txt = ", ".join(f"{float(x):.3g}" for x in t if isinstance(x, (int, float)))
        st.markdown(
            f"A wide ReLU head on **{p.get('features', '?')}** features (rows never shaped their own features), "
            f"trained for a finite time ηt = {t_txt or '?'} (early stopping), λ = {p.get('lam')}; exact kernel, no "
            f"projection. Values in **nats** with σ = {p.get('sigma')}; shown as percentiles in the grids.")
    else:
        st.markdown(f"Method `{p.get('method', 'network')}`: the whole network linearized at "
                    f"`{p.get('linearize_at', '?')}`, projection d = {p.get('projection_dim')}: an approximation "
                    "(see bench/results/si_default.md). Values in nats with σ = " f"{p.get('sigma')}.")
    ver = rv.run.si_verification()
    if ver:
        st.success(f"Verified on this data: r = {ver['pearson_weights']:.3f} (weights) / "
                   f"{ver['pearson_function']:.3f} (predictions), Spearman {ver['spearman_weights']:.3f} / "
                   f"{ver['spearman_function']:.3f}, {int(ver['n'])} rows retrained.", icon=":material/verified:")
    else:
        st.info(f"Not verified on this data yet: run `infoscope verify-si --run {rv.run.path}`.",
                icon=":material/help:")
