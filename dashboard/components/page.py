"""What every page starts with: the sidebar run picker, the open run, the undo panel, pending messages."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from core.store import list_runs
from dashboard import state
from dashboard.components import decisions, detail, images

PICKER_KEY = "run_picker"


@st.cache_data(ttl=5, show_spinner=False)
def _runs(folder: str) -> list[tuple[str, str, str, str]]:
    """(path, label, status, reason) of every run under ``folder``, newest first."""
    out = []
    for info in list_runs(folder):
        out.append((str(info.path.resolve()), short_label(info.run_id, info.name, info.n_samples), info.status,
                    info.reason))
    return out


def short_label(run_id: str, name: str = "", n_samples: int | None = None) -> str:
    """``name · 6,340 · 12-01 12:14``: short enough for the sidebar box (the full run id is shown under it);
    the date and time come from the run id (``YYYYMMDD-HHMMSS-name``) and tell same-named runs apart."""
    label = name or run_id
    if n_samples:
        label += f" · {n_samples:,}"
    m = re.match(r"^\d{4}(\d{2})(\d{2})-(\d{2})(\d{2})\d{2}", run_id)
    if m:
        label += f" · {m[1]}-{m[2]} {m[3]}:{m[4]}"
    return label


def run_picker() -> None:
    """Sidebar select box over the runs directory (plus the run given with ``--run``)."""
    folder = state.runs_dir()
    runs = _runs(str(folder))
    given = state.initial_run()
    options = [p for p, *_ in runs]
    labels = {p: lab + ("" if status == "complete" else f" — {status}") for p, lab, status, _ in runs}
    if given:
        g = str(Path(given).expanduser().resolve())
        if g not in options:
            options.insert(0, g)
            labels[g] = Path(g).name
    st.sidebar.markdown("### Run")
    if not options:
        st.sidebar.caption(f"No runs under `{folder}` yet.")
        return
    choice = st.session_state.get(state.RUN_KEY)
    if choice not in options:
        choice = str(Path(given).expanduser().resolve()) if given else next(
            (p for p, _, status, _ in runs if status == "complete"), options[0])
        st.session_state[state.RUN_KEY] = choice

    def changed() -> None:
        st.session_state[state.RUN_KEY] = st.session_state[PICKER_KEY]

    # the widget has its own key (widget state is per page); the choice lives in RUN_KEY across pages
    st.sidebar.selectbox("Open run", options, index=options.index(choice), key=PICKER_KEY, on_change=changed,
                         format_func=lambda p: labels.get(p, p), label_visibility="collapsed",
                         help=f"Runs under {folder} (name · images · month-day time)")
    st.sidebar.caption(f"Run id: {Path(choice).name}")


def start() -> state.RunView:
    """Render the common sidebar and return the open run (the page stops with a message if there is none)."""
    run_picker()
    st.session_state[images.GRID_SEQ] = 0
    rv = state.current()
    if rv is None:
        st.stop()
    decisions.undo_panel(rv)
    decisions.remember_log(rv)
    with st.sidebar:
        decisions.watch_log(rv)
    decisions.show_flash()
    detail.install_click_to_open()
    detail.render_if_open(rv)
    return rv
