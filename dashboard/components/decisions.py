"""Decision widgets: bulk keep / remove / relabel / tag with a note, and undo of the last batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from dashboard.state import RunView

ACTION_LABELS = {"keep": "Keep", "remove": "Remove", "relabel": "Relabel to…", "tag": "Tag"}


def flash(message: str) -> None:
    """Remember a message to show after the next rerun (decisions rerun the page)."""
    st.session_state["_flash"] = message


def show_flash() -> None:
    msg = st.session_state.pop("_flash", None)
    if msg:
        st.success(msg, icon=":material/check_circle:")


def apply(rv: RunView, ids: Sequence[str], action: str, value: str | None = None, note: str | None = None) -> None:
    """Record one decision batch and rerun; errors become a message, not a traceback."""
    if not ids:
        st.warning("Nothing selected: no decision recorded.")
        return
    try:
        batch = rv.record(list(ids), action, value, note or None)
    except ValueError as e:
        st.error(f"Decision not recorded: {e}")
        return
    what = f"relabel to {value}" if action == "relabel" else (f"tag '{value}'" if action == "tag" else action)
    flash(f"Recorded **{what}** for {len(ids)} sample(s) (batch {batch}). Undo is in the sidebar.")
    rerun_fragment()


def rerun_fragment() -> None:
    """Rerun only the enclosing fragment (a decision card) when there is one, else the whole page."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.rerun(scope="fragment")
    except StreamlitAPIException:  # not inside a fragment rerun (a full run, or AppTest)
        st.rerun()


def bulk_form(rv: RunView, ids_fn: Callable[[], list[str]], n: int, key: str, what: str = "selection") -> None:
    """A form that applies one decision to every sample of the current selection (``ids_fn`` is lazy)."""
    with st.form(f"{key}_bulk", border=True):
        st.markdown(f"**Decide for the {what}** ({n:,} sample{'s' if n != 1 else ''})")
        c1, c2, c3 = st.columns([1.2, 1.2, 2])
        action = c1.selectbox("Action", list(ACTION_LABELS), format_func=ACTION_LABELS.get, key=f"{key}_action")
        target = c2.selectbox("Relabel to", list(rv.run.class_names), key=f"{key}_target",
                              help="Used when the action is Relabel.")
        tag = c2.text_input("Tag", value="review", key=f"{key}_tagname", help="Used when the action is Tag.")
        note = c3.text_input("Note (optional)", key=f"{key}_note")
        submitted = st.form_submit_button(f"Apply to {n:,} sample(s)", type="primary", disabled=n == 0,
                                          key=f"{key}_apply")
    if submitted:
        value = target if action == "relabel" else (tag.strip() if action == "tag" else None)
        if action == "tag" and not value:
            st.error("Give the tag a name.")
            return
        apply(rv, ids_fn(), action, value, note)


def undo_panel(rv: RunView) -> None:
    """Sidebar: the latest decision batches and an Undo button (reads the log, so it works across reloads)."""
    try:
        batches = rv.run.decisions.batches()
    except Exception as e:  # an unreadable curation log must not break the page
        st.sidebar.error(f"curation.sqlite unreadable: {e}")
        return
    live = batches[~batches["undone"]]
    sb = st.sidebar
    sb.markdown("### Decisions")
    if live.empty:
        sb.caption("No decisions yet." if batches.empty else "Every decision has been undone.")
        return
    last = live.iloc[0]
    sb.caption(f"{len(live)} batch(es) in effect. Last: **{last['action']}** × {int(last['n'])} "
               f"at {str(last['time'])[11:19]} UTC")
    if sb.button("Undo last decision", icon=":material/undo:", key="undo_last", width="stretch"):
        undone = rv.undo()
        flash(f"Undid batch {undone}.")
        st.rerun()
