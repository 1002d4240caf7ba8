"""parquet:/hf: sources spill their encoded images to a scratch file (core.data.blob_spill): rows carry
(offset, length) references, the load holds no image column, the folder lives as long as the rows, a full disk
is one line."""

from __future__ import annotations

import errno
import gc
import io
import json
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.data import blob_spill, load_sources
from core.data.blob_spill import BLOB_PREFIX, BlobRef
from core.data.sources import _DecodeRows, load_one, parse_spec
from core.errors import DataError
from core.scratch import OWNER_FILE, sweep_stale


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _pil(data: bytes) -> np.ndarray:
    """What decoding the bytes directly gives: float32 (C, H, W) in [0, 1]."""
    a = np.asarray(Image.open(io.BytesIO(data)))
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return a.astype(np.float32) / 255.0


def _blob_folders(parent: Path) -> list[Path]:
    return sorted(parent.glob(f"{BLOB_PREFIX}*")) if parent.is_dir() else []


def _rgb(n: int, seed: int, shape: tuple[int, int] = (6, 5)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8) for _ in range(n)]


def test_parquet_in_several_row_groups_equals_decoding_the_bytes(tmp_path, monkeypatch):
    """Bytes and HF-style structs over row groups of 3 rows, read 4 rows at a time (batches straddle the groups):
    pixels equal PIL's decode of each cell, labels/sources/ids in row order, the bad rows reported as before."""
    monkeypatch.setattr(blob_spill, "BATCH_ROWS", 4)
    monkeypatch.setenv("INFOSCOPE_CACHE", str(tmp_path / "cache"))
    pix = _rgb(11, 0)
    cells = [_png(p) for p in pix]
    cells[4] = b""  # empty cell: a bad row
    labels = ["cat", "dog"] * 5 + ["cat"]
    labels[7] = None  # missing label: a bad row
    sources = ["a", "b", "", None, "a", "b", "", "a", "b", "", "a"]
    pq.write_table(pa.table({"image": cells, "label": labels, "source": sources}), tmp_path / "b.parquet",
                   row_group_size=3)
    assert pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups == 4
    with pytest.raises(DataError, match=r"row 4: empty or missing image bytes"):
        load_sources([f"t=parquet:{tmp_path / 'b.parquet'}"])
    s = load_sources([f"t=parquet:{tmp_path / 'b.parquet'}"], skip_bad=True)
    good = [i for i in range(11) if i not in (4, 7)]
    assert [w.rsplit(", ", 1)[1] + ": " + why for w, why in s.skipped] == [
        "row 4: empty or missing image bytes", "row 7: missing label"]
    want_src = [sources[i] or "t" for i in good]
    assert list(s.source) == want_src and list(s.sample_id) == [f"{src}:{i}" for src, i in zip(want_src, good, strict=True)]
    assert [s.class_names[v] for v in s.labels] == [labels[i] for i in good]
    got = np.asarray(s.images)
    for k, i in enumerate(good):
        np.testing.assert_array_equal(got[k], _pil(cells[i]))
    structs = [{"bytes": c, "path": f"x{i}.png"} for i, c in enumerate(cells[:4])]
    pq.write_table(pa.table({"img": structs, "label": [0, 1, 0, 1]}), tmp_path / "s.parquet", row_group_size=3)
    s2 = load_sources([f"parquet:{tmp_path / 's.parquet'}"])
    np.testing.assert_array_equal(np.asarray(s2.images), np.stack([_pil(c) for c in cells[:4]]))
    assert _blob_folders(tmp_path / "cache") == []  # the rows are gone once the store is made


@pytest.mark.parametrize("mapping", ["none", "shuffle_select"])
def test_hf_saved_dataset_with_and_without_an_indices_mapping(tmp_path, monkeypatch, mapping):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(blob_spill, "BATCH_ROWS", 3)
    pix = _rgb(8, 1, (7, 7))
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pix], "label": [i % 2 for i in range(8)]},
                                    features=feats)
    if mapping != "none":
        ds = ds.shuffle(seed=3).select([6, 0, 4, 1, 7])
        assert ds._indices is not None
    ds.save_to_disk(str(tmp_path / "ds"))
    want = datasets.load_from_disk(str(tmp_path / "ds"))
    raw = load_one(parse_spec(f"h=hf:{tmp_path / 'ds'}"), tmp_path, False)
    assert all(isinstance(r.data, BlobRef) for r in raw.images.rows)
    s = load_sources([f"h=hf:{tmp_path / 'ds'}"])
    assert len(s) == len(want) and list(s.sample_id) == [f"h:{i}" for i in range(len(want))]
    np.testing.assert_array_equal(np.asarray(s.images),
                                  np.stack([np.asarray(im).transpose(2, 0, 1) / np.float32(255) for im in want["image"]]))
    assert [s.class_names[v] for v in s.labels] == [["cat", "dog"][v] for v in want["label"]]


def test_spill_folder_lives_with_the_rows_under_infoscope_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("INFOSCOPE_CACHE", str(cache))
    cells = [_png(p) for p in _rgb(5, 2)]
    pq.write_table(pa.table({"image": cells, "label": ["a", "b", "a", "b", "a"]}), tmp_path / "t.parquet")
    raw = load_one(parse_spec(f"parquet:{tmp_path / 't.parquet'}"), tmp_path, False)
    refs = [r.data for r in raw.images.rows]
    assert all(isinstance(r, BlobRef) for r in refs)
    [folder] = _blob_folders(cache)
    assert json.loads((folder / OWNER_FILE).read_text())["host"] == socket.gethostname()
    assert (folder / "blobs.bin").stat().st_size == sum(len(c) for c in cells)
    assert [r.get() for r in refs] == cells
    copy = pickle.loads(pickle.dumps(refs[2]))  # what a worker process receives: borrows, never removes
    assert copy.get() == cells[2]
    del copy
    gc.collect()
    assert folder.exists()
    del raw
    gc.collect()
    assert folder.exists()  # a reference still holds it
    del refs
    gc.collect()
    assert not folder.exists()


def test_a_dead_owners_blob_folder_is_reclaimed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = tmp_path / f"{BLOB_PREFIX}dead"
    dead.mkdir()
    (dead / "blobs.bin").write_bytes(b"\0" * 1000)
    (dead / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid}))
    live = blob_spill.BlobFile(tmp_path)
    assert not dead.exists() and live.path.exists()  # a new blob folder sweeps first
    assert sweep_stale(tmp_path) == []
    dead.mkdir()
    (dead / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid}))
    assert sweep_stale(tmp_path) == [dead]


def test_the_load_no_longer_holds_the_image_column(tmp_path, monkeypatch):
    """A single row group of ~5 MB of PNG bytes in small pages (plain-encoded: a dictionary-encoded column's
    dictionary page holds every distinct value, and any reader holds a whole page): while spilling, Arrow holds about one batch (not
    the column chunk, which the default pre-buffered reader reads whole); once loaded, nothing (the Arrow column
    used to stay alive through the rows); rows are references that pickle small."""
    monkeypatch.setenv("INFOSCOPE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(4)
    n = 1200
    cells = [_png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    column_bytes = sum(len(c) for c in cells)
    batch_bytes = blob_spill.BATCH_ROWS * max(len(c) for c in cells)
    assert column_bytes > 14_000_000
    pq.write_table(pa.table({"image": cells, "label": ["a", "b"] * (n // 2)}), tmp_path / "m.parquet",
                   use_dictionary=False, write_batch_size=16, data_page_size=1 << 16)
    gc.collect()
    base = pa.total_allocated_bytes()
    peaks: list[int] = []
    orig = blob_spill.parquet_batches

    def spy(*a, **k):
        for batch in orig(*a, **k):
            peaks.append(pa.total_allocated_bytes() - base)
            yield batch

    monkeypatch.setattr("core.data.sources.parquet_batches", spy)
    raw = load_one(parse_spec(f"parquet:{tmp_path / 'm.parquet'}"), tmp_path, False)
    assert len(peaks) == -(-n // blob_spill.BATCH_ROWS)
    bound = 2 * blob_spill.READ_BUFFER + 4 * batch_bytes  # read buffer, page, batch: about 5 MB here
    assert max(peaks) < bound < column_bytes / 2, (max(peaks), bound, column_bytes)
    assert pa.total_allocated_bytes() - base < column_bytes / 20, (pa.total_allocated_bytes() - base, column_bytes)
    rows = raw.images.rows
    assert len(rows) == n and all(isinstance(r.data, BlobRef) for r in rows)
    assert len(pickle.dumps(rows[0])) < 1000 < len(cells[0])
    ds = _DecodeRows(rows, None, (64, 64), 3, False)
    whole, part = len(pickle.dumps(ds)), len(pickle.dumps(ds.part(0, 40)))
    assert whole < column_bytes / 20 and part < whole / 5  # a remote task's chunk: proportional to its rows
    assert [ds.part(40, 80)[i][0] for i in (0, 39)] == [40, 79]
    np.testing.assert_array_equal(ds.part(40, 80)[3][1], ds[43][1])


def test_a_full_disk_while_spilling_is_one_line_naming_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("INFOSCOPE_CACHE", str(cache))
    pq.write_table(pa.table({"image": [_png(p) for p in _rgb(3, 5)], "label": ["a", "b", "a"]}),
                   tmp_path / "t.parquet")
    calls = []

    def full(self, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._fh.write(data)

    monkeypatch.setattr(blob_spill.BlobSpill, "_write", full)
    with pytest.raises(DataError) as err:
        load_sources([f"parquet:{tmp_path / 't.parquet'}"])
    msg = str(err.value)
    assert "\n" not in msg and str(cache) in msg and "No space left on device" in msg and "INFOSCOPE_CACHE" in msg
    gc.collect()
    assert _blob_folders(cache) == []  # the partial file is removed


def test_an_unreadable_image_column_is_one_line(tmp_path, monkeypatch):
    pq.write_table(pa.table({"image": [_png(p) for p in _rgb(3, 6)], "label": ["a", "b", "a"]}),
                   tmp_path / "t.parquet")

    def broken(*a, **k):
        yield [b"x"]
        raise OSError("Couldn't deserialize thrift: corrupt page")

    monkeypatch.setenv("INFOSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("core.data.sources.parquet_batches", broken)
    with pytest.raises(DataError, match=r"not a readable parquet file \(Couldn't deserialize"):
        load_sources([f"parquet:{tmp_path / 't.parquet'}"])
    gc.collect()
    assert _blob_folders(tmp_path / "cache") == []


def test_decoding_in_worker_processes_reads_the_blob_file_and_leaves_it_to_its_owner(tmp_path, monkeypatch):
    """DataLoader workers (forked) read rows by reference: same pixels as in-process decoding, and the workers'
    exit removes nothing (the folder goes when this process drops the rows)."""
    from core.data.sources import merge_sources

    cache = tmp_path / "cache"
    monkeypatch.setenv("INFOSCOPE_CACHE", str(cache))
    cells = [_png(p) for p in _rgb(40, 7, (9, 8))]
    pq.write_table(pa.table({"image": cells, "label": ["a", "b"] * 20}), tmp_path / "t.parquet", row_group_size=16)
    monkeypatch.setenv("INFOSCOPE_DECODE_WORKERS", "2")
    raw = load_one(parse_spec(f"parquet:{tmp_path / 't.parquet'}"), tmp_path, False)
    s = merge_sources([raw])
    [folder] = _blob_folders(cache)
    assert raw.images.rows[5].data.get() == cells[5]
    np.testing.assert_array_equal(np.asarray(s.images), np.stack([_pil(c) for c in cells]))
    del raw
    gc.collect()
    assert not folder.exists()
