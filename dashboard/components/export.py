"""Export widgets: write a table (or the curated dataset) with ``core.export`` and offer a zip download."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from core import export as core_export
from core.errors import ExportError
from dashboard import state
from dashboard.state import RunView

FORMAT_LABELS = {"csv": "CSV (path, label, source, scores)", "parquet": "Parquet",
                 "folder": "Image folders (one per class)"}


def default_dir(rv: RunView, what: str) -> str:
    """A new folder under the run (itself under the runs folder): ``<run>/exports/<stamp>-<what>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return str(rv.path / "exports" / f"{stamp}-{what}")


def is_inside(path: str | Path, roots: list[Path]) -> bool:
    """Whether ``path`` (``~`` expanded, resolved) lies in one of ``roots``."""
    p = Path(path).expanduser().resolve()
    return any(p == r or r in p.parents for r in (Path(r).expanduser().resolve() for r in roots))


def export_panel(rv: RunView, key: str, what: str, table_fn: Callable[[], pd.DataFrame] | None,
                 n: int) -> None:
    """Format + folder + Export button; ``table_fn`` None means the curated dataset (``export_curated``)."""
    c1, c2 = st.columns([1, 2])
    fmt = c1.radio("Format", list(FORMAT_LABELS), format_func=FORMAT_LABELS.get, key=f"{key}_fmt")
    dir_key, keep_key = f"{key}_dir", f"{key}_dir_keep"
    if not st.session_state.get(dir_key):  # a default once; after that the field keeps what the user typed
        st.session_state[dir_key] = st.session_state.get(keep_key) or default_dir(rv, what)
    out_dir = c2.text_input("Export folder (must be empty or new)", key=dir_key,
                            help="Everything is written inside this folder, and only there; a folder that is not "
                                 "empty is refused (nothing is written elsewhere instead).")
    st.session_state[keep_key] = out_dir  # survives a change of page (widget state does not)
    c2.caption(f"{n:,} sample(s) will be exported.")
    roots = [state.runs_dir(), rv.path]
    confirmed = True
    if out_dir.strip() and not is_inside(out_dir, roots):  # the server can write anywhere: ask first
        c2.warning(f"`{out_dir}` is outside the runs folder `{roots[0]}`.", icon=":material/folder_off:")
        confirmed = c2.checkbox("Yes, write the export outside the runs folder", key=f"{key}_outside")
    clicked = c2.button(f"Export {what}", key=f"{key}_go", type="primary", disabled=n == 0 or not confirmed)
    if clicked and confirmed:
        try:
            with st.spinner("Exporting…"):
                if table_fn is None:
                    path = core_export.export_curated(rv.run, fmt, Path(out_dir))
                else:
                    path = core_export.export_table(rv.run, table_fn(), fmt, Path(out_dir), name=what)
            st.session_state[f"{key}_done"] = str(path)
        except ExportError as e:
            st.error(f"Export failed: {e}", icon=":material/warning:")
        except OSError as e:
            st.error(f"Export failed: could not write to {out_dir}: {e}", icon=":material/warning:")
    done = st.session_state.get(f"{key}_done")
    if done and Path(done).exists():
        st.success(f"Exported to `{done}`", icon=":material/inventory_2:")
        st.download_button("Download as zip", icon=":material/download:", data=_zip(done, Path(done).stat().st_mtime_ns),
                           file_name=f"{Path(done).stem}.zip", mime="application/zip", key=f"{key}_zip")


@st.cache_data(show_spinner=False, max_entries=4)
def _zip(path: str, mtime_ns: int) -> bytes:
    return core_export.zip_export(path)
