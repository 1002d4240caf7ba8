"""Run store: atomic writes, run status (complete / failed / killed mid-write / tampered), queries."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import RunStoreError
from core.store import RunWriter, build_filter, list_runs, open_run, read_status
from core.store.atomic import atomic_write_text


def _table(n: int, paths) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [f"s:{i}" for i in range(n)], "source": ["a", "b"] * (n // 2),
                         "split": "train", "label": np.arange(n) % 2, "label_name": np.where(np.arange(n) % 2, "y", "x"),
                         "image_path": paths, "score": np.arange(n, dtype=float)})


def _make_run(root: Path, n: int = 6, images: np.ndarray | None = None) -> Path:
    images = np.random.default_rng(0).random((n, 1, 5, 5)).astype(np.float32) if images is None else images
    with RunWriter(root, "t") as w:
        paths = w.write_images(images, np.array([""] * n, dtype=object))
        w.write_samples(_table(n, paths))
        w.write_embeddings(np.eye(n, 3))
        return w.finish({"class_names": ["x", "y"], "n_samples": n, "scores": {"score": {}}})


def test_roundtrip_table_images_embeddings(tmp_path):
    images = np.random.default_rng(0).random((6, 1, 5, 5)).astype(np.float32)
    run = open_run(_make_run(tmp_path, images=images))
    assert run.df["score"].tolist() == list(range(6))
    assert run.manifest["schema_version"] == 1 and run.manifest["status"] == "complete"
    np.testing.assert_array_equal(run.image("s:3"), np.rint(images[3, 0] * 255).astype(np.uint8))
    np.testing.assert_allclose(run.embeddings(), np.eye(6, 3))
    assert run.image("nope") is None
    assert not list(run.path.glob(".*tmp*")), "temporary files left behind"


def test_missing_image_file_gives_none(tmp_path):
    run = open_run(_make_run(tmp_path))
    (run.path / "images" / "000002.png").unlink()
    assert run.image("s:2") is None and run.image("s:1") is not None


def test_failed_run_is_marked_with_error(tmp_path):
    with pytest.raises(ZeroDivisionError), RunWriter(tmp_path, "bad") as w:
        1 / 0  # noqa: B018
    status, reason = read_status(w.path)
    assert status == "failed" and "ZeroDivisionError" in reason
    with pytest.raises(RunStoreError, match="failed"):
        open_run(w.path)
    assert [r.status for r in list_runs(tmp_path)] == ["failed"]


def test_run_killed_mid_write_is_incomplete(tmp_path):
    """A real process writing a run is SIGKILLed half-way: the run must be reported incomplete."""
    script = textwrap.dedent(f"""
        import sys, time, numpy as np, pandas as pd
        from core.store import RunWriter
        w = RunWriter({str(tmp_path)!r}, "killed")
        w.write_samples(pd.DataFrame({{"sample_id": ["a"], "source": ["s"], "split": ["train"], "label": [0],
                                       "label_name": ["x"], "image_path": [""]}}))
        print(w.path, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    path = Path(proc.stdout.readline().strip())
    assert read_status(path)[0] == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    status, reason = read_status(path)
    assert status == "incomplete" and "stopped before it finished" in reason
    with pytest.raises(RunStoreError, match="incomplete"):
        open_run(path)
    info = list_runs(tmp_path)[0]
    assert info.status == "incomplete"


def test_tampered_or_truncated_files_are_incomplete(tmp_path):
    path = _make_run(tmp_path)
    with open(path / "samples.parquet", "ab") as fh:
        fh.write(b"garbage")
    status, reason = read_status(path)
    assert status == "incomplete" and "samples.parquet" in reason
    path2 = _make_run(tmp_path / "two")
    (path2 / "manifest.json").write_text("{ not json")
    assert read_status(path2)[0] == "incomplete"


def test_atomic_write_keeps_old_file_on_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RunStoreError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_duplicate_ids_and_missing_columns_rejected(tmp_path):
    w = RunWriter(tmp_path, "x")
    t = _table(4, [""] * 4)
    with pytest.raises(RunStoreError, match="duplicate"):
        w.write_samples(pd.concat([t, t.iloc[:1]]))
    with pytest.raises(RunStoreError, match="label_name"):
        w.write_samples(t.drop(columns=["label_name"]))


def test_query_filter_sort_page(tmp_path):
    run = open_run(_make_run(tmp_path, n=10))
    where, params = build_filter(sources=["a"], ranges={"score": (2, 8)}, available=run.query.all_columns)
    page = run.query.select(where, params, order_by="score", descending=True, limit=2, offset=1)
    assert page["score"].tolist() == [6.0, 4.0]
    assert run.query.count(where, params) == 4
    with pytest.raises(ValueError):
        run.query.select(order_by="score; DROP TABLE x")
    run.decisions.record(["s:1", "s:2"], "remove")
    run.decisions.record("s:3", "tag", "blurry")
    run.refresh_decisions()
    assert run.query.select(*build_filter(decisions=["remove"]))["sample_id"].tolist() == ["s:1", "s:2"]
    assert run.query.select(*build_filter(tag="blurry"))["sample_id"].tolist() == ["s:3"]
    assert run.query.count(*build_filter(decisions=["undecided"])) == 8  # s:3 is only tagged


def test_list_runs_empty_and_sorted(tmp_path):
    assert list_runs(tmp_path / "none") == []
    a = _make_run(tmp_path)
    time.sleep(1.1)
    b = _make_run(tmp_path)
    infos = list_runs(tmp_path)
    assert [i.path for i in infos] == [b, a]
    assert infos[0].n_samples == 6 and infos[0].size_bytes > 0
    assert json.loads((a / "manifest.json").read_text())["files"]["samples.parquet"]["bytes"] > 0
