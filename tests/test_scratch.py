"""core.scratch: scratch folders (decoded image shards, prediction-depth probe files) go under INFOSCOPE_CACHE,
and the folders a killed run leaves behind are reclaimed by the next run on the same host."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.image_store import _CacheDir
from core.scratch import OWNER_FILE, make_scratch, sweep_stale

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def fake_folder(parent: Path, name: str, owner: dict | None) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "0.shard").write_bytes(b"\0" * 4096)
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_dead_owners_folders_are_reclaimed_and_no_other_folder_is_touched(tmp_path):
    host = socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = fake_folder(tmp_path, "infoscope-images-dead", {"host": host, "pid": dead_pid()})
        dead_depth = fake_folder(tmp_path, "infoscope-depth-dead", {"host": host, "pid": dead_pid()})
        live = fake_folder(tmp_path, "infoscope-images-live", {"host": host, "pid": sleeper.pid})
        other_host = fake_folder(tmp_path, "infoscope-images-remote", {"host": host + "-other", "pid": dead_pid()})
        no_owner = fake_folder(tmp_path, "infoscope-images-old", None)
        unrelated = fake_folder(tmp_path, "something-else", {"host": host, "pid": dead_pid()})

        cache = _CacheDir(tmp_path)  # what every image store creates

        assert not dead.exists() and not dead_depth.exists()
        assert live.exists() and other_host.exists() and no_owner.exists() and unrelated.exists()
        owner = json.loads((cache.path / OWNER_FILE).read_text())
        assert owner == {"host": host, "pid": os.getpid()} and cache.path.parent == tmp_path
        assert sweep_stale(tmp_path) == []  # our own live folder is not stale
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sweep_stale(tmp_path) == [live]  # once its owner has died


def test_probe_files_go_under_infoscope_cache_and_are_removed_when_closed(tmp_path, monkeypatch):
    import torch

    from core.scores.prediction_depth import _ProbeFiles

    monkeypatch.setenv("INFOSCOPE_CACHE", str(tmp_path / "cache"))
    files = _ProbeFiles()
    files.add("input", torch.ones(3, 5), max_dim=64)
    assert files.path.parent == tmp_path / "cache" and files.path.name.startswith("infoscope-depth-")
    np.testing.assert_array_equal(files.read("input"), np.ones((3, 5), np.float32))
    files.close()
    assert not files.path.exists()


def test_make_scratch_refuses_an_unknown_prefix(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown scratch prefix"):
        make_scratch("tmp-", tmp_path)


def test_a_killed_runs_decoded_shards_are_reclaimed_by_the_resume(tmp_path, mnist_arrays):
    """kill -9 after loading a folder source leaves its decoded shards; ``--resume`` removes them and its own."""
    x, y = mnist_arrays
    src = tmp_path / "digits"
    for i in np.concatenate([np.flatnonzero(y == c)[:12] for c in range(4)]):
        (src / str(int(y[i]))).mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, 0] * 255).astype(np.uint8)).save(src / str(int(y[i])) / f"{i}.png")
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "INFOSCOPE_CACHE": str(cache)}
    args = [sys.executable, "-m", "core.cli", "score", "--source", f"folder:{src}", "--scores", "loss",
            "--epochs", "1", "--map", "pca", "--device", "cpu", "--runs-dir", str(runs), "--name", "k"]
    killed = subprocess.run(args, env={**env, "INFOSCOPE_KILL_AFTER_STAGE": "split"}, capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [p for p in cache.iterdir() if p.name.startswith("infoscope-images-")]
    assert left and all(any(f.suffix != "" for f in p.iterdir()) for p in left)  # shards were written

    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    done = subprocess.run([sys.executable, "-m", "core.cli", "score", "--resume", str(run)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert not any(p.exists() for p in left)  # the killed attempt's folders are gone
    assert [p.name for p in cache.iterdir() if p.name.startswith("infoscope-")] == []  # and the resume's own
