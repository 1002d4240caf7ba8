"""Image thumbnails (cached, loaded only for what is on screen) and the image grid with a placeholder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.state import RunView

THUMB = 112


@st.cache_resource
def placeholder(size: int = THUMB) -> np.ndarray:
    """A light-grey tile with a crossed frame, shown where an image file is missing or unreadable."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (236, 238, 243))
    d = ImageDraw.Draw(im)
    d.rectangle([2, 2, size - 3, size - 3], outline=(190, 195, 205), width=2)
    d.line([10, 10, size - 11, size - 11], fill=(200, 80, 80), width=3)
    d.line([10, size - 11, size - 11, 10], fill=(200, 80, 80), width=3)
    d.text((size // 2 - 20, size // 2 + 18), "missing", fill=(110, 115, 125))
    return np.asarray(im)


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumb(file: str, mtime_ns: int, size: int) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            w, h = im.size
            scale = size / max(w, h)
            resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def thumbnail(rv: RunView, image_path: str | None, size: int = THUMB) -> tuple[np.ndarray, bool]:
    """``(pixels, found)``: the cached thumbnail of an image file, or the placeholder when it is missing."""
    if image_path:
        p = rv.run.resolve_image_path(str(image_path))
        try:
            mtime = p.stat().st_mtime_ns
        except OSError:
            mtime = -1
        if mtime >= 0:
            arr = _thumb(str(p), mtime, size)
            if arr is not None:
                return arr, True
    return placeholder(size), False


def thumbnail_by_id(rv: RunView, sample_id: str, size: int = THUMB) -> tuple[np.ndarray, bool]:
    p: Path | None = rv.run.image_file(sample_id)
    return thumbnail(rv, str(p) if p is not None else None, size)


@st.cache_data(show_spinner=False, max_entries=32)
def sorted_values(key: str, _rv: RunView, column: str) -> np.ndarray:
    """The finite values of a column, sorted (for percentiles of the values shown in captions)."""
    v = _rv.sql(f'SELECT "{column}" AS v FROM samples WHERE isfinite("{column}")')["v"].to_numpy(dtype=np.float64)
    return np.sort(v)


def percentile_in(sorted_vals: np.ndarray, x: float) -> float:
    """Mid-rank percentile of ``x`` among ``sorted_vals``: 100·(#{v < x} + ½·#{v = x}) / n."""
    if sorted_vals.size == 0 or not np.isfinite(x):
        return float("nan")
    lo = np.searchsorted(sorted_vals, x, side="left")
    hi = np.searchsorted(sorted_vals, x, side="right")
    return float(100.0 * (lo + 0.5 * (hi - lo)) / sorted_vals.size)


def default_caption(row: pd.Series, score: str | None = None, sorted_vals: np.ndarray | None = None) -> str:
    """``label · p97 · decision``: the score as its percentile in the run (raw values such as 1e-6 say little;
    the detail view shows them), or as a value when no percentile table is given."""
    text = str(row.get("label_name", ""))
    if score and score in row and pd.notna(row[score]):
        if sorted_vals is not None and sorted_vals.size:
            text += f" · p{percentile_in(sorted_vals, float(row[score])):.0f}"
        else:
            text += f" · {float(row[score]):.3g}"
    dec = row.get("decision")
    if isinstance(dec, str) and dec:
        text += f" · {dec}"
    return text


GRID_SEQ = "_grid_seq"


def _grid_key() -> str:
    """A key unique to each grid of one script run (``page.start`` resets the counter)."""
    n = st.session_state.get(GRID_SEQ, 0) + 1
    st.session_state[GRID_SEQ] = n
    return f"grid{n}"


def image_grid(rv: RunView, rows: pd.DataFrame, ncols: int = 8, score: str | None = None,
               caption: Callable[[pd.Series], str] | None = None, size: int = THUMB, key: str | None = None,
               detail: bool = True) -> int:
    """Show ``rows`` (need ``image_path``) as a grid; returns how many image files were missing.

    With ``detail`` each thumbnail has a *Details* button that opens it in the detail view, with previous /
    next walking through ``rows`` in order."""
    from dashboard.components.detail import open_button

    if rows.empty:
        st.info("No images to show.", icon=":material/image:")
        return 0
    key = key or _grid_key()
    ref = sorted_values(rv.static_key, rv, score) if score and score in rv.columns and caption is None else None
    n_missing = 0
    records = rows.reset_index(drop=True)
    ids = [str(s) for s in records["sample_id"]] if "sample_id" in records else []
    for start in range(0, len(records), ncols):
        cols = st.columns(ncols)
        for j, (_, row) in enumerate(records.iloc[start:start + ncols].iterrows()):
            arr, found = thumbnail(rv, row.get("image_path"), size)
            n_missing += not found
            cap = caption(row) if caption else default_caption(row, score, ref)
            if not found:
                cap = f"{cap} · image file missing"
            with cols[j]:
                st.image(arr, caption=cap, width="stretch", alt=str(row.get("sample_id", "")))
                if detail and ids:
                    open_button(str(row["sample_id"]), ids, key=f"{key}_open_{row['sample_id']}")
    if n_missing:
        st.caption(f"{n_missing} image file(s) could not be found; a placeholder is shown instead.")
    return n_missing
