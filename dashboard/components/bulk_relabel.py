"""Accept the model's suggested relabels in bulk: every undecided image of the current list whose predicted class
differs from its label with a predicted probability at or above a threshold. A preview (count, table, thumbnails)
comes first; the bulk is recorded as one relabel batch per target class and undone as a whole."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.components import images
from dashboard.state import RunView

NOTE = "bulk: accepted the model's suggestion"


def suggestions(rv: RunView, where: str | None, params: Sequence[Any], min_prob: float) -> pd.DataFrame:
    """Undecided rows of ``where`` with ``pred_name ≠ label_name`` and ``pred_prob ≥ min_prob``, most confident
    first (only targets that are classes of the run)."""
    cond = ('decision IS NULL AND "pred_name" IS NOT NULL AND "pred_name" <> "label_name" AND "pred_prob" >= ?')
    full = f"({where}) AND {cond}" if where else cond
    t = rv.select(full, [*params, float(min_prob)], order_by="pred_prob", descending=True,
                  columns=["sample_id", "label_name", "pred_name", "pred_prob", "image_path"])
    return t[t["pred_name"].astype(str).isin(set(rv.run.class_names))].reset_index(drop=True)


def accept(rv: RunView, table: pd.DataFrame) -> list[int]:
    """Record the relabels (one batch per target class); returns the batch ids."""
    batches = []
    for target, part in table.groupby(table["pred_name"].astype(str), sort=True):
        batches.append(rv.record(part["sample_id"].astype(str).tolist(), "relabel", target, NOTE))
    return batches


def _accept_cb(rv: RunView, where: str | None, params: Sequence[Any], min_prob: float, key: str) -> None:
    t = suggestions(rv, where, params, min_prob)
    batches = accept(rv, t) if len(t) else []
    st.session_state[f"{key}_batches"] = batches
    st.session_state[f"{key}_msg"] = f"Relabelled **{len(t):,}** image(s) to the model's suggestion " \
                                     f"({len(batches)} batch(es))."


def _undo_cb(rv: RunView, key: str) -> None:
    batches = st.session_state.pop(f"{key}_batches", [])
    for b in batches:
        rv.undo(b)
    st.session_state[f"{key}_msg"] = f"Undid the bulk relabel ({len(batches)} batch(es))."


def panel(rv: RunView, where: str | None, params: Sequence[Any], key: str) -> None:
    """The expander on the Flagged page (nothing when the run has no model predictions)."""
    if not {"pred_name", "pred_prob"} <= set(rv.columns):
        return
    with st.expander("Accept the model's suggested relabels in bulk", icon=":material/auto_fix_high:"):
        msg = st.session_state.pop(f"{key}_msg", None)
        if msg:
            st.success(msg, icon=":material/check_circle:")
        thr = st.slider("Minimum model confidence", 0.5, 1.0, 0.9, 0.01, key=f"{key}_thr",
                        help="Only images the model assigns to another class with at least this probability.")
        sug = suggestions(rv, where, params, thr)
        st.markdown(f"**{len(sug):,}** undecided image(s) in this list would be relabelled to the model's "
                    f"prediction (confidence ≥ {thr:.2f}).")
        if len(sug):
            st.dataframe(sug.rename(columns={"label_name": "given", "pred_name": "suggested",
                                             "pred_prob": "confidence"}).drop(columns=["image_path"]),
                         hide_index=True, width="stretch", height=min(36 * (len(sug) + 1), 260),
                         column_config={"confidence": st.column_config.NumberColumn(format="%.2f")})
            images.image_grid(rv, sug.head(16), ncols=8, key=f"{key}_preview", detail=False,
                              caption=lambda r: f"{r['label_name']} → {r['pred_name']} ({float(r['pred_prob']):.2f})")
        c1, c2 = st.columns(2)
        c1.button(f"Relabel {len(sug):,} image(s)", key=f"{key}_go", type="primary", disabled=len(sug) == 0,
                  on_click=_accept_cb, args=(rv, where, list(params), thr, key), icon=":material/label:")
        done = st.session_state.get(f"{key}_batches")
        c2.button("Undo this bulk relabel", key=f"{key}_undo", disabled=not done, on_click=_undo_cb, args=(rv, key),
                  icon=":material/undo:")
