"""Export a selection or the curated dataset as CSV, Parquet, or a class-per-folder copy of the images.

Every file is written inside the chosen folder and nowhere else: names are built from sanitised class names
and sample ids, every destination is resolved and checked to lie under the output folder, and an existing
non-empty export folder is refused unless ``overwrite=True``. The CSV (``path,label,source``) and the folder
export load back as ``csv:`` / ``folder:`` sources.
"""

from __future__ import annotations

import hashlib
import io
import os
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


class _UniqueNames:
    """Hands out file names that never collide, even where sanitising maps two texts onto one name.

    The first text to claim a sanitised name gets it; a later text whose name is taken gets
    ``-<8 hex of sha1(text)>`` appended, so ``x y``, ``x:y``, ``x,y`` and ``x_y`` give four different files
    (``index.csv`` says which is which). Names are compared case-insensitively (macOS and Windows file
    systems); a remaining clash gets a counter. A suffix already at the end of the text is not doubled.
    """

    def __init__(self) -> None:
        self.used: dict[str, str] = {}

    def __call__(self, text: str, suffix: str = "") -> str:
        text = str(text)
        stem = text[: -len(suffix)] if suffix and text.lower().endswith(suffix.lower()) else text
        base = _safe_name(stem)
        if (base + suffix).lower() in self.used:
            base = f"{base[:110]}-{hashlib.sha1(text.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        name, i = base + suffix, 2
        while name.lower() in self.used:
            name, i = f"{base}-{i}{suffix}", i + 1
        self.used[name.lower()] = text
        return name


def _inside(root: Path, target: Path) -> Path:
    """Resolve ``target`` and refuse it unless it lies inside ``root``."""
    root_r = root.resolve()
    t = target.resolve()
    if t != root_r and root_r not in t.parents:
        raise ExportError(f"refusing to write {target}: outside the export folder {root}")
    return t


def _prepare_out(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir).expanduser()
    if out.is_symlink() and not out.exists():
        raise ExportError(f"--out {out} is a symlink to {os.readlink(out)}, which does not exist; "
                          "choose a real folder")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {out} is not empty; choose an empty or new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out} cannot be created: {e.strerror or e}") from e
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
    located = [run.locate_image(s) for s in table["sample_id"]]
    paths = [p for p, _ in located]
    bad = [(str(s), why) for s, (p, why) in zip(table["sample_id"], located, strict=True) if p is None]
    if bad:
        outside = [b for b in bad if "outside" in b[1]]
        sid, why = (outside or bad)[0]
        what = "point outside the run's image folders" if outside else "are missing"
        raise ExportError(f"{len(outside or bad)} image file(s) {what}, e.g. {sid!r} ({why}); nothing exported")
    out = _prepare_out(out_dir, overwrite)
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
    folder_names = _UniqueNames()
    folder_names.used["index.csv"] = "index.csv"  # a class named index.csv must not shadow the index
    folders: dict[str, tuple[Path, _UniqueNames]] = {}
    for src, label, sid in zip(paths, rows["label"], table["sample_id"], strict=True):
        if label not in folders:
            folder = _inside(out, out / folder_names(label))
            folder.mkdir(exist_ok=True)
            folders[label] = (folder, _UniqueNames())
        folder, file_names = folders[label]
        dest = _inside(out, folder / file_names(sid, src.suffix.lower() or ".png"))
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
            root = path.resolve()
            for f in sorted(path.rglob("*")):
                # only regular files that really lie inside the folder (a symlink could point anywhere)
                if f.is_file() and not f.is_symlink() and root in f.resolve().parents:
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
