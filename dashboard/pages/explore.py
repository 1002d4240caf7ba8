"""Explore & export: filter / sort / page the image grid, lasso on the map, bulk decisions, export."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.components import charts, decisions, detail, images, page, scores, views
from dashboard.components.export import export_panel
from dashboard.components.filters import (
    DECISIONS,
    FLAG_COLUMNS,
    class_options,
    distinct,
    sidebar_filters,
    value_range,
)
from dashboard.components.stats import points_in_polygon


def selection_geometry(selection: dict, ids: list[str]) -> dict | None:
    """What to keep of a plotly selection: the lasso polygon or box (short, fits a URL) or else the ids."""
    lasso = selection.get("lasso") or []
    if lasso and isinstance(lasso[0], dict) and lasso[0].get("x"):
        return {"lasso": [[round(float(v), 5) for v in lasso[0]["x"]], [round(float(v), 5) for v in lasso[0]["y"]]]}
    box = selection.get("box") or []
    if box and isinstance(box[0], dict) and len(box[0].get("x", [])) == 2:
        return {"box": [*(float(v) for v in box[0]["x"]), *(float(v) for v in box[0]["y"])]}
    return {"ids": ids} if ids else None


def ids_in_selection(sel: dict, pts: pd.DataFrame) -> list[str]:
    """The sample ids of ``pts`` (``sample_id, umap_x, umap_y``) inside a stored map selection."""
    if "ids" in sel:
        return [i for i in pts["sample_id"].astype(str) if i in set(sel["ids"])]
    if "box" in sel:
        x0, x1, y0, y1 = sel["box"]
        m = pts["umap_x"].between(min(x0, x1), max(x0, x1)) & pts["umap_y"].between(min(y0, y1), max(y0, y1))
    else:
        xs, ys = sel["lasso"]
        m = points_in_polygon(pts["umap_x"].to_numpy(), pts["umap_y"].to_numpy(), xs, ys)
    return pts.loc[m, "sample_id"].astype(str).tolist()

MAP_IDS = "explore_map_ids"
MAP_SIG = "explore_map_sig"

MAP_SEL = "explore_map_sel"

rv = page.start()
st.title("Explore & export")


def _view_spec() -> dict[str, views.Validator]:
    """What of this page a URL or a saved view holds, each with the check that cleans it."""
    numeric = scores.available(rv) + [c for c in scores.EXTRA_NUMERIC if c in rv.columns]
    tags = distinct(rv.key, rv, "tags")
    return {
        "ex_classes": views.subset_of(class_options(rv)),
        "ex_sources": views.subset_of(distinct(rv.static_key, rv, "source")),
        "ex_splits": views.subset_of(distinct(rv.static_key, rv, "split")),
        "ex_flags": views.subset_of([c for c in FLAG_COLUMNS if c in rv.columns]),
        "ex_decisions": views.subset_of(list(DECISIONS)),
        "ex_tag": views.one_of(["(any)", *tags]),
        "ex_range_cols": views.subset_of(numeric),
        "ex_range_*": views.range_in(lambda k: value_range(rv.static_key, rv, k[len("ex_range_"):])
                                     if k[len("ex_range_"):] in numeric else None),
        "ex_color": views.one_of(["label_name", "source", "decision", *scores.available(rv)]),
        "ex_sort": views.one_of([*numeric, "label_name", "source", "sample_id"]),
        "ex_desc": views.boolean,
        "ex_per_page": views.one_of([24, 48, 96]),
        "ex_page": views.positive_int,
    }


def _map_sel(_k: str, v: object) -> dict | None:
    """A map selection from a URL / saved view: {"lasso": [xs, ys]}, {"box": [x0, x1, y0, y1]} or {"ids": [...]}."""
    if not isinstance(v, dict) or len(v) != 1:
        return None
    kind, val = next(iter(v.items()))
    if kind == "lasso" and isinstance(val, list) and len(val) == 2 and all(
            isinstance(a, list) and all(isinstance(t, (int, float)) for t in a) for a in val):
        return v
    if kind == "box" and isinstance(val, list) and len(val) == 4 and all(isinstance(t, (int, float)) for t in val):
        return v
    if kind == "ids" and isinstance(val, list):
        return {"ids": [str(t) for t in val]}
    return None


spec = _view_spec()
views.sync("explore", spec, extra={MAP_SEL: _map_sel})
views.saved_views_panel(rv, "explore", {**spec, MAP_SEL: _map_sel})
flt = sidebar_filters(rv, key="ex")
scores.missing_note(rv)

# ---- map ------------------------------------------------------------------------------------------
has_map = {"umap_x", "umap_y"} <= set(rv.columns)
if has_map:
    color_opts = ["label_name", "source", "decision", *scores.available(rv)]
    c1, c2 = st.columns([1, 3])
    color = c1.selectbox("Colour the map by", color_opts, key="ex_color", format_func=scores.label)
    if color in scores.SCORE_ORDER:
        with c2:
            scores.explain(color, rv)
    pts = rv.select(flt.where, flt.params, columns=["sample_id", "umap_x", "umap_y", color], order_by=None)
    pts = pts.dropna(subset=["umap_x", "umap_y"])
    if color == "decision":
        pts["decision"] = pts["decision"].fillna("undecided")
    pts, dropped = charts.downsample(pts)
    if pts.empty:
        st.info("No point matches the filters.")
    else:
        fig = charts.scatter_map(pts, color, "UMAP map — drag a lasso or a box to filter the grid",
                                 numeric=color in scores.SCORE_ORDER)
        fig.update_layout(dragmode="lasso")
        event = st.plotly_chart(fig, width="stretch", key="ex_map", on_select="rerun",
                                selection_mode=("lasso", "box"))
        selection = (event or {}).get("selection", {}) if event else {}
        points = selection.get("points", [])
        ids = [str(p["customdata"]) for p in points if p.get("customdata") is not None]
        sig = tuple(sorted(ids))
        if sig != st.session_state.get(MAP_SIG, ()):
            st.session_state[MAP_SIG] = sig
            st.session_state[MAP_IDS] = ids or None
            st.session_state[MAP_SEL] = selection_geometry(selection, ids)
        elif st.session_state.get(MAP_SEL) and st.session_state.get(MAP_IDS) is None:
            # a selection restored from the URL or a saved view: find its points on the map as drawn
            st.session_state[MAP_IDS] = ids_in_selection(st.session_state[MAP_SEL], pts) or None
        if dropped:
            st.caption(f"The map shows a random {charts.MAX_POINTS:,} of the matching points (WebGL stays fast); "
                       "a lasso selects among the points shown.")
else:
    st.info("This run has no UMAP coordinates (`umap_x`, `umap_y`): the map is not available.")

map_ids = st.session_state.get(MAP_IDS)
if map_ids:
    mc1, mc3, mc2 = st.columns([3, 1, 1])
    mc1.info(f"Grid restricted to the **{len(map_ids):,}** point(s) selected on the map.", icon=":material/target:")
    mc3.button("More like this selection", key="ex_similar", icon=":material/image_search:",
               on_click=detail.more_like, args=(list(map_ids)[:2000],), disabled=rv.run.embeddings() is None)
    if mc2.button("Clear map selection", key="ex_clear"):
        st.session_state[MAP_IDS] = None
        st.session_state[MAP_SEL] = None
        st.rerun()
flt = flt.and_ids(map_ids)

# ---- grid -----------------------------------------------------------------------------------------
n = rv.count(flt.where, flt.params)
sort_opts = [*scores.available(rv), *[c for c in scores.EXTRA_NUMERIC if c in rv.columns], "label_name",
             "source", "sample_id"]
g1, g2, g3, g4 = st.columns([2, 1, 1, 1])
sort = g1.selectbox("Sort by", sort_opts, key="ex_sort", format_func=scores.label)
desc = g2.toggle("Highest first", value=True, key="ex_desc")
per_page = g3.selectbox("Per page", [24, 48, 96], key="ex_per_page")
pages = max(1, (n + per_page - 1) // per_page)
if st.session_state.get("ex_page", 1) > pages:  # a restored page beyond the end: the last page
    st.session_state["ex_page"] = pages
page = g4.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="ex_page")
st.caption(f"**{n:,}** image(s) match" + (": " + "; ".join(flt.description) if flt.description else "."))
if n == 0:
    st.warning("No image matches these filters. Loosen a filter in the sidebar or clear the map selection.",
               icon=":material/filter_alt_off:")
else:
    rows = rv.select(flt.where, flt.params, order_by=sort, descending=desc, limit=per_page,
                     offset=(min(page, pages) - 1) * per_page)
    images.image_grid(rv, rows, ncols=8, score=sort if sort in scores.SCORE_ORDER else None)
    with st.expander("This page as a table"):
        st.dataframe(rows.drop(columns=["image_path"], errors="ignore"), hide_index=True, width="stretch")

# ---- bulk decisions and export -------------------------------------------------------------------
st.divider()
left, right = st.columns(2)
with left:
    decisions.bulk_form(rv, lambda: rv.select(flt.where, flt.params, columns=["sample_id"])["sample_id"].tolist(),
                        n, key="ex", what="images matching the filters")
with right:
    st.markdown("**Export**")
    scope = st.radio("What", ["selection", "curated"], horizontal=True, key="ex_scope",
                     format_func={"selection": f"the selection ({n:,})",
                                  "curated": "the curated dataset (all − removed, relabels applied)"}.get)
    if scope == "selection":
        export_panel(rv, "ex_export", "selection", lambda: rv.select(flt.where, flt.params), n)
    else:
        n_cur = rv.count("decision IS NULL OR decision <> 'remove'")
        export_panel(rv, "ex_curated", "curated", None, n_cur)
