"""Encoded images of a ``parquet:`` / ``hf:`` source spilled to one scratch file and read back by reference.

A table source's image column is read *sequentially* (a parquet file with
``ParquetFile.iter_batches``, a Hugging Face dataset in slices), each row's encoded bytes are appended to one
file, ``blobs.bin``, in a scratch folder (:mod:`core.scratch`, prefix ``infoscope-blobs-``, under
``INFOSCOPE_CACHE`` or the system's temporary folder), and only a :class:`BlobRef` (file, offset, length) is
kept per row. So the load holds one batch of the column at a time instead of the whole column (an Arrow
table, or one Python ``bytes`` object per row), and a row sent to a DataLoader worker or a Ray task is a few
dozen bytes: the task reads its rows' bytes from the file (on a cluster the folder must be on a filesystem
every node sees, as the decoded-image shards already must be).

The folder lives as long as any row that references it (every :class:`BlobRef` holds its :class:`BlobFile`)
and is removed when the last one is garbage-collected or at exit; a run killed before that leaves it to
:func:`core.scratch.sweep_stale`. The file is scratch: written once, never renamed into place; a full disk (or
any other write error) stops the load with one :class:`~core.errors.DataError` line naming the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError
from core.scratch import ScratchDir, scratch_parent

BLOB_PREFIX = "infoscope-blobs-"
BLOB_FILE = "blobs.bin"
BATCH_ROWS = 64
"""Rows of the image column read at a time (the load's peak holds one such batch of encoded images)."""
READ_BUFFER = 1 << 20
"""Parquet read buffer: pages are read through it instead of each column chunk at once."""
WRITE_BUFFER = 1 << 20


class BlobFile(ScratchDir):
    """The scratch folder holding ``blobs.bin``; removed when the last :class:`BlobRef` to it is collected (a
    copy sent to another process, a DataLoader worker or a Ray task, only borrows it: :mod:`core.scratch`)."""

    def __init__(self, parent: str | Path | None = None) -> None:
        super().__init__(BLOB_PREFIX, parent)

    @property
    def file(self) -> Path:
        return self.path / BLOB_FILE


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Row bytes ``[offset, offset + length)`` of a :class:`BlobFile`, read by :meth:`get`."""

    blobs: BlobFile
    offset: int
    length: int

    def get(self) -> bytes:
        """The row's encoded bytes (one ``pread``)."""
        try:
            fd = os.open(self.blobs.file, os.O_RDONLY)
            try:
                data = os.pread(fd, self.length, self.offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DataError(f"{self.blobs.file}: cannot read the spilled image bytes back "
                            f"({exc.strerror or exc})") from None
        if len(data) != self.length:
            raise DataError(f"{self.blobs.file}: the spilled image bytes are truncated (a scratch file changed "
                            "while the run was loading)")
        return data


def cell_bytes(cell: object) -> bytes | None:
    """Encoded bytes from a binary cell or a ``{"bytes": …, "path": …}`` struct (Hugging Face ``Image``);
    ``None`` for a missing or empty cell."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    return bytes(cell) if isinstance(cell, bytes | bytearray | memoryview) and len(cell) else None


class BlobSpill:
    """Appends rows' encoded bytes to a new :class:`BlobFile`: :meth:`add` per row, then :meth:`close`."""

    def __init__(self, origin: str, parent: str | Path | None = None) -> None:
        self.origin = origin
        self.parent = scratch_parent(parent)
        try:
            self.blobs = BlobFile(parent)
            self._fh = open(self.blobs.file, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            if getattr(self, "blobs", None) is not None:
                self.blobs.remove()
            raise self._error(exc) from None
        self.offset = 0

    def _error(self, exc: OSError) -> DataError:
        return DataError(f"{self.parent}: cannot write the encoded images of {self.origin} to a scratch folder "
                         f"there ({exc.strerror or exc}); free some space or set INFOSCOPE_CACHE to another folder")

    def _write(self, data: bytes) -> None:
        self._fh.write(data)

    def add(self, data: bytes | None) -> BlobRef | None:
        """Append one row's bytes; returns its reference (``None`` for a missing or empty cell)."""
        if not data:
            return None
        try:
            self._write(data)
        except OSError as exc:
            self.abort()
            raise self._error(exc) from None
        ref = BlobRef(self.blobs, self.offset, len(data))
        self.offset += len(data)
        return ref

    def close(self) -> None:
        """Flush and close the file (the rows' references then read it)."""
        try:
            self._fh.close()
        except OSError as exc:
            self.abort()
            raise self._error(exc) from None

    def abort(self) -> None:
        """Close and remove the folder (after an error)."""
        try:
            self._fh.close()
        except OSError:
            pass
        self.blobs.remove()


def spill_cells(batches: Iterable[list], origin: str, parent: str | Path | None = None,
                read_error: str = "") -> list[BlobRef | None]:
    """Every cell of ``batches`` (lists of binary cells or ``{"bytes": …}`` structs, in row order) appended to a
    new blob file; one reference per row (``None`` for an empty cell). An exception raised while *reading* a
    batch becomes ``DataError(f"{read_error} ({exc})")`` when ``read_error`` is given."""
    spill = BlobSpill(origin, parent)
    refs: list[BlobRef | None] = []
    it = iter(batches)
    while True:
        try:
            cells = next(it, None)
        except Exception as exc:  # noqa: BLE001 - pyarrow / datasets raise several types for a bad file
            spill.abort()
            if not read_error:
                raise
            raise DataError(f"{read_error} ({exc})") from exc
        if cells is None:
            break
        refs.extend(spill.add(cell_bytes(c)) for c in cells)
    spill.close()
    return refs


def parquet_batches(path: str | Path, column: str, batch_rows: int | None = None) -> Iterable[list]:
    """Column ``column`` of a parquet file, ``batch_rows`` (default :data:`BATCH_ROWS`) cells at a time (pages
    read through a small buffer: no column chunk is read whole)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER)
    for batch in pf.iter_batches(batch_size=batch_rows or BATCH_ROWS, columns=[column], use_threads=False):
        yield batch.column(0).to_pylist()


def hf_batches(ds: object, column: str, batch_rows: int | None = None) -> Iterable[list]:
    """Column ``column`` of a Hugging Face dataset (its ``Image`` feature cast to ``decode=False``), in the
    dataset's row order (an indices mapping is followed), ``batch_rows`` cells at a time."""
    part = ds.select_columns([column])  # type: ignore[attr-defined]
    batch_rows = batch_rows or BATCH_ROWS
    for lo in range(0, len(part), batch_rows):  # type: ignore[arg-type]
        yield part[lo:lo + batch_rows][column]
