"""Confusion: the given label against the model's prediction and against the majority label of each image's
nearest neighbours; any cell opens its images in a grid (decide on them there)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.store import build_filter
from core.store.review import confusion_matrix, confusion_table
from dashboard import state
from dashboard.components import charts, decisions, images, page, scores

CELL = "cm_cell"
QP = "cell"
AGAINST = {"predicted": "the model's prediction", "neighbours": "the neighbour majority"}

rv = page.start()
st.title("Confusion")
st.caption("Rows: the label the dataset gives. Columns: what the model predicts, or the label most of the image's "
           "nearest neighbours (feature space) carry. Off-diagonal cells are where the label is doubtful; click a "
           "cell (or one of the largest confusions) to see its images.")


@st.cache_data(show_spinner="Computing the confusion matrices…", max_entries=4)
def table(key: str, _rv: state.RunView) -> pd.DataFrame:
    return confusion_table(_rv.run)


t = table(rv.static_key, rv)
classes = list(rv.run.class_names)
kinds = [k for k in AGAINST if t[k].notna().any()]
if not kinds:
    st.info("This run has neither model predictions (`pred`) nor stored neighbours (`neighbors.npy`), so there is "
            "nothing to compare the labels with.", icon=":material/info:")
    st.stop()


def set_cell(kind: str, given: str, other: str) -> None:
    st.session_state[CELL] = (kind, given, other)
    st.query_params[QP] = f"{kind}|{given}|{other}"


def clear_cell() -> None:
    st.session_state.pop(CELL, None)
    if QP in st.query_params:
        del st.query_params[QP]


if CELL not in st.session_state and st.query_params.get(QP):
    parts = str(st.query_params.get(QP)).split("|")
    if len(parts) == 3 and parts[0] in kinds and parts[1] in classes and parts[2] in classes:
        st.session_state[CELL] = tuple(parts)

kind = st.radio("Compare the given label with", kinds, format_func=AGAINST.get, horizontal=True, key="cm_kind")
mat = confusion_matrix(t, kind, classes)
total = int(mat.values.sum())
agree = int(np.trace(mat.values))
st.markdown(f"The given label agrees with {AGAINST[kind]} for **{agree:,}** of {total:,} images "
            f"(**{agree / max(total, 1):.1%}**); **{total - agree:,}** disagree.")

left, right = st.columns([1.3, 1])
with left:
    z = mat.values.astype(float)
    fig = go.Figure(go.Heatmap(z=np.log1p(z), x=[str(c) for c in classes], y=[str(c) for c in classes],
                               text=mat.values, texttemplate="%{text}", colorscale="Blues", showscale=False,
                               hovertemplate="given %{y} · " + kind + " %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    st.plotly_chart(charts.style(fig, f"Given label (rows) vs. {AGAINST[kind]} (columns)", kind, "given label",
                                 height=140 + 34 * len(classes)), width="stretch", key=f"cm_fig_{kind}")
with right:
    st.markdown("**Largest confusions**")
    pairs = [(int(mat.iloc[i, j]), classes[i], classes[j]) for i in range(len(classes)) for j in range(len(classes))
             if i != j and mat.iloc[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    if not pairs:
        st.caption("None: every image agrees.")
    for n, g, o in pairs[:10]:
        st.button(f"given {g} → {kind} {o}: {n}", key=f"cm_btn_{kind}_{g}_{o}", on_click=set_cell,
                  args=(kind, g, o), width="stretch")

st.markdown(f"**The matrix as a table** — click a cell to open its images (rows: given label, columns: "
            f"{AGAINST[kind]})")
grid_df = mat.copy()
grid_df.index = [f"given {c}" for c in classes]
event = st.dataframe(grid_df, width="stretch", key=f"cm_table_{kind}", on_select="rerun",
                     selection_mode="single-cell",
                     column_config={str(c): st.column_config.NumberColumn(str(c), width="small") for c in classes})
cells = (event or {}).get("selection", {}).get("cells", []) if event else []
if cells:
    ri, col = cells[0][0], str(cells[0][1])
    if 0 <= int(ri) < len(classes) and col in mat.columns.astype(str):
        choice = (kind, classes[int(ri)], col)
        if st.session_state.get(f"cm_last_{kind}") != choice:
            st.session_state[f"cm_last_{kind}"] = choice
            set_cell(*choice)

cell = st.session_state.get(CELL)
if cell:
    ckind, given, other = cell
    ids = t.loc[(t["given"] == given) & (t[ckind] == other), "sample_id"].tolist()
    st.divider()
    h1, h2 = st.columns([4, 1])
    h1.subheader(f"Given {given}, {AGAINST[ckind].replace('the ', '')} {other}: {len(ids):,} image(s)")
    h2.button("Close", key="cm_close", on_click=clear_cell, icon=":material/close:")
    if ids:
        order = next((s for s in ("suspicion_mislabeled", "loss") if s in rv.columns), None)
        per_page = 24
        n_pages = max(1, (len(ids) + per_page - 1) // per_page)
        pg = st.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key="cm_page") if n_pages > 1 else 1
        rows = rv.select(*build_filter(ids=ids), order_by=order, descending=True, limit=per_page,
                         offset=(pg - 1) * per_page)
        images.image_grid(rv, rows, ncols=8, score=order if order in scores.SCORE_ORDER else None, key="cm_grid")
        decisions.bulk_form(rv, lambda: ids, len(ids), key="cm", what="images of this cell")
