"""Which run is open, and a thread-safe view of it shared by every browser session.

The run comes from (first match): the sidebar picker (``st.session_state["run_path"]``), ``--run PATH`` passed
after ``--`` to ``streamlit run``, or ``$INFOSCOPE_RUN``. The runs directory comes from ``--runs-dir``,
``$INFOSCOPE_RUNS`` or ``./runs``. An opened run is cached with ``st.cache_resource`` keyed by its path and
its manifest's mtime; its DuckDB connection is shared, so every query goes through ``RunView`` under a lock.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.errors import RunStoreError
from core.store import Run, default_runs_dir, open_run, read_status

RUN_KEY = "run_path"


@dataclass
class Args:
    """What was passed to the app after ``--``."""

    run: str | None
    runs_dir: str | None


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """Parse ``--run`` and ``--runs-dir`` and ignore anything else (AppTest runs under pytest's argv)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--run", default=None)
    p.add_argument("--runs-dir", default=None)
    ns, _ = p.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return Args(run=ns.run, runs_dir=ns.runs_dir)


def runs_dir() -> Path:
    """The folder the run picker lists."""
    a = parse_args()
    if a.runs_dir:
        return Path(a.runs_dir).expanduser()
    return default_runs_dir()


def initial_run() -> str | None:
    """The run given on the command line or in ``$INFOSCOPE_RUN`` (None: let the picker choose)."""
    a = parse_args()
    return a.run or os.environ.get("INFOSCOPE_RUN") or None


def selected_run_path() -> str | None:
    return st.session_state.get(RUN_KEY) or initial_run()


def _curation_signature(path: Path) -> tuple[int, ...]:
    sig: list[int] = []
    for name in ("curation.sqlite", "curation.sqlite-wal"):
        try:
            s = (path / name).stat()
            sig += [s.st_mtime_ns, s.st_size]
        except OSError:
            sig += [0, 0]
    return tuple(sig)


@dataclass
class RunView:
    """A ``Run`` plus a lock: DuckDB connections must not be used by two threads (sessions) at once."""

    run: Run
    lock: threading.RLock = field(default_factory=threading.RLock)
    decision_sig: tuple[int, ...] = ()
    version: int = 0

    # ---- identity --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def key(self) -> str:
        """Cache key for derived data: path + version of the decisions seen."""
        return f"{self.run.path}|{self.version}"

    @property
    def static_key(self) -> str:
        """Cache key for data that does not depend on decisions."""
        return str(self.run.path)

    @property
    def columns(self) -> list[str]:
        return self.run.query.columns

    # ---- queries ---------------------------------------------------------------------------------
    def select(self, where: str | None = None, params: Sequence[Any] | None = None, **kw: Any) -> pd.DataFrame:
        with self.lock:
            return self.run.query.select(where, params, **kw)

    def count(self, where: str | None = None, params: Sequence[Any] | None = None) -> int:
        with self.lock:
            return self.run.query.count(where, params)

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self.lock:
            return self.run.query.sql(query, params)

    # ---- decisions -------------------------------------------------------------------------------
    def sync(self, force: bool = False) -> None:
        """Re-read the curation log if another tab or the CLI wrote to it since we last looked."""
        sig = _curation_signature(self.run.path)
        if force or sig != self.decision_sig:
            with self.lock:
                self.run.refresh_decisions()
                self.decision_sig = sig
                self.version += 1

    def record(self, ids: str | Sequence[str], action: str, value: str | None = None,
               note: str | None = None) -> int:
        batch = self.run.decisions.record(ids, action, value, note, author="dashboard")
        self.sync(force=True)
        return batch

    def undo(self, batch: int | None = None) -> int | None:
        undone = self.run.decisions.undo(batch)
        self.sync(force=True)
        return undone


@st.cache_resource(max_entries=8, show_spinner="Opening the run…")
def _open(path: str, manifest_mtime: float) -> RunView:
    rv = RunView(open_run(path))
    rv.sync(force=True)
    return rv


def open_view(path: str | Path) -> RunView:
    """Open (or reuse) the run at ``path``; raises ``RunStoreError`` with a reason for a run not complete."""
    p = Path(path).expanduser().resolve()
    status, reason = read_status(p) if p.is_dir() else ("missing", f"no run directory at {p}")
    if status != "complete":
        raise RunStoreError(f"The run **{p.name}** cannot be opened: it is *{status}* — {reason}.")
    mtime = (p / "manifest.json").stat().st_mtime
    rv = _open(str(p), mtime)
    rv.sync()
    return rv


def current() -> RunView | None:
    """The open run for this script run, or None after showing why there is none (never raises)."""
    path = selected_run_path()
    if not path:
        st.info(f"No run is open. Score a dataset with `infoscope score …` (runs are written under "
                f"`{runs_dir()}`), then pick it in the sidebar.", icon=":material/travel_explore:")
        return None
    try:
        return open_view(path)
    except RunStoreError as e:
        st.error(str(e), icon=":material/warning:")
        st.caption("Pick another run in the sidebar, or re-run `infoscope score` to finish this one.")
        return None
    except Exception as e:  # a corrupt parquet or manifest must not show a traceback
        st.error(f"The run at `{path}` could not be read: {type(e).__name__}: {e}", icon=":material/warning:")
        return None


def require() -> RunView:
    """The open run, or stop the page (after a clear message) when there is none."""
    rv = current()
    if rv is None:
        st.stop()
    return rv
