"""Decision widgets: bulk keep / remove / relabel / tag with a note, and undo of the last batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

from core.errors import InfoscopeError
from core.store.carry import AUTHOR_PREFIX as CARRY_PREFIX
from dashboard.state import RunView

SEEN = "_decisions_seen"
POLL_S = 10

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
    except (ValueError, InfoscopeError) as e:  # bad value, read-only run, full disk
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
    carried = live[live["author"].fillna("").str.startswith(CARRY_PREFIX)]
    if not carried.empty:
        src = str(carried["author"].iloc[0])[len(CARRY_PREFIX):]
        sb.info(f"**{int(carried['n'].sum()):,}** decision(s) carried over from the previous run `{src}` "
                "(matched by sample id).", icon=":material/history:")
        if sb.button("Undo the carry-over", key="undo_carry", icon=":material/undo:", width="stretch"):
            for b in carried["id"]:
                rv.undo(int(b))
            flash(f"Undid the carry-over ({len(carried)} batch(es)).")
            st.rerun()
    if live.empty:
        sb.caption("No decisions yet." if batches.empty else "Every decision has been undone.")
        return
    last = live.iloc[0]
    sb.caption(f"{len(live)} batch(es) in effect. Last: **{last['action']}** × {int(last['n'])} "
               f"at {str(last['time'])[11:19]} UTC")
    if sb.button("Undo last decision", icon=":material/undo:", key="undo_last", width="stretch"):
        try:
            undone = rv.undo()
        except InfoscopeError as e:
            st.error(f"Nothing undone: {e}")
            return
        flash(f"Undid batch {undone}.")
        st.rerun()


def log_signature(batches: pd.DataFrame) -> tuple[int, int]:
    """(newest batch id, number of undone batches): changes whenever anyone records or undoes a decision."""
    return (int(batches["id"].max()) if len(batches) else 0, int(batches["undone"].sum()) if len(batches) else 0)


def changes_since(batches: pd.DataFrame, seen: tuple[int, int]) -> str | None:
    """A sentence saying what changed in the log since ``seen`` (None when nothing did)."""
    if log_signature(batches) == tuple(seen):
        return None
    new = batches[batches["id"] > seen[0]]
    parts = []
    if len(new):
        last = new.sort_values("id").iloc[-1]
        who = str(last["author"]) if isinstance(last["author"], str) and last["author"] else "someone"
        parts.append(f"{len(new)} new decision batch(es), the last {last['action']} × {int(last['n'])} by {who}")
    undone = int(batches["undone"].sum()) - int(seen[1])
    if undone > 0:
        parts.append(f"{undone} batch(es) undone")
    return ("; ".join(parts) or "the decision log changed") + "."


def remember_log(rv: RunView) -> None:
    """Called on every full page run: the log as this page shows it."""
    try:
        st.session_state[SEEN] = log_signature(rv.run.decisions.batches())
    except Exception:  # an unreadable log is reported by the undo panel
        st.session_state.pop(SEEN, None)


@st.fragment(run_every=POLL_S)
def watch_log(rv: RunView) -> None:
    """Sidebar poller: when decisions were recorded elsewhere (another tab, the CLI) or in a part of this page
    that reran alone, say what changed and offer a refresh."""
    seen = st.session_state.get(SEEN)
    if seen is None:
        return
    try:
        msg = changes_since(rv.run.decisions.batches(), seen)
    except Exception:
        return
    if msg:
        st.info(f"Since this page was drawn: {msg}", icon=":material/sync:")
        if st.button("Refresh", key="log_refresh", icon=":material/refresh:", width="stretch"):
            st.rerun()
