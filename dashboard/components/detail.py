"""Sample detail view: any thumbnail opens its sample large in a dialog, with label, prediction, every score as
a value and a percentile (within its class and within the run), flags with their reasons, the nearest
neighbours (each opens in turn), decision buttons with keyboard shortcuts, and previous / next through the list
the thumbnail was shown in.

The open sample lives in ``st.session_state`` and in the URL (``?detail=<sample_id>``), so a reload or a shared
link re-opens it. Buttons inside the dialog use callbacks: a click reruns the dialog only (a fragment), not the
page under it; the page refreshes when the dialog is closed.

Keys (shown on the buttons): K keep · X remove · L relabel to the suggestion · T tag "review" · U undo ·
← / → previous / next.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.store.review import percentile_ranks
from dashboard.components import images, scores
from dashboard.state import RunView

DETAIL = "detail_id"
DETAIL_LIST = "detail_list"
DETAIL_MSG = "detail_msg"
QP = "detail"
GOTO_SIMILAR = "_goto_similar"
LARGE = 336
KEYS = {"keep": "K", "remove": "X", "relabel": "L", "tag": "T", "undo": "U", "prev": "Left", "next": "Right"}


#: A click on a thumbnail presses the *Details* button in the same column (static script, no user content; the
#: image's own fullscreen button keeps working). Installed once per page by ``page.start``.
CLICK_TO_OPEN = """<script>
(() => {
  const d = document;
  if (window.__infoscopeThumbClick) return;
  window.__infoscopeThumbClick = true;
  d.addEventListener("click", (e) => {
    if (e.target.closest("button")) return;
    const img = e.target.closest('[data-testid="stImage"]');
    if (!img) return;
    const col = img.closest('[data-testid="stColumn"]');
    const btn = col && col.querySelector('[class*="_open_"] button');
    if (btn) { e.preventDefault(); btn.click(); }
  }, true);
  const s = d.createElement("style");
  s.textContent = '[data-testid="stColumn"]:has([class*="_open_"]) [data-testid="stImage"] img { cursor: zoom-in; }';
  d.head.appendChild(s);
})();
</script>"""


def install_click_to_open() -> None:
    st.html(CLICK_TO_OPEN, unsafe_allow_javascript=True)


# ---- opening and closing -------------------------------------------------------------------------------
def open_detail(sample_id: str, ids: Sequence[str] | None = None) -> None:
    """Open ``sample_id``; ``ids`` is the list previous / next walk through (default: keep the current one)."""
    st.session_state[DETAIL] = str(sample_id)
    if ids is not None:
        st.session_state[DETAIL_LIST] = [str(i) for i in ids]
    st.session_state.pop(DETAIL_MSG, None)
    st.query_params[QP] = str(sample_id)


def close_detail() -> None:
    st.session_state.pop(DETAIL, None)
    st.session_state.pop(DETAIL_MSG, None)
    if QP in st.query_params:
        del st.query_params[QP]


def open_button(sample_id: str, ids: Sequence[str], key: str, label: str = "Details") -> None:
    """A small link-like button under a thumbnail that opens the sample in the detail view."""
    clicked = st.button(label, key=key, on_click=open_detail, args=(str(sample_id), tuple(str(i) for i in ids)),
                        type="tertiary", icon=":material/open_in_full:", help=f"Open {sample_id} large")
    if clicked and _fragment_rerun():  # the dialog is drawn by the page, which a fragment rerun skips
        st.rerun()


def _fragment_rerun() -> bool:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx is not None and ctx.fragment_ids_this_run)


def render_if_open(rv: RunView) -> None:
    """Called by every page: show the dialog when a sample is open (or named in the URL after a reload)."""
    if st.session_state.pop(GOTO_SIMILAR, False):
        close_detail()
        st.switch_page("pages/similar.py")
    sid = st.session_state.get(DETAIL)
    if sid is None and st.query_params.get(QP):
        sid = str(st.query_params.get(QP))
        if rv.count('"sample_id" = ?', [sid]) == 0:
            del st.query_params[QP]
            return
        st.session_state[DETAIL] = sid
    if sid is not None:
        _dialog(rv)


# ---- callbacks (run before the dialog reruns) ---------------------------------------------------------
def _step(delta: int) -> None:
    ids = st.session_state.get(DETAIL_LIST) or []
    sid = st.session_state.get(DETAIL)
    if sid in ids:
        i = min(max(ids.index(sid) + delta, 0), len(ids) - 1)
        open_detail(ids[i])


def _decide(rv: RunView, sid: str, action: str, value: str | None, advance: bool) -> None:
    try:
        batch = rv.record([sid], action, value)
    except ValueError as e:
        st.session_state[DETAIL_MSG] = f"Not recorded: {e}"
        return
    what = f"relabel to {value}" if action == "relabel" else f"tag '{value}'" if action == "tag" else action
    msg = f"Recorded **{what}** for `{sid}` (batch {batch})."
    if advance:
        _step(+1)
    st.session_state[DETAIL_MSG] = msg


def more_like(ids: Sequence[str]) -> None:
    """Search the images most similar to ``ids`` on the *More like this* page (switched to on the next run)."""
    st.session_state["sim_query"] = [str(i) for i in ids]
    st.session_state.setdefault("_view_copy_similar", {})["sim_query"] = [str(i) for i in ids]
    st.session_state[GOTO_SIMILAR] = True


def _undo(rv: RunView) -> None:
    undone = rv.undo()
    st.session_state[DETAIL_MSG] = f"Undid batch {undone}." if undone else "Nothing to undo."


# ---- the dialog ------------------------------------------------------------------------------------------
def score_table(rv: RunView, sid: str) -> pd.DataFrame:
    """Every score of the sample with its percentile in its class and in the run (mid-rank, in %)."""
    cols = [*scores.available(rv), *[c for c in scores.EXTRA_NUMERIC if c in rv.columns]]
    with rv.lock:
        t = percentile_ranks(rv.run.query, sid, cols, within="label_name")
    return pd.DataFrame({"score": [scores.label(c) for c in t["column"]], "value": t["value"],
                         "percentile in class": t["pct_within"], "percentile in run": t["pct_run"]})


def _flags(r: pd.Series) -> list[str]:
    out = []
    for kind in ("mislabeled", "adversarial"):
        flagged = bool(r.get(f"flag_{kind}")) if pd.notna(r.get(f"flag_{kind}")) else False
        susp = r.get(f"suspicion_{kind}")
        if flagged or (susp is not None and pd.notna(susp) and float(susp) >= 0.5):
            s = f" (suspicion {float(susp):.2f})" if susp is not None and pd.notna(susp) else ""
            out.append(f"**Flagged {kind}**{s}" if flagged else f"Suspicion {kind}{s}")
    reason = r.get("flag_reason")
    if isinstance(reason, str) and reason:
        out.append(f"Why: {reason}")
    return out


@st.dialog("Sample detail", width="large", on_dismiss=close_detail)
def _dialog(rv: RunView) -> None:
    sid = st.session_state.get(DETAIL)
    ids = list(st.session_state.get(DETAIL_LIST) or [sid])
    row = rv.select('"sample_id" = ?', [sid])
    if row.empty:
        st.warning(f"No sample `{sid}` in this run.")
        return
    r = row.iloc[0]
    msg = st.session_state.get(DETAIL_MSG)
    pos = ids.index(sid) if sid in ids else -1
    n1, n2, n3 = st.columns([1, 2, 1])
    n1.button("Previous", key="dt_prev", icon=":material/arrow_back:", on_click=_step, args=(-1,),
              disabled=pos <= 0, shortcut=KEYS["prev"], width="stretch")
    n2.markdown(f"**`{sid}`** · {pos + 1 if pos >= 0 else '–'} of {len(ids)} in this list")
    n3.button("Next", key="dt_next", icon=":material/arrow_forward:", on_click=_step, args=(+1,),
              disabled=pos < 0 or pos >= len(ids) - 1, shortcut=KEYS["next"], width="stretch")
    if msg:
        st.success(msg, icon=":material/check_circle:")

    left, right = st.columns([1, 1.5])
    with left:
        arr, found = images.thumbnail(rv, r.get("image_path"), LARGE)
        st.image(arr, caption=None if found else "image file missing", width="stretch")
        st.caption(f"source **{r.get('source', '?')}** · split **{r.get('split', '?')}**")
    with right:
        pred = r.get("pred_name", r.get("pred"))
        prob = r.get("pred_prob")
        line = f"**Given label** `{r['label_name']}`"
        if pred is not None and pd.notna(pred):
            line += f" · **predicted** `{pred}`" + (f" ({float(prob):.0%})" if prob is not None and pd.notna(prob)
                                                     else "")
        st.markdown(line)
        dec = r.get("decision")
        tags = r.get("tags")
        st.markdown("**Decision:** " + (f"**{dec}**" + (f" → `{r['relabel_to']}`" if dec == "relabel" else "")
                                        if isinstance(dec, str) and dec else "none yet")
                    + (f" · tags: {tags}" if isinstance(tags, str) and tags else ""))
        for f in _flags(r):
            st.markdown(f"- {f}")
        table = score_table(rv, sid)
        if table.empty:
            st.caption("This run has no scores.")
        else:
            st.dataframe(table, hide_index=True, width="stretch", key="dt_scores", column_config={
                "value": st.column_config.NumberColumn(format="%.3g"),
                "percentile in class": st.column_config.ProgressColumn(format="%.0f", min_value=0, max_value=100),
                "percentile in run": st.column_config.ProgressColumn(format="%.0f", min_value=0, max_value=100)})

    classes = list(rv.run.class_names)
    suggestion = str(pred) if pred is not None and str(pred) in classes and str(pred) != str(r["label_name"]) \
        else None
    advance = st.toggle("Go to the next image after a decision", value=True, key="dt_advance")
    b = st.columns(5)
    b[0].button("Keep", key="dt_keep", icon=":material/check:", on_click=_decide,
                args=(rv, sid, "keep", None, advance), shortcut=KEYS["keep"], width="stretch")
    b[1].button("Remove", key="dt_remove", icon=":material/delete:", on_click=_decide,
                args=(rv, sid, "remove", None, advance), shortcut=KEYS["remove"], width="stretch")
    b[2].button(f"Relabel → {suggestion}" if suggestion else "Relabel → (no suggestion)", key="dt_relabel",
                icon=":material/label:", on_click=_decide, args=(rv, sid, "relabel", suggestion, advance),
                disabled=suggestion is None, shortcut=KEYS["relabel"], width="stretch",
                help="Relabel to the model's prediction.")
    b[3].button("Tag review", key="dt_tag", icon=":material/bookmark:", on_click=_decide,
                args=(rv, sid, "tag", "review", False), shortcut=KEYS["tag"], width="stretch")
    b[4].button("Undo", key="dt_undo", icon=":material/undo:", on_click=_undo, args=(rv,),
                shortcut=KEYS["undo"], width="stretch")
    o1, o2 = st.columns([1, 2])
    target = o1.selectbox("Relabel to another class", classes, key="dt_target",
                          index=classes.index(str(r["label_name"])) if str(r["label_name"]) in classes else 0)
    o2.button(f"Relabel to {target}", key="dt_relabel_other", on_click=_decide,
              args=(rv, sid, "relabel", target, advance), disabled=target == str(r["label_name"]))

    st.button("More like this", key="dt_similar", icon=":material/image_search:", on_click=more_like, args=([sid],),
              help="The most similar images of the run (cosine similarity of the embeddings)",
              disabled=rv.run.embeddings() is None)
    if st.session_state.get(GOTO_SIMILAR):  # the click reran only this dialog: go to the results page now
        st.session_state.pop(GOTO_SIMILAR)
        close_detail()
        st.switch_page("pages/similar.py")
    nbrs = rv.run.neighbors(sid, 8)
    if nbrs:
        st.markdown("**Nearest neighbours** (feature space) — click one to open it")
        info = rv.select(f'"sample_id" IN ({", ".join("?" for _ in nbrs)})', nbrs,
                         columns=["sample_id", "label_name", "image_path"])
        by_id = {s: (lab, p) for s, lab, p in info.itertuples(index=False)}
        cols = st.columns(len(nbrs))
        for c, nb in zip(cols, nbrs, strict=True):
            lab, path = by_id.get(nb, ("?", None))
            with c:
                st.image(images.thumbnail(rv, path, 96)[0], width="stretch")
                st.button(str(lab), key=f"dt_nb_{nb}", on_click=open_detail, args=(nb,), type="tertiary",
                          help=f"Open {nb}")
    else:
        st.caption("No stored neighbours for this sample.")
    hist = rv.run.decisions.history(sid)
    if not hist.empty:
        with st.expander(f"History ({len(hist)} decision(s))"):
            st.dataframe(hist[["time", "action", "value", "author", "undone"]], hide_index=True, width="stretch")
