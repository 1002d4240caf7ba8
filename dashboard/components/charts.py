"""Plotly figures with one look: titles, axis labels, legends, the project palette."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PRIMARY = "#3B5BDB"
#: twenty colours no two of which look alike (every pair ≥ 29 apart in CIELAB ΔE*76; none lighter than L* = 85,
#: so all show on white), chosen greedily (max–min distance) from the Kelly, Tableau and Trubetskoy sets starting
#: at the project blue: the first k are as distinct as possible for any k ≤ 20 classes.
PALETTE = ["#3B5BDB", "#DCD300", "#BE0032", "#469990", "#F032E6", "#FABED4", "#2CA02C", "#FF7F0E", "#654522",
           "#1F77B4", "#C2B280", "#808000", "#875692", "#F99379", "#000075", "#A1CAF1", "#495057", "#B3446C",
           "#FAB005", "#862E9C"]
NAN_GREY = "#CED4DA"
MAX_POINTS = 50_000


def style(fig: go.Figure, title: str, x: str | None = None, y: str | None = None, height: int = 380,
          legend_title: str | None = None) -> go.Figure:
    """Apply the house layout."""
    fig.update_layout(title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 16}},
                      template="plotly_white", height=height, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      colorway=PALETTE, legend_title_text=legend_title,
                      font={"family": "Inter, Segoe UI, sans-serif", "size": 12})
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    return fig


def downsample(df: pd.DataFrame, max_points: int = MAX_POINTS, seed: int = 0) -> tuple[pd.DataFrame, bool]:
    """A seeded random subset of at most ``max_points`` rows (and whether rows were dropped)."""
    if len(df) <= max_points:
        return df, False
    idx = np.sort(np.random.default_rng(seed).choice(len(df), max_points, replace=False))
    return df.iloc[idx], True


def scatter_map(df: pd.DataFrame, color: str, title: str, highlight: Sequence[str] | None = None,
                height: int = 480, numeric: bool | None = None) -> go.Figure:
    """UMAP scatter (WebGL) coloured by a column; ``customdata`` is the sample id (for selections).

    With ``highlight``, all points are grey and the highlighted sample ids are drawn on top in colour.
    """
    fig = go.Figure()
    hover = "%{customdata}<br>" + color + ": %{text}<extra></extra>"
    if highlight is not None:
        mask = df["sample_id"].isin(set(highlight))
        rest, hi = df[~mask], df[mask]
        fig.add_trace(go.Scattergl(x=rest["umap_x"], y=rest["umap_y"], mode="markers", name="not selected",
                                   marker={"size": 4, "color": "#CED4DA"}, customdata=rest["sample_id"],
                                   text=rest[color].astype(str), hovertemplate=hover))
        fig.add_trace(go.Scattergl(x=hi["umap_x"], y=hi["umap_y"], mode="markers", name="in summary",
                                   marker={"size": 7, "color": PRIMARY, "line": {"width": 0.5, "color": "white"}},
                                   customdata=hi["sample_id"], text=hi[color].astype(str), hovertemplate=hover))
        return style(fig, title, "UMAP 1", "UMAP 2", height, legend_title="")
    is_num = numeric if numeric is not None else pd.api.types.is_float_dtype(df[color])
    if is_num:
        v = pd.to_numeric(df[color], errors="coerce").astype(float)
        ok = np.isfinite(v.to_numpy())
        none = df[~ok]
        if len(none):
            fig.add_trace(go.Scattergl(x=none["umap_x"], y=none["umap_y"], mode="markers", name="no value",
                                       customdata=none["sample_id"], text=["n/a"] * len(none), hovertemplate=hover,
                                       marker={"size": 4, "color": NAN_GREY}))
        part, q = df[ok], quantile_ranks(v[ok].to_numpy())
        ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
        labels = [f"{x:.3g}" for x in np.quantile(v[ok].to_numpy(), ticks)] if ok.any() else []
        fig.add_trace(go.Scattergl(
            x=part["umap_x"], y=part["umap_y"], mode="markers", customdata=part["sample_id"], name=color,
            text=[f"{x:.3g} (p{100 * r:.0f})" for x, r in zip(v[ok], q, strict=True)], hovertemplate=hover,
            marker={"size": 5, "color": q, "colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "showscale": True,
                    "colorbar": {"title": {"text": f"{color} (quantile)"}, "tickvals": ticks if labels else [],
                                 "ticktext": labels}}))
    else:
        for i, (name, part) in enumerate(df.groupby(df[color].astype(str), sort=True)):
            fig.add_trace(go.Scattergl(x=part["umap_x"], y=part["umap_y"], mode="markers", name=str(name),
                                       marker={"size": 5, "color": PALETTE[i % len(PALETTE)]},
                                       customdata=part["sample_id"], text=part[color].astype(str),
                                       hovertemplate=hover))
    return style(fig, title, "UMAP 1", "UMAP 2", height, legend_title=color)


def quantile_ranks(values: np.ndarray) -> np.ndarray:
    """Mid-rank quantile of each value among all of them, in [0, 1] (ties share their mean rank): a colour scale
    on which a few extreme scores do not squash every other point into one colour."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    if v.size == 1:
        return np.array([0.5])
    return (pd.Series(v).rank(method="average").to_numpy() - 1.0) / (v.size - 1.0)


def box_from_stats(stats: pd.DataFrame, group: str, title: str, y: str) -> go.Figure:
    """Box plot from precomputed quartiles (columns ``q1, med, q3, lo, hi, mean``) — fast on any row count."""
    fig = go.Figure()
    for i, r in enumerate(stats.itertuples(index=False)):
        g = str(getattr(r, group))
        fig.add_trace(go.Box(name=g, q1=[r.q1], median=[r.med], q3=[r.q3], lowerfence=[r.lo],
                             upperfence=[r.hi], mean=[r.mean], x=[g], marker_color=PALETTE[i % len(PALETTE)],
                             boxmean=True, showlegend=False))
    return style(fig, title, group.replace("_", " "), y)


def ecdf_from_quantiles(qs: dict[str, np.ndarray], probs: np.ndarray, title: str, x: str) -> go.Figure:
    """ECDF curves (one per group) drawn from quantile grids."""
    fig = go.Figure()
    for i, (name, q) in enumerate(qs.items()):
        fig.add_trace(go.Scatter(x=q, y=probs, mode="lines", name=str(name), line={"width": 2.5,
                                 "color": PALETTE[i % len(PALETTE)], "shape": "hv"}))
    return style(fig, title, x, "fraction of samples ≤ x", legend_title="source")
