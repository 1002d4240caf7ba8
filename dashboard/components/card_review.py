"""Keyboard review on a page of cards (the Flagged page): one card has the focus (outlined, with a badge); the
keys of the detail view act on it — K keep · X remove · L relabel to the suggestion · T tag "review" · U undo ·
← / → previous / next card.

The keys are Streamlit button shortcuts (``st.button(shortcut=...)``, the detail view's mechanism, same
``detail.KEYS``) on a row of buttons above the cards. Each card is a keyed fragment (``fl_card_<i>``); a key's
callback records the decision and asks Streamlit to rerun only the cards whose look changed (the decided card
and the one that takes the focus, ``st.rerun([keys])``), never the page. Previous / next past the end of the
page turns the page (a full run). The focused card is kept in the session and in the URL (``flag_focus``), so
a reload or a shared link returns to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from core.errors import InfoscopeError
from dashboard.components import views
from dashboard.components.decisions import flash
from dashboard.components.detail import DETAIL, KEYS
from dashboard.state import RunView

FOCUS = "flag_focus"
DECK = "_fl_deck"
MSG = "_fl_msg"
SCROLL = "_fl_scroll"
SEEK = "_fl_seek"
CARD_KEY = "fl_card_{i}"
BOX_KEY = "fl_card_box_{i}"
MARK_KEY = "fl_focus_mark"
PAGE = "flagged"

#: The focused card's bordered box is outlined (the card holds a keyed badge; ``:has`` finds its box).
STYLE = """<style>
div[class*="st-key-fl_card_box_"]:has(.st-key-fl_focus_mark) {
  outline: 3px solid #e8590c; outline-offset: 3px; background: rgba(232, 89, 12, 0.05);
}
</style>"""

#: Brings the focused card into view after a key moved the focus (static script, no user content).
SCROLL_INTO_VIEW = """<script>
(() => {
  const m = document.querySelector(".st-key-fl_focus_mark");
  const box = m && m.closest('[class*="st-key-fl_card_box_"]');
  if (box) box.scrollIntoView({block: "nearest", behavior: "instant"});
})();
</script>"""

LEGEND = (f"**Keys** act on the outlined card: **{KEYS['keep']}** keep · **{KEYS['remove']}** remove · "
          f"**{KEYS['relabel']}** relabel to the suggestion · **{KEYS['tag']}** tag *review* · "
          f"**{KEYS['undo']}** undo · **←** / **→** previous / next card (turns the page at its ends). "
          "A decision moves on to the next card and redraws only the cards it changed.")


@dataclass
class Deck:
    """The cards of the page as the last full run drew them (read by the key callbacks)."""

    ids: list[str]
    suggestions: dict[str, str | None]
    page_key: str
    page: int
    pages: int
    before: str | None = None  # the card just before this page in the review order
    after: str | None = None  # the card just after it


def text_id(_k: str, v: Any) -> str | None:
    """URL validator for a sample id (any non-empty string up to 512 characters; checked against the page)."""
    return v if isinstance(v, str) and 0 < len(v) <= 512 else None


def set_deck(ids: Sequence[str], suggestions: dict[str, str | None], page_key: str, page: int, pages: int,
             before: str | None = None, after: str | None = None) -> str | None:
    """Remember this page's cards; returns the focused id (the one in the session/URL if on the page, else the
    first card)."""
    ids = [str(i) for i in ids]
    st.session_state[DECK] = Deck(ids, dict(suggestions), page_key, page, pages, before, after)
    focus = st.session_state.get(FOCUS)
    if focus not in ids:
        focus = ids[0] if ids else None
    _set_focus(focus)
    return focus


def seek(order: Sequence[str], per_page: int, page_key: str) -> None:
    """After a key turned the page: put the page that holds the focused card into ``page_key`` (before the page
    widget is drawn). The rows may have shifted since the key was pressed (decided rows hidden)."""
    if st.session_state.pop(SEEK, False):
        focus = st.session_state.get(FOCUS)
        if focus in order:
            st.session_state[page_key] = list(order).index(focus) // per_page + 1


def focused() -> str | None:
    return st.session_state.get(FOCUS)


def _set_focus(sid: str | None) -> None:
    if sid is None:
        st.session_state.pop(FOCUS, None)
        return
    st.session_state[FOCUS] = sid
    views.publish(PAGE, FOCUS, sid)


def _deck() -> Deck | None:
    d = st.session_state.get(DECK)
    return d if isinstance(d, Deck) else None


def _rerun_cards(deck: Deck, *sids: str | None) -> None:
    """Rerun only the cards of ``sids`` (a keyed fragment rerun, from a callback)."""
    keys = sorted({CARD_KEY.format(i=deck.ids.index(s)) for s in sids if s in deck.ids})
    if keys:
        st.rerun(keys)


def _turn(deck: Deck, delta: int) -> bool:
    """Go to the card just after (before) this page, on whichever page now holds it (a full run follows);
    False at the end (start) of the list."""
    anchor = deck.after if delta > 0 else deck.before
    if anchor is None:
        return False
    st.session_state[deck.page_key] = min(max(deck.page + delta, 1), deck.pages)  # if the card has gone
    st.session_state[FOCUS] = anchor
    st.session_state[SEEK] = True
    st.session_state[SCROLL] = True
    return True


def move(delta: int) -> None:
    """Callback of ← / →: move the focus one card, turning the page at its ends."""
    deck, old = _deck(), focused()
    if deck is None or not deck.ids:
        return
    i = deck.ids.index(old) if old in deck.ids else 0
    j = i + delta
    if not 0 <= j < len(deck.ids):
        if _turn(deck, delta):
            return  # the default (full) rerun draws the new page
        j = min(max(j, 0), len(deck.ids) - 1)
    _set_focus(deck.ids[j])
    st.session_state[SCROLL] = True
    _rerun_cards(deck, old, deck.ids[j])


def record(rv: RunView, sid: str, action: str, value: str | None = None, advance: bool = False) -> None:
    """Record one decision for card ``sid`` (a mouse click or a key), focus it (or the next card when
    ``advance``), rerun the cards that changed."""
    deck, old = _deck(), focused()
    if deck is None or sid not in deck.ids:
        return
    if action == "relabel" and not value:
        st.session_state[MSG] = (sid, "warning", "No suggested label for this image: choose a class in its "
                                                 "*Relabel to* box.")
        _set_focus(sid)
        _rerun_cards(deck, old, sid)
        return
    try:
        batch = rv.record([sid], action, value)
    except (ValueError, InfoscopeError) as e:  # bad value, read-only run, full disk
        st.session_state[MSG] = (sid, "error", f"Decision not recorded: {e}")
        _rerun_cards(deck, old, sid)
        return
    what = f"relabel to {value}" if action == "relabel" else (f"tag '{value}'" if action == "tag" else action)
    st.session_state[MSG] = (sid, "success", f"Recorded **{what}** for `{sid}` (batch {batch}). "
                                             f"**{KEYS['undo']}** undoes it.")
    nxt = sid
    if advance:
        i = deck.ids.index(sid)
        if i + 1 < len(deck.ids):
            nxt = deck.ids[i + 1]
        elif _turn(deck, +1):
            return  # the decision was the page's last card: the full rerun draws the next page
    _set_focus(nxt)
    st.session_state[SCROLL] = nxt != old
    _rerun_cards(deck, old, sid, nxt)


def key_decide(rv: RunView, action: str) -> None:
    """Callback of K / X / L / T: decide on the focused card and move on (a tag stays on the card)."""
    deck, sid = _deck(), focused()
    if deck is None or sid not in deck.ids:
        return
    value = deck.suggestions.get(sid) if action == "relabel" else "review" if action == "tag" else None
    record(rv, sid, action, value, advance=action != "tag")


def key_undo(rv: RunView) -> None:
    """Callback of U: undo the latest decision batch of the run (as the detail view and the sidebar do); when it
    was made on a card of this page, that card takes the focus back and only the two cards rerun."""
    deck, old = _deck(), focused()
    try:
        undone = rv.undo()
    except InfoscopeError as e:
        st.session_state[MSG] = (old, "error", f"Nothing undone: {e}")
        return
    if deck is None:
        return
    if undone is None:
        st.session_state[MSG] = (old, "info", "Nothing to undo.")
        _rerun_cards(deck, old)
        return
    try:
        hist = rv.run.decisions.history()
        mine = [s for s in hist.loc[hist["batch"] == undone, "sample_id"].astype(str) if s in deck.ids]
    except Exception:  # the log could not be read back: a full rerun shows the state
        mine = []
    if mine:
        st.session_state[MSG] = (mine[0], "info", f"Undid batch {undone}.")
        _set_focus(mine[0])
        st.session_state[SCROLL] = mine[0] != old
        _rerun_cards(deck, old, *mine)
    # a batch of no card of this page (another page, another tab): the default full rerun shows its effect
    flash(f"Undid batch {undone}.")


HELP = {"prev": "Focus the previous card", "keep": "Keep the outlined card, then focus the next",
        "remove": "Remove the outlined card, then focus the next",
        "relabel": "Relabel the outlined card to its suggested label (the model's prediction), then focus the next",
        "tag": "Tag the outlined card 'review' (the focus stays)", "undo": "Undo the latest decision",
        "next": "Focus the next card"}


def key_bar(rv: RunView) -> None:
    """The legend and the row of key buttons (their shortcuts are the keys). While the detail view is open its
    own buttons carry the keys, so these are drawn without shortcuts (one button per key on screen)."""
    st.html(STYLE)
    st.markdown(LEGEND)
    keys = st.session_state.get(DETAIL) is None
    b = st.columns(7)
    spec: list[tuple[str, str, str, Callable[..., None], tuple]] = [
        ("Previous", "prev", ":material/arrow_back:", move, (-1,)),
        ("Keep", "keep", ":material/check:", key_decide, (rv, "keep")),
        ("Remove", "remove", ":material/delete:", key_decide, (rv, "remove")),
        ("Relabel", "relabel", ":material/label:", key_decide, (rv, "relabel")),
        ("Tag", "tag", ":material/bookmark:", key_decide, (rv, "tag")),
        ("Undo", "undo", ":material/undo:", key_undo, (rv,)),
        ("Next", "next", ":material/arrow_forward:", move, (+1,)),
    ]
    for col, (label, name, icon, fn, args) in zip(b, spec, strict=True):
        col.button(label, key=f"fl_key_{name}", icon=icon, on_click=fn, args=args, width="stretch",
                   shortcut=KEYS[name] if keys else None, help=HELP[name])


def card_fragment(body: Callable[..., None], i: int) -> Callable[..., None]:
    """``body`` as the keyed fragment of card ``i`` (so a key's callback can rerun just this card)."""
    return st.fragment(body, key=CARD_KEY.format(i=i))


def focus_badge(sid: str) -> None:
    """Inside a card: the badge that marks it focused (outlined by ``STYLE``), a pending message, and the
    scroll into view after a key moved the focus here."""
    msg = st.session_state.get(MSG)
    if msg and msg[0] == sid:
        st.session_state.pop(MSG)
        kind, text = msg[1], msg[2]
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)
    if focused() != sid:
        return
    with st.container(key=MARK_KEY):
        st.caption(":material/keyboard: **Focused** — the keys act on this card")
    if st.session_state.pop(SCROLL, False):
        st.html(SCROLL_INTO_VIEW, unsafe_allow_javascript=True)
