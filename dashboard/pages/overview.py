"""Overview & summarization: the run at a glance, and "summarize the dataset" under a budget."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.selection import (
    FALLBACKS,
    SummaryPlan,
    pick_fallback,
    plan_summary,
    resolve_budget,
    summary_information,
)
from core.store import build_filter
from dashboard import state
from dashboard.components import charts, complexity, evidence, images, page, quality, scores, si
from dashboard.components import summary as summary_ui
from dashboard.components.export import export_panel

rv = page.start()
m = rv.run.manifest
st.title("Overview")
st.caption(f"Run **{m.get('name') or rv.run.run_id}** · created {m.get('created_at', '?')} · device "
           f"{m.get('device', '?')} · `{rv.path}`")
quality.banner(m)


@st.cache_data(show_spinner=False, max_entries=8)
def _glance(key: str, _rv: state.RunView) -> dict:
    q = _rv.sql("SELECT count(*) AS n, count(DISTINCT label_name) AS k, count(DISTINCT source) AS s, "
                "count(*) FILTER (WHERE decision = 'remove') AS removed, "
                "count(*) FILTER (WHERE decision IS NOT NULL) AS decided FROM samples").iloc[0]
    by_src = _rv.sql("SELECT source, split, count(*) AS n FROM samples GROUP BY ALL ORDER BY ALL")
    return {"n": int(q["n"]), "k": int(q["k"]), "s": int(q["s"]), "removed": int(q["removed"]),
            "decided": int(q["decided"]), "by_src": by_src}


def corruption_table(records: list[dict]) -> pd.DataFrame:
    """One row per corruption: kind, rows affected, seed, and its other parameters in one readable cell."""
    rows = []
    for r in records:
        params = {**(r.get("params") or {}), **{k: v for k, v in r.items()
                                                 if k not in ("kind", "params", "seed", "n_affected", "n")}}
        text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else
                         f"{k}: {len(v)} rows" if isinstance(v, (list, tuple)) else f"{k}={v}"
                         for k, v in params.items() if v is not None)
        rows.append({"kind": r.get("kind", "?"), "affected": r.get("n_affected", r.get("n")),
                     "seed": r.get("seed"), "parameters": text})
    return pd.DataFrame(rows)


g = _glance(rv.key, rv)
avail, gone = scores.available(rv), scores.missing(rv)
c = st.columns(5)
c[0].metric("Samples", f"{g['n']:,}")
c[1].metric("Classes", g["k"])
c[2].metric("Sources", g["s"])
c[3].metric("Scores", f"{len(avail)} / {len(scores.SCORE_ORDER)}")
c[4].metric("Decided", f"{g['decided']:,}", help=f"{g['removed']:,} removed")

left, right = st.columns(2)
with left:
    st.subheader("Sources")
    src = pd.DataFrame(m.get("sources") or [])
    split = g["by_src"].pivot_table(index="source", columns="split", values="n", fill_value=0).reset_index()
    if not src.empty and "name" in src:
        split = src.rename(columns={"name": "source"}).merge(split, on="source", how="outer")
    st.dataframe(split, hide_index=True, width="stretch")
    st.subheader("Corruptions injected")
    corr = m.get("corruptions") or []
    if corr:
        st.dataframe(corruption_table(corr), hide_index=True, width="stretch")
    else:
        st.caption("None: this run scores the data as given (no ground truth for the flags).")
    model = m.get("model") or {}
    if model:
        st.subheader("Model")
        acc = [f"{k.replace('_acc', '')} accuracy **{model[k]:.1%}**" for k in ("train_acc", "test_acc")
               if isinstance(model.get(k), (int, float))]
        epochs = f", {model['epochs']} epochs" if model.get("epochs") else ""
        st.markdown(f"`{model.get('name', '?')}`{epochs} — " + (", ".join(acc) or "no accuracy recorded"))
        if quality.quality(m).get("message") and quality.trusted(m):
            st.caption(quality.quality(m)["message"])
with right:
    st.subheader("Scores")
    lines = []
    for name in avail:
        t = (m.get("scores", {}).get(name, {}) or {}).get("wall_time_s")
        lines.append(f"- **{scores.label(name)}** (`{name}`) — {scores.spec_text(name, rv)}"
                     + (f" · {float(t):.2f} s" if isinstance(t, (int, float)) else ""))
    if lines:
        st.markdown("\n".join(lines))
    if gone:
        st.warning("Missing from this run (absent or all NaN): " + ", ".join(f"`{s}`" for s in gone), icon=":material/info:")
    si.si_block(rv)
    complexity.overview_block(rv)
    steps = m.get("steps") or {}
    if steps:
        t = pd.DataFrame({"step": list(steps), "seconds": [float(v) for v in steps.values()]})
        fig = go.Figure(go.Bar(x=t["seconds"], y=t["step"], orientation="h", marker_color=charts.PRIMARY))
        fig.update_yaxes(autorange="reversed")
        st.plotly_chart(charts.style(fig, "Where the scoring time went", "wall time (s)", "step",
                                     height=60 + 28 * len(t)), width="stretch")

# ---- summarization ---------------------------------------------------------------------------------
st.divider()
st.header("Summarize the dataset")
st.caption("Keep a budget of images that retains as much information as possible. **Top** keeps the highest "
           "scores; **class-balanced** gives every class the same number of images (a class with fewer gives all "
           "it has, the rest is shared by the others); **diversity-aware** (the default) greedily covers the "
           "embedding (informativeness-weighted k-center); **iterative SI pruning** removes the 5% of what is left with the "
           "lowest leave-one-out SI of a ridge head on the embeddings, rescores in closed form and repeats.")
info_scores = scores.informative(rv)
methods: dict[str, tuple[str, str | None]] = {}
for s in ("si_function", "si_weights", "cg_score"):
    if s in info_scores:
        methods[f"Top by {scores.label(s)}"] = ("top", s)
if info_scores:
    methods["Class-balanced"] = ("class_balanced", None)
    methods["Diversity-aware (embeddings)"] = ("diversity", None)
has_embeddings = rv.run.embeddings() is not None
if has_embeddings and "label_name" in rv.columns:
    methods["Iterative SI pruning (ridge head, rescored)"] = ("iterative", None)
if not methods:
    st.warning("This run has no informativeness score, so it cannot be summarized.", icon=":material/warning:")
    st.stop()
c1, c2, c3, c4 = st.columns([1.6, 1, 1, 1.4])
# Default: diversity-aware. On the demo and on two pair-noise runs it was the method whose 100-image summary held
# the fewest injected mislabels (8% each; top by SI 15-25%, under the flags of the time; 2-4% against 6-13%
# with the current flags) and the best retrained accuracy (bench/results/summaries*.md).
default_method = "Diversity-aware (embeddings)" if has_embeddings else None
method_label = c1.selectbox("Method", list(methods), key="sum_method",
                            index=list(methods).index(default_method) if default_method in methods else 0)
method, fixed = methods[method_label]
if method == "iterative":
    score = "si_function"
    c4.caption("Leave-one-out functional SI of a ridge head (MSE to one-hot) on the run's embeddings, recomputed "
               "after every 5% step; held-out rows take part like any other row.")
else:
    score = fixed or c4.selectbox("Informativeness score", info_scores, key="sum_score", format_func=scores.label)
mode = c2.radio("Budget as", ["count", "%"], horizontal=True, key="sum_mode")
if mode == "count":
    budget: int | float = c3.number_input("Budget", min_value=1, max_value=g["n"], value=min(100, g["n"]),
                                          step=10, key="sum_count")
else:
    budget = c3.number_input("Budget (%)", min_value=0.1, max_value=100.0, value=10.0, step=1.0,
                             key="sum_pct") / 100.0
if fixed:
    c4.caption(scores.spec_text(score, rv))
exclude = st.toggle("Leave out flagged and removed images", value=True, key="sum_exclude",
                    help="Rows the engine flagged as mislabeled or adversarial (unless you decided 'keep') and rows "
                         "you decided 'remove'. Relabel decisions are always applied.")
k = resolve_budget(g["n"], budget if mode == "count" else min(float(budget), 0.999999))
if method == "diversity" and not has_embeddings:
    st.warning("This run has no embeddings.npy, so diversity-aware selection is not available.", icon=":material/warning:")
    st.stop()
if method == "diversity" and k > 5000:
    st.info("Diversity-aware selection costs O(budget × n); budgets above 5 000 are capped at 5 000.")
    k = 5000

SUM_COLS = ("sample_id", "label_name", "split", "umap_x", "umap_y", "flag_mislabeled", "flag_adversarial")


@st.cache_data(show_spinner=False, max_entries=4)
def _table(key: str, _rv: state.RunView, cols: tuple[str, ...]) -> pd.DataFrame:
    return _rv.select(columns=list(cols), order_by=None)


def _sum_table(rv: state.RunView) -> pd.DataFrame:
    cols = [c for c in SUM_COLS if c in rv.columns] + ["decision", "relabel_to"]
    return _table(rv.key, rv, tuple(dict.fromkeys([*cols, *scores.available(rv)])))


fallback_opts = ["auto"]
if method != "iterative":
    t0 = _sum_table(rv)
    n_missing = int(t0[score].isna().sum()) if score in t0 else 0
    if n_missing:
        pref = [*FALLBACKS, *scores.informative(rv)]
        cands = [s for s in dict.fromkeys(pref) if s != score and s in scores.informative(rv)
                 and t0.loc[t0[score].isna(), s].notna().any()]
        auto = pick_fallback(t0, score, tuple(cands)) if cands else None
        fallback_opts = [*([auto] if auto else []), *[c for c in cands if c != auto], "leave them out"]
        fb_choice = st.selectbox(f"Rows without {scores.label(score)} ({n_missing:,}, e.g. held-out rows) are ranked "
                                 f"by their percentile{' within their class' if method == 'class_balanced' else ''} of", fallback_opts, key=f"sum_fallback_{score}",
                                 format_func=lambda c: c if c == "leave them out" else scores.label(c))
    else:
        fb_choice = None
else:
    fb_choice = None
fallback = None if fb_choice in (None, "leave them out") else fb_choice


@st.cache_data(show_spinner="Selecting…", max_entries=16)
def _summary(key: str, _rv: state.RunView, method: str, score: str, k: int, fallback: str | None,
             exclude: bool) -> SummaryPlan:
    t = _sum_table(_rv)
    emb = _rv.run.embeddings() if method in ("diversity", "iterative") else None
    return plan_summary(t, emb, k, method, score=score, fallback=fallback, exclude_flagged=exclude,
                        exclude_removed=exclude)


table = _sum_table(rv)
try:
    plan = _summary(rv.key, rv, method, score, k, fallback, exclude)
except ValueError as e:
    st.error(f"Could not summarize: {e}")
    st.stop()
idx = plan.idx
ex = plan.excluded
held = int((table["split"].iloc[idx] == "test").sum()) if "split" in table else 0
left_out = [f"{ex.get('flagged', 0):,} flagged" if exclude else None, f"{ex.get('removed', 0):,} removed" if exclude else None,
            f"{ex['no score']:,} without {scores.label(score)} or a fallback" if ex.get("no score") else None]
left_out = [s for s in left_out if s]
st.markdown(f"**{len(idx):,}** images ({len(idx) / max(g['n'], 1):.1%} of the dataset), {held:,} of them held-out rows."
            + (f" Left out: {', '.join(left_out)}." if left_out else " Nothing left out."))
if plan.fallback:
    n_fb = int((plan.ranked_by[idx] == "fallback").sum())
    st.caption(f"Rows without {scores.label(score)} are ranked by their percentile of **{scores.label(plan.fallback)}** "
               f"({'within their class' if method == 'class_balanced' else 'over the run'}); {n_fb:,} of the summary "
               "were ranked that way.")
if len(idx) < k:
    st.warning(f"Only {len(idx):,} images are eligible, fewer than the budget of {k:,}.", icon=":material/info:")

sigma = float(((m.get("scores", {}).get("si_function") or {}).get("params") or {}).get("sigma", 1.0) or 1.0)


@st.cache_data(show_spinner="Measuring the information left out…", max_entries=16)
def _information(key: str, _rv: state.RunView, _plan, method: str, score: str, k: int, fallback: str | None,
                 exclude: bool, sigma: float) -> dict:
    t = _sum_table(_rv)
    ev = (t["split"] == "test").to_numpy() if "split" in t else None
    return summary_information(_rv.run.embeddings(), _plan, eval_mask=ev, sigma=sigma)


tabs = ["Images", "Map", "Classes", "Information left out", "Retrained accuracy", "Export summary"]
tab_grid, tab_map, tab_cls, tab_info, tab_acc, tab_export = st.tabs(tabs)
with tab_grid:
    show = min(32, len(idx))
    sel = table.iloc[idx[:show]]
    order_col = score if score in rv.columns else None
    rows = rv.select(*build_filter(ids=sel["sample_id"].tolist()), order_by=order_col)
    st.caption(f"{show} images of the summary (of {len(idx):,})"
               + (f", highest {scores.label(order_col)} first." if order_col else "."))
    images.image_grid(rv, rows, ncols=8, score=order_col)
with tab_cls:
    counts = pd.DataFrame({"class": plan.labels[plan.eligible]}).value_counts().rename("eligible").reset_index()
    chosen = pd.DataFrame({"class": plan.labels[idx]}).value_counts().rename("chosen").reset_index()
    per = counts.merge(chosen, on="class", how="outer").fillna(0)
    if plan.per_class is not None:
        per = plan.per_class.rename(columns={"available": "eligible"})
        st.caption("Equal numbers per class up to availability; a class short of its equal share gives all it has "
                   "and the leftover is shared by the others.")
    st.dataframe(per, hide_index=True, width="stretch", key="sum_classes")


@st.cache_data(show_spinner=False, max_entries=4)
def _background(key: str, _table: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    return charts.downsample(_table[["sample_id", "umap_x", "umap_y", "label_name"]].dropna(subset=["umap_x"]))


with tab_map:
    if {"umap_x", "umap_y"} <= set(table.columns) and table["umap_x"].notna().any():
        pts, dropped = _background(rv.static_key, table)
        summary_ids = table["sample_id"].iloc[idx]
        pts = pd.concat([pts, table.iloc[idx][["sample_id", "umap_x", "umap_y", "label_name"]]]).drop_duplicates(
            "sample_id")
        if dropped:
            st.caption(f"Map downsampled to {charts.MAX_POINTS:,} background points (all summary points shown).")
        st.plotly_chart(charts.scatter_map(pts, "label_name", f"The summary on the UMAP map ({len(idx):,} points)",
                                           highlight=summary_ids.tolist()), width="stretch", key="sum_map")
    else:
        st.info("This run has no UMAP coordinates (`umap_x`, `umap_y`).")
with tab_info:
    if rv.run.embeddings() is None or len(idx) == 0:
        st.info("Needs the run's embeddings (embeddings.npy) and a non-empty summary.")
    else:
        info = _information(rv.key, rv, plan, method, score, k, fallback, exclude, sigma)
        st.markdown(
            "What the images **left out** of the summary tell a ridge head (MSE to one-hot) on the run's embeddings, "
            f"with σ = {info['sigma']:g}: I_f = ½·mean over held-out x of ‖f_all(x) − f_summary(x)‖²/σ² and "
            "I_w = ½‖w_all − w_summary‖²/σ², in nats, computed exactly for this subset (not a sum of per-image "
            "scores: two near-duplicates each carry little alone, but leaving both out loses much more). "
            "Lower = the summary keeps more; *Harutyunyan et al., ICLR 2021*.")
        cols = st.columns(3)
        cols[0].metric("Left out, function (nats)", f"{info['function_nats']:.4g}",
                       help=f"of {info['function_nats_all']:.4g} nats that the whole pool of {info['n_pool']:,} rows carries")
        cols[1].metric("Random subsets, same size", f"{info['random_function_nats']:.4g}",
                       help=f"mean of 5 seeded random subsets of the pool (sd {info['random_function_sd']:.2g})")
        cols[2].metric("Left out, weights (nats)", f"{info['weights_nats']:.4g}",
                       help=f"random subsets: {info['random_weights_nats']:.4g}")
        better = info["function_nats"] < info["random_function_nats"]
        st.caption(("This summary keeps **more** " if better else "This summary keeps **less** ")
                   + f"information about the head than random subsets of the same size (λ = {info['lam']:.3g}, the "
                   "mean squared feature norm; pool = the eligible images).")
with tab_acc:
    ids = table["sample_id"].iloc[idx].tolist()
    st.caption("Fit the same model on the summary and on random subsets of the same size (drawn from the same "
               "eligible images), and measure accuracy on held-out rows outside the summary. The engine runs it "
               "(`infoscope evaluate-summary`); the dashboard only starts it.")
    a1, a2 = st.columns([2, 1])
    model = a1.selectbox("Model", list(summary_ui.MODEL_LABELS), format_func=summary_ui.MODEL_LABELS.get,
                         key="sum_acc_model")
    k_random = a2.number_input("Random subsets", min_value=1, max_value=20, value=5, key="sum_acc_k")
    acc_key = (rv.key, method, score, k, fallback, exclude, model, int(k_random))
    if st.button("Compare with random subsets", key="sum_acc_go", disabled=not ids):
        try:
            st.session_state["sum_acc_result"] = (acc_key, summary_ui.retrain_comparison(
                rv.path, ids, model, int(k_random), include_flagged=not exclude))
        except RuntimeError as e:
            st.error(f"The comparison failed: {e}", icon=":material/error:")
    stored = st.session_state.get("sum_acc_result")
    if stored and stored[0] == acc_key:
        res = stored[1]
        r = pd.DataFrame({"subset": ["summary"] + [f"random {i + 1}" for i in range(len(res["random_accs"]))],
                          "held-out accuracy": [res["summary_acc"], *res["random_accs"]]})
        st.markdown(f"Summary: **{res['summary_acc']:.1%}** · random subsets of {res['n_train']:,}: "
                    f"**{res['random_mean']:.1%} ± {res['random_sd']:.1%}** (mean ± sd of {len(res['random_accs'])}), "
                    f"on {res['n_eval']:,} held-out rows, model: {res['model']}.")
        st.dataframe(r, hide_index=True, width="stretch", key="sum_acc_table",
                     column_config={"held-out accuracy": st.column_config.NumberColumn(format="percent")})
with tab_export:
    ids = table["sample_id"].iloc[idx].tolist()
    export_panel(rv, "sum_export", "summary", lambda: rv.select(*build_filter(ids=ids)), len(ids))

st.divider()
evidence.render()
