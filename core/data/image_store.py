"""Images of a run read in batches: :class:`ImageStore`, the disk-backed stand-in for one ``(n, C, H, W)`` array.

A store is a list of *parts* (an in-memory float32 array, or a shard file on disk written once by
:class:`ShardWriter`) and a row map (for every row: its part and its row inside the part). ``take`` and
``concat`` only compose row maps, so subsets, corrupted copies and appended adversarial rows never copy pixels.

Reading: ``store[rows]`` returns a float32 ``(len(rows), C, H, W)`` array in ``[0, 1]`` (ints, slices, index
and boolean arrays, and ``(rows, ...)`` tuples as numpy does), ``len``, ``shape``, ``dtype`` and ``ndim`` behave
like the array's, so code written for an array that slices batches (``x[i:i + b]``) reads a store unchanged.
``np.asarray(store)`` still works but reads every row (``materialized`` counts it; streamed code never does).

Shards hold ``uint8`` when the rows are exactly ``k/255`` (8-bit images at the run's size: decoding gives
``float32(k) / 255``, read back bit-identical) and float32 otherwise (resized rows), so a store returns exactly
the pixels the in-memory path held. A shard file is opened (memory-mapped) for each read and closed after it,
so pages read do not stay in the process's resident memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from core.scratch import ScratchDir

SHARD_BYTES = 64 * 2**20
"""Largest shard (as float32): the rows one shard holds, and the most the writer buffers."""


class _CacheDir(ScratchDir):
    """A temporary folder for shard files, removed when the last part that uses it is garbage-collected (its
    creation reclaims the folders of killed runs first; a pickled copy only borrows it: :mod:`core.scratch`)."""

    def __init__(self, parent: str | Path | None = None) -> None:
        super().__init__("infoscope-images-", parent)



class _ArrayPart:
    """Rows held in memory (float32 ``(m, C, H, W)``)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def read(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[local], dtype=np.float32)


class _ShardPart:
    """Rows in one shard file (raw ``uint8`` or float32 ``(m, C, H, W)``), mapped only while being read."""

    def __init__(self, path: Path, dtype: np.dtype, rows: int, chw: tuple[int, int, int], cache: _CacheDir) -> None:
        self.path, self.dtype, self.rows, self.chw, self.cache = path, np.dtype(dtype), rows, chw, cache

    def __len__(self) -> int:
        return self.rows

    def read(self, local: np.ndarray) -> np.ndarray:
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.rows, *self.chw))
        try:
            raw = np.array(mm[local])  # a copy: the mapping is dropped below
        finally:
            del mm
        if self.dtype == np.uint8:
            return raw.astype(np.float32) / 255.0  # float32(k) / 255, as decoding computes it
        return raw.astype(np.float32, copy=False)


class ImageStore:
    """``(n, C, H, W)`` float32 images in ``[0, 1]``, read ``rows`` at a time (see the module docstring).

    Attributes:
        materialized: how many times every row was read at once (``np.asarray(store)``); streamed code keeps 0.
        max_rows_read: the most rows one read returned (a bound on the pixels held by a streamed step).
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, parts: Sequence[_ArrayPart | _ShardPart], part: np.ndarray, local: np.ndarray,
                 chw: tuple[int, int, int]) -> None:
        self.parts = list(parts)
        self._part = np.asarray(part, dtype=np.int32)
        self._local = np.asarray(local, dtype=np.int64)
        self.chw = tuple(int(v) for v in chw)
        self.materialized = 0
        self.max_rows_read = 0

    # ------------------------------------------------------------------------------------ building

    @classmethod
    def from_array(cls, array: np.ndarray) -> ImageStore:
        """A store over an in-memory ``(n, C, H, W)`` array (no copy when it is float32 already)."""
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4:
            raise ValueError(f"images must be (n, C, H, W), got shape {array.shape}")
        n = len(array)
        return cls([_ArrayPart(array)], np.zeros(n, np.int32), np.arange(n), array.shape[1:])

    @staticmethod
    def concat(items: Sequence[np.ndarray | ImageStore]) -> ImageStore:
        """Rows of ``items`` (arrays or stores of one image shape) one after the other, without copying pixels."""
        stores = [s if isinstance(s, ImageStore) else ImageStore.from_array(s) for s in items]
        if not stores:
            raise ValueError("nothing to concatenate")
        chw = stores[0].chw
        for s in stores[1:]:
            if s.chw != chw:
                raise ValueError(f"cannot concatenate images of shape {s.chw} to {chw}")
        parts: list = []
        ids: dict[int, int] = {}
        part_maps = []
        for s in stores:
            remap = np.empty(len(s.parts), np.int32)
            for j, p in enumerate(s.parts):
                if id(p) not in ids:
                    ids[id(p)] = len(parts)
                    parts.append(p)
                remap[j] = ids[id(p)]
            part_maps.append(remap[s._part] if len(s._part) else s._part)
        return ImageStore(parts, np.concatenate(part_maps), np.concatenate([s._local for s in stores]), chw)

    def take(self, rows: np.ndarray | Sequence[int] | slice) -> ImageStore:
        """Rows ``rows`` (index or boolean array, or slice) as a new store sharing the same parts (no pixel read)."""
        idx = self._rows(rows)
        return ImageStore(self.parts, self._part[idx], self._local[idx], self.chw)

    # ------------------------------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._part)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self.chw)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes the rows would take as one float32 array."""
        return int(len(self) * int(np.prod(self.chw)) * 4)

    def _rows(self, key: object) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return np.arange(n)[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} rows")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return np.zeros(0, np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"rows must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(idx < 0, idx + n, idx)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (int64 indices, any order, repeats allowed) as one float32 array."""
        part, local = self._part[rows], self._local[rows]
        out = np.empty((len(rows), *self.chw), dtype=np.float32)
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.parts[int(p)].read(local[sel])
        self.max_rows_read = max(self.max_rows_read, len(rows))
        return out

    def __getitem__(self, key: object) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, int | np.integer):
            out = self.read(self._rows([int(key)]))[0]
        else:
            out = self.read(self._rows(key))
            rest = (slice(None), *rest) if rest else ()
        return out[rest] if rest else out

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        self.materialized += 1
        out = self.read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        kinds = sorted({type(p).__name__.strip("_") for p in self.parts})
        return f"ImageStore(shape={self.shape}, parts={len(self.parts)} {'/'.join(kinds)})"


# ----------------------------------------------------------------------------------------- writing


def lossless_uint8(x: np.ndarray) -> np.ndarray | None:
    """``x`` (float32 in [0, 1]) as uint8 when every value is exactly ``float32(k) / 255``, else None."""
    u = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return u if np.array_equal(u.astype(np.float32) / 255.0, x) else None


class ShardWriter:
    """Appends ``(C, H, W)`` float32 rows into shard files; ``finish`` gives the :class:`ImageStore` of every row
    appended, in order.

    Each row goes to a ``uint8`` shard when it is exactly ``k/255`` (:func:`lossless_uint8`), else to a float32
    shard (rows resized by interpolation), so pixels read back are the ones appended. A shard holds at most
    :data:`SHARD_BYTES` (as float32) and is written to a temporary name and renamed: whole or absent.
    """

    def __init__(self, chw: tuple[int, int, int], cache_dir: str | Path | None = None,
                 shard_bytes: int = SHARD_BYTES) -> None:
        self.chw = tuple(int(v) for v in chw)
        self.cache = _CacheDir(cache_dir)
        self.shard_rows = max(1, int(shard_bytes) // (4 * int(np.prod(self.chw))))
        self.buffers = {np.dtype(np.uint8): [], np.dtype(np.float32): []}  # rows waiting, per shard dtype
        self.shards: dict[np.dtype, list[int]] = {np.dtype(np.uint8): [], np.dtype(np.float32): []}
        self.parts: list[_ShardPart] = []
        self.row_kind: list[bool] = []  # per row: True = uint8
        self.row_seq: list[int] = []  # per row: its index among the rows of its dtype

    def append(self, img: np.ndarray) -> None:
        if tuple(img.shape) != self.chw:
            raise ValueError(f"image of shape {img.shape}, expected {self.chw}")
        u8 = lossless_uint8(img)
        kind = np.dtype(np.uint8) if u8 is not None else np.dtype(np.float32)
        buf = self.buffers[kind]
        self.row_kind.append(u8 is not None)
        self.row_seq.append(len(self.shards[kind]) * self.shard_rows + len(buf))
        buf.append(u8 if u8 is not None else np.asarray(img, np.float32))
        if len(buf) == self.shard_rows:
            self._flush(kind)

    def _flush(self, kind: np.dtype) -> None:
        buf = self.buffers[kind]
        if not buf:
            return
        data = np.stack(buf)
        final = self.cache.path / f"shard_{len(self.parts):05d}.{'u8' if kind == np.uint8 else 'f32'}"
        tmp = final.with_name(final.name + ".tmp")
        data.tofile(tmp)
        os.replace(tmp, final)
        self.shards[kind].append(len(self.parts))
        self.parts.append(_ShardPart(final, kind, len(data), self.chw, self.cache))
        buf.clear()

    def finish(self) -> ImageStore:
        for kind in self.buffers:
            self._flush(kind)
        kinds = np.asarray(self.row_kind, dtype=bool)
        seq = np.asarray(self.row_seq, dtype=np.int64)
        part = np.zeros(len(seq), np.int32)
        for kind, is_u8 in ((np.dtype(np.uint8), True), (np.dtype(np.float32), False)):
            sel = kinds == is_u8
            if sel.any():
                part[sel] = np.asarray(self.shards[kind], np.int32)[seq[sel] // self.shard_rows]
        return ImageStore(self.parts, part, seq % self.shard_rows, self.chw)


# --------------------------------------------------------------------------- array-or-store helpers


def take_rows(images: np.ndarray | ImageStore, rows: np.ndarray) -> np.ndarray | ImageStore:
    """Rows of ``images``: a lazy view of a store (no pixels read), a plain copy of an array."""
    return images.take(rows) if isinstance(images, ImageStore) else images[rows]


def concat_images(items: Sequence[np.ndarray | ImageStore]) -> np.ndarray | ImageStore:
    """Arrays stay one array (``np.concatenate``); as soon as one item is a store the result is a store."""
    if any(isinstance(x, ImageStore) for x in items):
        return ImageStore.concat(items)
    return np.concatenate(list(items))


def iter_batches(images: np.ndarray | ImageStore, rows: np.ndarray | None = None,
                 batch_size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(row indices, float32 images)`` ``batch_size`` rows at a time, over ``rows`` (default all, in order)."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    for s in range(0, len(rows), batch_size):
        r = rows[s:s + batch_size]
        yield r, np.asarray(images[r], dtype=np.float32)
