"""Explore & export: filter / sort / page the image grid, lasso on the map, bulk decisions, export."""

from __future__ import annotations

import streamlit as st

from dashboard.components import charts, decisions, images, page, scores
from dashboard.components.export import export_panel
from dashboard.components.filters import sidebar_filters

MAP_IDS = "explore_map_ids"
MAP_SIG = "explore_map_sig"

rv = page.start()
st.title("Explore & export")
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
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        ids = [str(p["customdata"]) for p in points if p.get("customdata") is not None]
        sig = tuple(sorted(ids))
        if sig != st.session_state.get(MAP_SIG, ()):
            st.session_state[MAP_SIG] = sig
            st.session_state[MAP_IDS] = ids or None
        if dropped:
            st.caption(f"The map shows a random {charts.MAX_POINTS:,} of the matching points (WebGL stays fast); "
                       "a lasso selects among the points shown.")
else:
    st.info("This run has no UMAP coordinates (`umap_x`, `umap_y`): the map is not available.")

map_ids = st.session_state.get(MAP_IDS)
if map_ids:
    mc1, mc2 = st.columns([4, 1])
    mc1.info(f"Grid restricted to the **{len(map_ids):,}** point(s) selected on the map.", icon=":material/target:")
    if mc2.button("Clear map selection", key="ex_clear"):
        st.session_state[MAP_IDS] = None
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
