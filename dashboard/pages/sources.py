"""Sources: compare data sources (distributions, KS statistics, map, source × class counts, top images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import state
from dashboard.components import charts, complexity, images, page, scores, si, views
from dashboard.components.filters import distinct
from dashboard.components.stats import ks_2samp

rv = page.start()
st.title("Sources")
st.caption("How do the data sources differ? Compare their score distributions, where they sit on the map, "
           "and what their most informative images look like.")
sources = distinct(rv.static_key, rv, "source")
views.sync("sources", {"src_score": views.one_of(scores.available(rv)), "src_a": views.one_of(sources),
                       "src_b": views.one_of(sources)})
if len(sources) < 2:
    st.info(f"This run has a single source (**{sources[0] if sources else '—'}**); comparing sources needs two. "
            "Score several sources together, e.g. `infoscope score --source mnist5k --source folder:…`.",
            icon=":material/info:")
headline_slot = st.empty()
avail = scores.available(rv)
scores.missing_note(rv)
PROBS = np.linspace(0, 1, 101)


@st.cache_data(show_spinner=False, max_entries=32)
def quantiles(key: str, _rv: state.RunView, score: str) -> dict[str, np.ndarray]:
    probs = "[" + ", ".join(f"{p:.2f}" for p in PROBS) + "]"
    df = _rv.sql(f'SELECT source, quantile_cont("{score}", {probs}) FILTER (WHERE isfinite("{score}")) AS q '
                 f"FROM samples GROUP BY source ORDER BY source")
    return {r.source: np.asarray(r.q, dtype=float) for r in df.itertuples() if r.q is not None}


@st.cache_data(show_spinner=False, max_entries=8)
def ks_table(key: str, _rv: state.RunView, a: str, b: str, cols: tuple[str, ...]) -> pd.DataFrame:
    df = _rv.select('"source" IN (?, ?)', [a, b], columns=["source", *cols])
    rows = []
    for c in cols:
        xa = pd.to_numeric(df.loc[df["source"] == a, c], errors="coerce").to_numpy(dtype=float)
        xb = pd.to_numeric(df.loc[df["source"] == b, c], errors="coerce").to_numpy(dtype=float)
        d, p = ks_2samp(xa, xb)
        rows.append({"score": c, "KS D": d, "p-value": p, f"median {a}": np.nanmedian(xa) if xa.size else np.nan,
                     f"median {b}": np.nanmedian(xb) if xb.size else np.nan,
                     "reading": ("no values" if np.isnan(d) else
                                 "different" if p < 0.01 and d >= 0.1 else
                                 "slightly different" if p < 0.01 else "indistinguishable")})
    return pd.DataFrame(rows)


def headline(rv: state.RunView, a: str, b: str, score: str, kt: pd.DataFrame) -> str:
    """One sentence comparing two sources on a score: ratio of the mean per-image score (larger first) and the KS
    statistic, e.g. "Per image, mnist carries 1.9× the SI (function) of digits (mean … vs …); KS D = 0.26"."""
    m = rv.sql(f'SELECT source, avg("{score}") FILTER (WHERE isfinite("{score}")) AS m FROM samples '
               f"WHERE source IN (?, ?) GROUP BY source", [a, b]).set_index("source")["m"]
    ma, mb = float(m.get(a, np.nan)), float(m.get(b, np.nan))
    row = kt.set_index("score").loc[score] if score in set(kt["score"]) else None
    ks = "" if row is None or pd.isna(row["KS D"]) else (f"; KS D = **{float(row['KS D']):.2f}** "
                                                         f"(p = {float(row['p-value']):.2g}: {row['reading']})")
    name = scores.label(score)
    if np.isnan(ma) or np.isnan(mb):
        return f"{name} has no values in one of the two sources{ks}."
    if ma < mb:
        a, b, ma, mb = b, a, mb, ma
    if mb > 0:
        return f"Per image, **{a}** carries **{ma / mb:.1f}×** the {name} of **{b}** (mean {ma:.3g} vs. {mb:.3g}){ks}."
    return f"Mean {name}: **{a}** {ma:.3g} vs. **{b}** {mb:.3g}{ks}."


@st.cache_data(show_spinner=False, max_entries=4)
def map_points(key: str, _rv: state.RunView) -> tuple[pd.DataFrame, bool]:
    pts = _rv.select("umap_x IS NOT NULL AND umap_y IS NOT NULL", columns=["sample_id", "umap_x", "umap_y", "source"],
                     order_by=None)
    return charts.downsample(pts)


if avail:
    score = scores.pick(rv, "Score", avail, key="src_score")
    qs = quantiles(rv.static_key, rv, score)
    left, right = st.columns([1, 1.7])  # the KS table needs the wider part (every column visible at 1440 px)
    with left:
        st.plotly_chart(charts.ecdf_from_quantiles(qs, PROBS, f"{scores.label(score)} by source (ECDF)",
                                                   scores.label(score)), width="stretch")
    with right:
        if len(sources) >= 2:
            ca, cb = st.columns(2)
            a = ca.selectbox("Source A", sources, index=0, key="src_a")
            b = cb.selectbox("Source B", sources, index=1, key="src_b")
            if a == b:
                st.warning("Pick two different sources.")
            else:
                kt = ks_table(rv.static_key, rv, a, b, tuple(avail))
                headline_slot.info(headline(rv, a, b, score, kt), icon=":material/compare_arrows:")
                st.markdown(f"**Two-sample Kolmogorov–Smirnov test**, {a} vs. {b}")
                st.dataframe(kt, hide_index=True, width="stretch", column_config={
                    "score": st.column_config.TextColumn(),  # sized to its longest name (no clipping)
                    "KS D": st.column_config.ProgressColumn("KS D", format="%.2f", min_value=0.0, max_value=1.0,
                                                            width="small"),
                    "p-value": st.column_config.NumberColumn(format="%.2g", width="small"),
                    f"median {a}": st.column_config.NumberColumn("median A", format="%.3g", width="small",
                                                                 help=f"median in {a} (source A)"),
                    f"median {b}": st.column_config.NumberColumn("median B", format="%.3g", width="small",
                                                                 help=f"median in {b} (source B)"),
                    "reading": st.column_config.TextColumn(width="medium")})
                st.caption("D is the largest gap between the two cumulative distributions (0 = same, 1 = "
                           "disjoint); p < 0.01 with D ≥ 0.1 reads as different.")
else:
    st.warning("This run has no score columns to compare.")

left, right = st.columns(2)
with left:
    if {"umap_x", "umap_y"} <= set(rv.columns):
        pts, dropped = map_points(rv.static_key, rv)
        st.plotly_chart(charts.scatter_map(pts, "source", "UMAP map coloured by source"), width="stretch")
        if dropped:
            st.caption(f"Downsampled to {charts.MAX_POINTS:,} points for speed.")
    else:
        st.info("This run has no UMAP coordinates.")
with right:
    mat = rv.sql("SELECT source, label_name, count(*) AS n FROM samples GROUP BY ALL").pivot_table(
        index="source", columns="label_name", values="n", fill_value=0)
    fig = go.Figure(go.Heatmap(z=mat.values, x=[str(c) for c in mat.columns], y=list(mat.index),
                               colorscale="Blues", text=mat.values, texttemplate="%{text}",
                               colorbar={"title": {"text": "samples"}},
                               hovertemplate="%{y} · %{x}: %{z}<extra></extra>"))
    st.plotly_chart(charts.style(fig, "Samples per source and class", "class", "source",
                                 height=140 + 40 * len(mat)), width="stretch")

sx = complexity.source_table(rv)
if not sx.empty:
    st.subheader("Data complexity per source (CG)")
    st.caption(complexity.EXPLAIN + " Computed on each source's rows alone, one-vs-rest per class.")
    st.dataframe(sx, hide_index=True, width="stretch", key="src_complexity")

si.set_information_table(rv, "sources")

if avail:
    st.subheader(f"Most informative images of each source ({scores.label(score)})")
    cols = st.columns(max(len(sources), 1))
    for col, src in zip(cols, sources, strict=False):
        top = rv.select('"source" = ?', [src], order_by=score, descending=scores.higher_is_informative(score, rv),
                        limit=8)
        with col:
            st.markdown(f"**{src}**")
            images.image_grid(rv, top, ncols=4, score=score, key=f"src_top_{src}")
