"""Sidebar filters (class, source, split, score ranges, flags, decisions, tags) -> a parameterised WHERE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.store import build_filter
from dashboard.components import charts, scores
from dashboard.state import RunView

FLAG_COLUMNS = ("flag_mislabeled", "flag_adversarial")
DECISIONS = ("keep", "remove", "relabel", "undecided")


@dataclass
class Filter:
    """A WHERE clause with its parameters and a short human description."""

    where: str | None = None
    params: list[Any] = field(default_factory=list)
    description: list[str] = field(default_factory=list)

    def and_ids(self, ids: list[str] | None) -> Filter:
        """Restrict to sample ids (a map selection)."""
        if ids is None:
            return self
        w, p = build_filter(ids=ids)
        where = f"({self.where}) AND ({w})" if self.where else w
        return Filter(where, [*self.params, *p], [*self.description, f"{len(ids)} selected on the map"])


@st.cache_data(show_spinner=False, max_entries=32)
def distinct(key: str, _rv: RunView, column: str) -> list[str]:
    """Distinct non-null values of a column (sorted)."""
    if column not in _rv.columns and column != "tags":
        return []
    if column == "tags":
        df = _rv.sql("SELECT DISTINCT unnest(string_split(tags, ',')) AS v FROM samples WHERE tags <> ''")
    else:
        df = _rv.sql(f'SELECT DISTINCT "{column}" AS v FROM samples WHERE "{column}" IS NOT NULL')
    return sorted(str(v) for v in df["v"].tolist() if str(v))


@st.cache_data(show_spinner=False, max_entries=64)
def value_range(key: str, _rv: RunView, column: str) -> tuple[float, float] | None:
    df = _rv.sql(f'SELECT min("{column}") AS lo, max("{column}") AS hi FROM samples WHERE isfinite("{column}")')
    lo, hi = df["lo"].iloc[0], df["hi"].iloc[0]
    if pd.isna(lo) or pd.isna(hi):
        return None
    return float(lo), float(hi)


HIST_BINS = 30


@st.cache_data(show_spinner=False, max_entries=64)
def histogram(key: str, _rv: RunView, column: str, lo: float, hi: float, bins: int = HIST_BINS) -> pd.DataFrame:
    """Counts of the finite values of ``column`` in ``bins`` equal-width bins over [lo, hi] (the last bin closed):
    columns ``left, right, n``."""
    width = (hi - lo) / bins
    df = _rv.sql(f'SELECT least(CAST(floor(("{column}" - ?) / ?) AS BIGINT), {bins - 1}) AS b, count(*) AS n '
                 f'FROM samples WHERE isfinite("{column}") GROUP BY b', [lo, width])
    n = np.zeros(bins, dtype=np.int64)
    for b, c in zip(df["b"], df["n"], strict=True):
        if 0 <= int(b) < bins:
            n[int(b)] += int(c)
    edges = lo + width * np.arange(bins + 1)
    return pd.DataFrame({"left": edges[:-1], "right": edges[1:], "n": n})


def histogram_figure(h: pd.DataFrame, selected: tuple[float, float]) -> go.Figure:
    """A small bar chart of a score's distribution, the bins inside the selected range in the project colour."""
    inside = (h["right"] >= selected[0]) & (h["left"] <= selected[1])
    fig = go.Figure(go.Bar(x=(h["left"] + h["right"]) / 2, y=h["n"], width=h["right"] - h["left"],
                           marker_color=np.where(inside, charts.PRIMARY, "#CED4DA")))
    fig.update_layout(height=70, margin={"l": 0, "r": 0, "t": 0, "b": 0}, showlegend=False, bargap=0.05,
                      template="plotly_white", xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def class_options(rv: RunView) -> list[str]:
    names = list(rv.run.class_names)
    return names or distinct(rv.static_key, rv, "label_name")


def sidebar_filters(rv: RunView, key: str = "f") -> Filter:
    """Render the filter widgets in the sidebar and return the filter they describe."""
    sb = st.sidebar
    sb.markdown("### Filters")
    classes = sb.multiselect("Classes", class_options(rv), key=f"{key}_classes", placeholder="all classes")
    sources = sb.multiselect("Sources", distinct(rv.static_key, rv, "source"), key=f"{key}_sources",
                             placeholder="all sources")
    splits = sb.multiselect("Split", distinct(rv.static_key, rv, "split"), key=f"{key}_splits",
                            placeholder="train and test")
    flag_cols = [c for c in FLAG_COLUMNS if c in rv.columns]
    flags = sb.multiselect("Flagged as", flag_cols, key=f"{key}_flags", placeholder="any",
                           format_func=lambda c: c.replace("flag_", ""))
    decisions = sb.multiselect("Decision", list(DECISIONS), key=f"{key}_decisions", placeholder="any")
    tags = distinct(rv.key, rv, "tags")
    tag = sb.selectbox("Tag", ["(any)", *tags], key=f"{key}_tag") if tags else "(any)"
    ranges: dict[str, tuple[float, float]] = {}
    numeric = scores.available(rv) + [c for c in scores.EXTRA_NUMERIC if c in rv.columns]
    chosen = sb.multiselect("Score ranges", numeric, key=f"{key}_range_cols", format_func=scores.label,
                            placeholder="add a score to filter on")
    for col in chosen:
        r = value_range(rv.static_key, rv, col)
        if r is None or r[0] == r[1]:
            sb.caption(f"{scores.label(col)}: a single value, nothing to filter")
            continue
        cur = st.session_state.get(f"{key}_range_{col}", r)
        sb.plotly_chart(histogram_figure(histogram(rv.static_key, rv, col, r[0], r[1]), cur),
                        width="stretch", key=f"{key}_hist_{col}", config={"displayModeBar": False, "staticPlot": True})
        lo, hi = sb.slider(scores.label(col), min_value=r[0], max_value=r[1], value=r,
                           key=f"{key}_range_{col}", help=scores.spec_text(col, rv) or None)
        if (lo, hi) != r:
            ranges[col] = (lo, hi)
    where, params = build_filter(classes=classes, sources=sources, splits=splits, ranges=ranges, flags=flags,
                                 decisions=decisions, tag=None if tag == "(any)" else tag,
                                 available=rv.run.query.all_columns)
    desc = []
    for name, vals in (("class", classes), ("source", sources), ("split", splits), ("flag", flags),
                       ("decision", decisions)):
        if vals:
            desc.append(f"{name} ∈ {{{', '.join(map(str, vals))}}}")
    if tag != "(any)":
        desc.append(f"tag = {tag}")
    desc += [f"{scores.label(c)} ∈ [{lo:.3g}, {hi:.3g}]" for c, (lo, hi) in ranges.items()]
    return Filter(where, params, desc)
