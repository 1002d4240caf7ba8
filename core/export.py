"""Export a selection or the curated dataset as CSV, Parquet, or a class-per-folder copy of the images.

Every file is written inside the chosen folder and nowhere else: names are built from sanitised class names
and sample ids, every destination is resolved and checked to lie under the output folder, and an existing
non-empty export folder is refused unless ``overwrite=True``. The CSV (``path,label,source``) and the folder
export load back as ``csv:`` / ``folder:`` sources.
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path
from typing import Literal

import pandas as pd

from core.errors import ExportError
from core.store.atomic import atomic_path

Format = Literal["csv", "parquet", "folder"]
FORMATS = ("csv", "parquet", "folder")
_KEEP_COLUMNS = ("sample_id", "source", "split", "label", "label_name", "original_label_name", "image_path")


def _safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (no separators, no leading dots)."""
    s = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).lstrip(".")
    return s[:120] or "_"


def _inside(root: Path, target: Path) -> Path:
    """Resolve ``target`` and refuse it unless it lies inside ``root``."""
    root_r = root.resolve()
    t = target.resolve()
    if t != root_r and root_r not in t.parents:
        raise ExportError(f"refusing to write {target}: outside the export folder {root}")
    return t


def _prepare_out(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty; choose an empty folder or pass overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_table(run, table: pd.DataFrame, fmt: Format, out_dir: str | Path, *, overwrite: bool = False,
                 name: str = "samples") -> Path:
    """Write ``table`` (rows of ``run``'s samples) as ``fmt`` into ``out_dir``; return the file or folder written.

    csv/parquet: ``<out_dir>/<name>.csv|.parquet`` with ``path`` (absolute image path), ``label`` (class name),
    ``source`` first, then the other columns. folder: ``<out_dir>/<class>/<sample>.png`` copies plus
    ``<out_dir>/index.csv`` mapping each copy to its ``sample_id``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if table is None or len(table) == 0:
        raise ExportError("nothing to export: the selection is empty")
    out = _prepare_out(out_dir, overwrite)
    paths = [run.image_file(s) for s in table["sample_id"]]
    missing = [s for s, p in zip(table["sample_id"], paths, strict=True) if p is None]
    if missing:
        raise ExportError(f"{len(missing)} image file(s) are missing, e.g. {missing[0]!r}; nothing exported")
    rows = pd.DataFrame({"path": [str(p) for p in paths], "label": table["label_name"].astype(str).values,
                         "source": table["source"].astype(str).values})
    extra = table.drop(columns=[c for c in ("image_path", "source") if c in table.columns]).reset_index(drop=True)
    rows = pd.concat([rows, extra.drop(columns=["label"], errors="ignore")], axis=1)
    if fmt == "csv":
        target = _inside(out, out / f"{_safe_name(name)}.csv")
        with atomic_path(target, ".csv") as tmp:
            rows.to_csv(tmp, index=False)
        return target
    if fmt == "parquet":
        target = _inside(out, out / f"{_safe_name(name)}.parquet")
        with atomic_path(target, ".parquet") as tmp:
            rows.to_parquet(tmp, index=False)
        return target
    index = []
    for src, label, sid in zip(paths, rows["label"], table["sample_id"], strict=True):
        folder = _inside(out, out / _safe_name(label))
        folder.mkdir(exist_ok=True)
        dest = _inside(out, folder / (_safe_name(sid) + (src.suffix.lower() or ".png")))
        with atomic_path(dest, src.suffix) as tmp:
            shutil.copyfile(src, tmp)
        index.append({"file": str(dest.relative_to(out.resolve())), "sample_id": sid, "label": label})
    with atomic_path(_inside(out, out / "index.csv"), ".csv") as tmp:
        pd.DataFrame(index).to_csv(tmp, index=False)
    return out


def export_curated(run, fmt: Format, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """All samples minus those decided ``remove``, with ``relabel`` decisions applied (``Run.curated``)."""
    return export_table(run, run.curated(), fmt, out_dir, overwrite=overwrite, name="curated")


def export_where(run, where: str, fmt: Format, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Samples matching a SQL predicate over the samples columns (plus ``decision``, ``relabel_to``, ``tags``)."""
    try:
        table = run.query.select(where)
    except Exception as e:  # duckdb raises several error types for a bad predicate
        raise ExportError(f"bad --where predicate {where!r}: {e}") from e
    return export_table(run, table, fmt, out_dir, overwrite=overwrite, name="selection")


def zip_folder(path: str | Path) -> bytes:
    """A zip archive (bytes) of a file or folder, paths relative to it (for a download button)."""
    path = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if path.is_file():
            zf.write(path, path.name)
        else:
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    zf.write(f, str(f.relative_to(path)))
    return buf.getvalue()


def zip_export(path: str | Path) -> bytes:
    """A zip of an export that works wherever it is unpacked. A CSV or Parquet export is zipped together with
    copies of its images under ``images/``, its ``path`` column rewritten relative to the zip (the CSV then loads
    back as a ``csv:`` source from the unpacked folder); a folder export (whose ``index.csv`` is already
    relative) is zipped as it is."""
    p = Path(path)
    if not (p.is_file() and p.suffix in (".csv", ".parquet")):
        return zip_folder(p)
    table = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    if "path" not in table.columns:
        return zip_folder(p)
    ids = table["sample_id"].astype(str) if "sample_id" in table.columns else pd.Series(range(len(table))).astype(str)
    buf = io.BytesIO()
    used: set[str] = set()
    rel = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for src, sid in zip(table["path"].astype(str), ids, strict=True):
            f = Path(src)
            if not f.is_file():
                raise ExportError(f"image {src} of the export is missing; nothing zipped")
            name = f"images/{_safe_name(sid)}{f.suffix.lower() or '.png'}"
            while name in used:
                name = f"images/{_safe_name(sid)}_{len(used)}{f.suffix.lower() or '.png'}"
            used.add(name)
            zf.write(f, name)
            rel.append(name)
        table = table.assign(path=rel)
        data = io.BytesIO()
        if p.suffix == ".csv":
            table.to_csv(data, index=False)
        else:
            table.to_parquet(data, index=False)
        zf.writestr(p.name, data.getvalue())
    return buf.getvalue()
