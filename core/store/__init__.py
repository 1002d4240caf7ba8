"""The run store: the contract between the scoring engine and the dashboard (see DESIGN.md).

``open_run(path)`` -> ``Run`` (manifest, ``df``, ``query`` (DuckDB), ``image(sample_id)``, ``decisions``,
``curated()``); ``list_runs(dir)`` -> status of every run; ``RunWriter`` writes a run atomically.
"""

from core.store.decisions import ACTIONS, Decisions
from core.store.layout import default_runs_dir
from core.store.query import SampleQuery, build_filter
from core.store.run import (
    COMPLETE,
    FAILED,
    INCOMPLETE,
    RUNNING,
    Run,
    RunInfo,
    RunWriter,
    list_runs,
    open_run,
    read_status,
)

__all__ = ["ACTIONS", "COMPLETE", "FAILED", "INCOMPLETE", "RUNNING", "Decisions", "Run", "RunInfo", "RunWriter",
           "SampleQuery", "build_filter", "default_runs_dir", "list_runs", "open_run", "read_status"]
