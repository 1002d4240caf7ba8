"""Views that persist: a page's filters, sort, page and selection live in the URL (shareable, survive a reload),
in a per-page copy in the session (survive a change of page), and can be saved by name in the run's
``curation.sqlite`` beside the decisions (``core.store.review.SavedViews``; the run's own files are never touched).

A page calls ``sync(page, spec)`` once, before its widgets. ``spec`` maps widget keys (a trailing ``*`` matches a
prefix) to a validator ``(key, value) -> value | None`` that cleans a value read from a URL or a saved view
(``None`` drops it), so a stale or hand-edited link can never raise. Then, on every run:

- a key the session has (the user set the widget) is written to the URL as ``key=<JSON>`` and to the copy;
- a key the session lacks (a reload, a shared link, a return to the page) is restored from the URL, else from the
  copy, before the widget is drawn.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from core.store.review import SavedViews
from dashboard.state import RunView

Validator = Callable[[str, Any], Any]
COPY = "_view_copy_{page}"
FORCE = "_view_force_{page}"
RESERVED = {"detail", "cell", "health"}  # query parameters owned by other components


# ---- validators --------------------------------------------------------------------------------------
def one_of(options: Sequence[Any]) -> Validator:
    opts = list(options)
    return lambda _k, v: v if v in opts else None


def subset_of(options: Sequence[Any]) -> Validator:
    opts = set(options)
    return lambda _k, v: [x for x in v if x in opts] if isinstance(v, list) else None


def boolean(_k: str, v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def positive_int(_k: str, v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def number_in(lo: float, hi: float) -> Validator:
    def check(_k: str, v: Any) -> float | None:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(min(max(float(v), lo), hi))
        return None
    return check


def range_in(bounds: Callable[[str], tuple[float, float] | None]) -> Validator:
    """A (low, high) pair clamped into ``bounds(key)``; None when the key has no bounds."""
    def check(k: str, v: Any) -> tuple[float, float] | None:
        b = bounds(k)
        if b is None or not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)):
            return None
        lo, hi = sorted(float(min(max(x, b[0]), b[1])) for x in v)
        return (lo, hi)
    return check


# ---- encoding ------------------------------------------------------------------------------------------
def encode(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))


def decode(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _validator(spec: dict[str, Validator], key: str) -> Validator | None:
    for pattern, v in spec.items():
        if fnmatch.fnmatchcase(key, pattern):
            return v
    return None


def current(spec: dict[str, Validator]) -> dict[str, Any]:
    """The values the session holds for the keys of ``spec`` (JSON-ready)."""
    out = {}
    for k in list(st.session_state.keys()):
        if isinstance(k, str) and _validator(spec, k) is not None:
            v = st.session_state[k]
            if v is not None:
                out[k] = list(v) if isinstance(v, tuple) else v
    return out


def restore(values: dict[str, Any], spec: dict[str, Validator], overwrite: bool = False) -> None:
    """Put cleaned ``values`` into the session (only keys the session lacks unless ``overwrite``)."""
    for k, raw in values.items():
        check = _validator(spec, k)
        if check is None or (k in st.session_state and not overwrite):
            continue
        v = check(k, raw)
        if v is not None:
            st.session_state[k] = v


def sync(page: str, spec: dict[str, Validator], extra: dict[str, Validator] | None = None) -> None:
    """Restore the page's state (URL first, then the session copy), then publish it to the URL and the copy.

    ``extra`` names non-widget session keys (e.g. a map selection) handled the same way."""
    full = {**spec, **(extra or {})}
    copy_key = COPY.format(page=page)
    if st.session_state.pop(FORCE.format(page=page), False):  # a saved view was just loaded: it wins
        restore(st.session_state.get(copy_key, {}), full, overwrite=True)
    else:
        url = {k: decode(v) for k, v in st.query_params.to_dict().items() if _validator(full, k) is not None}
        restore(url, full)
        restore(st.session_state.get(copy_key, {}), full)
    state = current(full)
    st.session_state[copy_key] = state
    for k, v in state.items():
        text = encode(v)
        if st.query_params.get(k) != text:
            st.query_params[k] = text
    for k in list(st.query_params.keys()):
        if k not in state and k not in RESERVED and _validator(full, k) is not None:
            del st.query_params[k]


def publish(page: str, key: str, value: Any) -> None:
    """Write one value of the page's view to the URL and the session copy now (for state that changes in a
    callback or a fragment rerun, which ``sync`` at the top of the page does not see)."""
    st.session_state.setdefault(COPY.format(page=page), {})[key] = value
    text = encode(value)
    if st.query_params.get(key) != text:
        st.query_params[key] = text


# ---- saved views ---------------------------------------------------------------------------------------
def store(rv: RunView) -> SavedViews:
    return SavedViews(rv.path / "curation.sqlite")


def _save(rv: RunView, page: str, spec: dict[str, Validator], name_key: str) -> None:
    name = str(st.session_state.get(name_key, "")).strip()
    try:
        store(rv).save(name, page, current(spec))
        st.session_state["_view_msg"] = ("success", f"Saved the view **{name}**.")
    except ValueError as e:
        st.session_state["_view_msg"] = ("error", f"View not saved: {e}")


def _load(rv: RunView, this_page: str, spec: dict[str, Validator], pick_key: str) -> None:
    name = st.session_state.get(pick_key)
    got = store(rv).get(name) if name else None
    if got is None:
        st.session_state["_view_msg"] = ("error", f"No saved view named {name!r}.")
        return
    page, state = got
    if page != this_page:
        st.session_state["_view_msg"] = ("error", f"The view {name!r} belongs to the {page} page.")
        return
    for k in list(current(spec)):  # widgets the view does not set go back to their defaults
        if k not in state:
            del st.session_state[k]
    st.session_state[COPY.format(page=page)] = state
    st.session_state[FORCE.format(page=page)] = True
    st.session_state["_view_msg"] = ("success", f"Loaded the view **{name}**.")


def _delete(rv: RunView, pick_key: str) -> None:
    name = st.session_state.get(pick_key)
    try:
        store(rv).delete(str(name))
        st.session_state["_view_msg"] = ("success", f"Deleted the view **{name}**.")
    except ValueError as e:
        st.session_state["_view_msg"] = ("error", str(e))


def saved_views_panel(rv: RunView, page: str, spec: dict[str, Validator]) -> None:
    """Sidebar: save the current view of this page by name; load or delete a saved one."""
    sb = st.sidebar
    with sb.expander("Saved views", icon=":material/bookmarks:"):
        msg = st.session_state.pop("_view_msg", None)
        if msg:
            (st.success if msg[0] == "success" else st.error)(msg[1])
        st.text_input("Name", key=f"view_name_{page}", placeholder="e.g. noisy 4s")
        st.button("Save this view", key=f"view_save_{page}", on_click=_save, args=(rv, page, spec, f"view_name_{page}"),
                  icon=":material/bookmark_add:", width="stretch")
        try:
            saved = store(rv).list()
            saved = saved[saved["page"] == page]
        except Exception as e:  # an unreadable log must not break the page
            st.caption(f"Saved views unavailable: {e}")
            return
        if saved.empty:
            st.caption("No saved views in this run yet.")
            return
        st.selectbox("Saved", saved["name"].tolist(), key=f"view_pick_{page}")
        c1, c2 = st.columns(2)
        c1.button("Load", key=f"view_load_{page}", on_click=_load,
                  args=(rv, page, spec, f"view_pick_{page}"),
                  width="stretch")
        c2.button("Delete", key=f"view_del_{page}", on_click=_delete, args=(rv, f"view_pick_{page}"), width="stretch")
