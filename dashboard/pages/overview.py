"""Overview & summarization: the run at a glance, and "summarize the dataset" under a budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.selection import informativeness_curve, resolve_budget, summarize
from core.store import build_filter
from dashboard import state
from dashboard.components import charts, evidence, images, page, quality, scores
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
st.caption("Keep a budget of images that retains as much information as possible. Top-k keeps the highest "
           "scores; class-balanced splits the budget across classes in proportion to their size; "
           "diversity-aware greedily covers the embedding (informativeness-weighted k-center).")
info_scores = scores.informative(rv)
methods: dict[str, tuple[str, str | None]] = {}
for s in ("si_function", "si_weights", "cg_score"):
    if s in info_scores:
        methods[f"Top by {scores.label(s)}"] = ("top", s)
if info_scores:
    methods["Class-balanced"] = ("class_balanced", None)
    methods["Diversity-aware (embeddings)"] = ("diversity", None)
if not methods:
    st.warning("This run has no informativeness score, so it cannot be summarized.", icon=":material/warning:")
    st.stop()
c1, c2, c3, c4 = st.columns([1.6, 1, 1, 1.4])
method_label = c1.selectbox("Method", list(methods), key="sum_method")
method, fixed = methods[method_label]
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
k = resolve_budget(g["n"], budget if mode == "count" else min(float(budget), 0.999999))
if method == "diversity" and rv.run.embeddings() is None:
    st.warning("This run has no embeddings.npy, so diversity-aware selection is not available.", icon=":material/warning:")
    st.stop()
if method == "diversity" and k > 5000:
    st.info("Diversity-aware selection costs O(budget × n); budgets above 5 000 are capped at 5 000.")
    k = 5000


@st.cache_data(show_spinner=False, max_entries=4)
def _table(key: str, _rv: state.RunView, cols: tuple[str, ...]) -> pd.DataFrame:
    return _rv.select(columns=list(cols), order_by=None)


@st.cache_data(show_spinner="Selecting…", max_entries=16)
def _summary(key: str, _rv: state.RunView, method: str, score: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    base = [c for c in ("sample_id", "label_name", "umap_x", "umap_y") if c in _rv.columns]
    t = _table(_rv.static_key, _rv, tuple(dict.fromkeys([*base, *scores.informative(_rv)])))
    emb = _rv.run.embeddings() if method == "diversity" else None
    idx = summarize(t, emb, k, method, score=score, label_column="label_name")
    return idx, informativeness_curve(t, idx, score)


base_cols = tuple(c for c in ("sample_id", "label_name", "umap_x", "umap_y") if c in rv.columns)
table = _table(rv.static_key, rv, tuple(dict.fromkeys([*base_cols, *info_scores])))
try:
    idx, curve = _summary(rv.static_key, rv, method, score, k)
except ValueError as e:
    st.error(f"Could not summarize: {e}")
    st.stop()
kept = float(curve[-1]) if len(curve) else 0.0
st.markdown(f"**{len(idx):,}** images ({len(idx) / max(g['n'], 1):.1%} of the dataset) keep "
            f"**{kept:.1%}** of the total {scores.label(score)}.")

tab_grid, tab_map, tab_curve, tab_export = st.tabs(["Images", "Map", "Informativeness kept", "Export summary"])
with tab_grid:
    show = min(32, len(idx))
    sel = table.iloc[idx[:show]]
    rows = rv.select(*build_filter(ids=sel["sample_id"].tolist()), order_by=score)
    st.caption(f"The {show} most informative images of the summary (of {len(idx):,}).")
    images.image_grid(rv, rows, ncols=8, score=score)
@st.cache_data(show_spinner=False, max_entries=4)
def _background(key: str, _table: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    return charts.downsample(_table[["sample_id", "umap_x", "umap_y", "label_name"]].dropna(subset=["umap_x"]))


@st.cache_data(show_spinner=False, max_entries=16)
def _best_curve(key: str, _table: pd.DataFrame, score: str) -> np.ndarray:
    return informativeness_curve(_table, summarize(_table, None, len(_table), "top", score=score), score)


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
with tab_curve:
    full = _best_curve(rv.static_key, table, score)
    grid = np.unique(np.linspace(1, g["n"], min(g["n"], 400)).astype(int))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=grid, y=full[grid - 1], name=f"top-k by {scores.label(score)} (upper bound)",
                             line={"color": "#ADB5BD", "dash": "dash"}))
    fig.add_trace(go.Scatter(x=[0, g["n"]], y=[0, 1], name="random (expected)",
                             line={"color": "#CED4DA", "dash": "dot"}))
    ks = np.arange(1, len(curve) + 1)
    fig.add_trace(go.Scatter(x=ks, y=curve, name=f"{method_label} (selection order)",
                             line={"color": charts.PRIMARY, "width": 3}))
    fig.add_trace(go.Scatter(x=[len(idx)], y=[kept], mode="markers", name="chosen budget",
                             marker={"size": 12, "color": "#F08C00"}))
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    st.plotly_chart(charts.style(fig, "Total informativeness kept vs. budget", "budget (images kept)",
                                 f"share of total {scores.label(score)} kept", legend_title="selection"),
                    width="stretch", key="sum_curve")
with tab_export:
    ids = table["sample_id"].iloc[idx].tolist()
    export_panel(rv, "sum_export", "summary", lambda: rv.select(*build_filter(ids=ids)), len(ids))

st.divider()
evidence.render()
