"""``--executor ray``: the same stages on a Ray cluster started inside the test (``ray.init(num_cpus=2)``, no
outside service) give the same numbers and the same run folder as the local executor; a Ray run killed with
SIGKILL resumes like a local one; ``core`` never imports ray unless asked.

Training runs in the driver on both executors (one network trains on one device), so on one machine every
column is the same computation on the same inputs: the test asks for 1e-6 relative on every float column
(the issue's bar for deterministic stages; there is no stochastic column left to allow Spearman ≥ 0.999).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import InfoscopeError
from core.executors import LocalExecutor, check_executor, shard_bounds
from tests.conftest import TEST_SI_MAX_REPEATS, si_cap_toml

ray = pytest.importorskip("ray")  # a local convenience only: CI installs the extra (make test)

ROOT = Path(__file__).resolve().parents[1]
SCORES = "loss,margin,el2n,forgetting,confidence,uniqueness,si_function,cg_score,prediction_depth"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module; its address lets a CLI subprocess join it."""
    if ray.is_initialized():
        ray.shutdown()
    ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below travel with their tasks
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def _sq(item: int, a: np.ndarray) -> float:
    return float(a[item].sum())


def _rows(bounds: tuple[int, int], a: np.ndarray, scale: float) -> np.ndarray:
    lo, hi = bounds
    return a[lo:hi] * scale


def test_executor_map_and_map_batches_equal_the_local_loop(cluster):
    from core.executors import RayExecutor

    a = np.random.default_rng(0).normal(size=(53, 3))
    ex = RayExecutor()
    assert not ex.started  # the test's cluster is reused, not replaced
    assert ex.map(_sq, [4, 0, 52, 7], shared=(a,)) == [_sq(i, a) for i in (4, 0, 52, 7)]
    bounds = shard_bounds(53, 10)
    assert bounds[-1] == (50, 53) and len(bounds) == 6
    got = ex.map_batches(partial(_rows, scale=2.0), bounds, shared=(a,))
    np.testing.assert_array_equal(got, LocalExecutor().map_batches(partial(_rows, scale=2.0), bounds, shared=(a,)))
    np.testing.assert_array_equal(got, a * 2.0)
    assert ex.info()["name"] == "ray" and ex.info()["cluster_cpus"] == 2
    with pytest.raises(InfoscopeError, match="the Ray cluster has no GPUs"):  # GPU tasks would wait for ever
        ex.check_device("cuda")
    ex.check_device("cpu")


def test_check_executor_refuses_bad_options_in_one_line():
    with pytest.raises(InfoscopeError, match="unknown --executor 'dask'"):
        check_executor("dask", None)
    with pytest.raises(InfoscopeError, match="--ray-address needs --executor ray"):
        check_executor("local", "auto")
    with pytest.raises(InfoscopeError, match="give auto, local, HOST:PORT"):
        check_executor("ray", "http://x y")
    check_executor("ray", "10.0.0.5:6379")
    check_executor("ray", "auto")


@pytest.mark.parametrize("full", [True, False])
def test_cg_problems_on_ray_equal_local_bitwise(cluster, monkeypatch, full):
    """Per-class CG problems as Ray tasks: the Gram of all rows shared once (full), or the unit rows of an image
    store (per-problem Grams: the store travels to the workers and is read there)."""
    from core.data.image_store import ImageStore
    from core.executors import RayExecutor
    from core.scores import cg

    rng = np.random.default_rng(3)
    images = rng.random((90, 1, 6, 6)).astype(np.float32)
    labels = np.repeat(np.arange(3), 30)
    if not full:
        monkeypatch.setattr(cg, "GRAM_BUDGET_BYTES", 0)
        feats = ImageStore.from_array(images)
    else:
        feats = images
    kw = dict(repeats=2, seed=1, device="cpu", groups=np.array(["a", "b"] * 45), dataset_level=True)
    local = cg.cg_score_details(feats, labels, **kw)
    remote = cg.cg_score_details(feats, labels, executor=RayExecutor(), **kw)
    assert local.info["kernel"] == ("full" if full else "per-problem") and local.info["problems"] == 6
    np.testing.assert_array_equal(remote.scores, local.scores)
    assert remote.info["class_complexity"] == local.info["class_complexity"]


def test_knn_shards_on_ray_equal_local(cluster):
    """Query shards of 64 rows searched as Ray tasks against the serialized index: the same neighbours."""
    from core.embedding import neighbors
    from core.executors import RayExecutor
    from core.knn import knn

    x = np.random.default_rng(4).normal(size=(300, 8)).astype(np.float32)
    d0, i0 = knn(x, x, 5, exclude_self=True, device="cpu", batch=64)
    d1, i1 = knn(x, x, 5, exclude_self=True, device="cpu", batch=64, executor=RayExecutor())
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    d2, i2 = neighbors(x, 5, "cpu", executor=RayExecutor())  # one default shard
    np.testing.assert_array_equal(i2, i0)


# ---------------------------------------------------------------------------------------------- whole runs


def _config(sources: list[str], runs: Path, **kw):
    from core.pipeline import RunConfig

    return RunConfig(sources=sources, runs_dir=str(runs), name="ray", label_noise=0.1, adversarial=0.02,
                     epochs=2, scores=SCORES.split(","), map_method="pca", seed=0, device="cpu",
                     score_params={"si_function": {"max_repeats": TEST_SI_MAX_REPEATS}}, **kw)


def _cli_args(sources: list[str], runs: Path) -> list[str]:
    """The same recipe as :func:`_config`, on the command line (the SI cap through a ``--config`` file)."""
    return ["--source", sources[0], "--source", sources[1], "--label-noise", "0.1", "--adversarial", "0.02",
            "--epochs", "2", "--scores", SCORES, "--map", "pca", "--seed", "0", "--device", "cpu",
            "--runs-dir", str(runs), "--name", "ray", "--config", si_cap_toml(runs)]


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    for k in ("INFOSCOPE_KILL_AFTER_STAGE", "INFOSCOPE_KILL_BEFORE_COMMIT"):
        if k not in env:
            e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "core.cli", "score", *args], capture_output=True, text=True,
                          timeout=600, env=e, cwd=ROOT)


def assert_same_run(run: Path, reference: Path, rtol: float = 1e-6) -> None:
    """Same files, same columns; float columns within ``rtol`` relative, the rest equal; same embeddings
    and neighbours."""
    from core.store import open_run

    def listing(p: Path) -> list[str]:
        return sorted(str(f.relative_to(p)) for f in p.rglob("*") if not f.name.startswith(".")
                      and "images" not in f.parts)

    assert listing(run) == listing(reference)
    a, b = open_run(run).df, open_run(reference).df
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=rtol, atol=1e-12, err_msg=c)
        elif c != "image_path":
            pd.testing.assert_series_equal(a[c], b[c], obj=c)
    np.testing.assert_allclose(np.load(run / "embeddings.npy"), np.load(reference / "embeddings.npy"), rtol=rtol)
    np.testing.assert_array_equal(np.load(run / "neighbors.npy"), np.load(reference / "neighbors.npy"))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread in this process, as in the CLI subprocesses (OMP_NUM_THREADS=1): training on another
    thread count is another floating-point computation, and its network differs in the last bits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_run(tiny_sources, tmp_path_factory, one_thread) -> Path:
    from core.pipeline import score_run

    return score_run(_config(tiny_sources, tmp_path_factory.mktemp("local")))


def test_ray_run_equals_local_run_and_runs_every_unit_on_ray(cluster, tiny_sources, tmp_path, local_run,
                                                             monkeypatch):
    from core.executors import RayExecutor
    from core.pipeline import score_run

    seen: list[str] = []
    for meth in ("map", "map_batches"):
        orig = getattr(RayExecutor, meth)

        def spy(self, fn, items, *a, _orig=orig, **kw):
            f = fn.func if isinstance(fn, partial) else fn
            seen.append(f"{f.__module__}.{f.__name__}")
            return _orig(self, fn, items, *a, **kw)

        monkeypatch.setattr(RayExecutor, meth, spy)
    run = score_run(_config(tiny_sources, tmp_path, executor="ray"))
    assert set(seen) >= {"core.pipeline.embed_shard", "core.knn.search_shard", "core.scores.cg.solve_problem",
                         "core.scores.si_crossfit.solve_item"}, seen
    man = json.loads((run / "manifest.json").read_text())
    assert man["executor"]["name"] == "ray" and man["config"]["executor"] == "ray"
    assert json.loads((local_run / "manifest.json").read_text())["executor"] == {"name": "local"}
    assert_same_run(run, local_run)
    si, cg = man["scores"]["si_function"]["info"], man["scores"]["cg_score"]["info"]
    ref = json.loads((local_run / "manifest.json").read_text())["scores"]
    # dataset-level reductions (sums over problems, in their order): equal up to the last bits of the BLAS
    for key, value in ref["cg_score"]["info"]["class_complexity"].items():
        assert cg["class_complexity"][key] == pytest.approx(value, rel=1e-9)
    for key, value in ref["si_function"]["info"]["set_information"]["classes"].items():
        assert si["set_information"]["classes"][key] == pytest.approx(value, rel=1e-6)
    assert ray.is_initialized()  # the run did not shut down a cluster it did not start


def test_network_si_jacobian_features_on_ray_equal_local(cluster, monkeypatch):
    """``--si-method network``: the projected Jacobian features are computed in shards of rows
    (``core.ntk.jacobian_shard``) on the executor; Ray equals the local executor, and both equal one call."""
    import torch

    from core.executors import RayExecutor
    from core.models.nets import MLP
    from core.scores import unique_info

    monkeypatch.setattr(unique_info, "JACOBIAN_SHARD_ROWS", 16)  # 60 rows: 4 shards
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(60, 1, 6, 6)).astype(np.float32)
    xv = rng.uniform(size=(9, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    torch.manual_seed(0)
    net = MLP(in_features=36, hidden=(12,), n_classes=3).eval()
    kw = dict(projection_dim=64, projection="sparse", seed=5, device="cpu", t=None, lam=1e-2)
    one = unique_info.unique_information(net, x, y, xv, **kw)
    loc = unique_info.unique_information(net, x, y, xv, executor=LocalExecutor(), **kw)
    rem = unique_info.unique_information(net, x, y, xv, executor=RayExecutor(), **kw)
    # float32 Jacobians in another process (its own thread count): equal to the 1e-6 relative
    np.testing.assert_allclose(rem.si_weights, loc.si_weights, rtol=1e-6)
    np.testing.assert_allclose(rem.si_function, loc.si_function, rtol=1e-6)
    np.testing.assert_allclose(loc.si_weights, one.si_weights, rtol=1e-5)
    np.testing.assert_allclose(loc.si_function, one.si_function, rtol=1e-5)


def test_decoding_on_ray_equals_the_local_decode_row_for_row(cluster, tmp_path, monkeypatch):
    """File sources decoded by Ray tasks (chunks of rows, ``core.data.sources.decode_chunk``) give the same
    store, the same kept rows and the same skipped rows (a corrupt file, with --skip-bad) as the local
    decode."""
    from core.data import sources
    from core.data.sources import load_sources
    from core.executors import RayExecutor
    from tests.test_scale_pipeline import _photo_folder

    top = _photo_folder(tmp_path / "photos", per_class=12)
    bad = next(iter(sorted(top.rglob("*.png"))))
    bad.write_bytes(b"not a png")
    monkeypatch.setattr(sources, "DECODE_CHUNK", 7)  # several chunks, waves of 2 on the 2-CPU cluster
    calls: list[tuple[str, int]] = []
    orig = RayExecutor.map

    def spy(self, fn, items, *a, **kw):
        calls.append((fn.__name__, len(items)))
        return orig(self, fn, items, *a, **kw)

    monkeypatch.setattr(RayExecutor, "map", spy)
    local = load_sources([f"p=folder:{top}"], image_size=(32, 32), channels=3, skip_bad=True)
    assert calls == []  # the local decode does not go through the executor
    remote = load_sources([f"p=folder:{top}"], image_size=(32, 32), channels=3, skip_bad=True,
                          executor=RayExecutor())
    n_rows = len(local) + 1  # the corrupt file was a row too
    assert calls == [("decode_chunk", 2)] * (-(-n_rows // 7) // 2) + ([("decode_chunk", 1)] if -(-n_rows // 7) % 2 else [])
    np.testing.assert_array_equal(np.asarray(remote.images), np.asarray(local.images))
    assert list(remote.sample_id) == list(local.sample_id) and len(remote.skipped) == len(local.skipped) == 1
    np.testing.assert_array_equal(remote.labels, local.labels)


def test_parquet_decoding_on_ray_ships_each_task_its_chunk_only(cluster, tmp_path, monkeypatch):
    """A parquet source decoded by Ray tasks: each task receives its own chunk of rows (references into the
    source's blob file, no image bytes, no other rows) and nothing shared; the store equals the local decode
    bitwise, row for row."""
    import io
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from core.data import sources
    from core.data.sources import load_sources
    from core.executors import RayExecutor

    rng = np.random.default_rng(0)
    cells = []
    for _ in range(30):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
        cells.append(buf.getvalue())
    cells[9] = b"not a png"
    pq.write_table(pa.table({"image": cells, "label": [str(i % 3) for i in range(30)]}), tmp_path / "t.parquet",
                   row_group_size=8)
    monkeypatch.setenv("INFOSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "DECODE_CHUNK", 7)
    sent: list[tuple[int, int, int]] = []  # per task: rows, pickled bytes, shared objects
    orig = RayExecutor.map

    def spy(self, fn, items, *a, shared=(), **kw):
        sent.extend((len(it.rows), len(pickle.dumps(it)), len(shared)) for it in items)
        return orig(self, fn, items, *a, shared=shared, **kw)

    monkeypatch.setattr(RayExecutor, "map", spy)
    spec = [f"p=parquet:{tmp_path / 't.parquet'}"]
    local = load_sources(spec, image_size=(16, 16), channels=3, skip_bad=True)
    remote = load_sources(spec, image_size=(16, 16), channels=3, skip_bad=True, executor=RayExecutor())
    assert [k for k, _, _ in sent] == [7, 7, 7, 7, 1]  # 29 rows: the bad one fails its header probe and all(s == 0 for _, _, s in sent)
    assert max(b for _, b, _ in sent) < 7 * 400 < sum(len(c) for c in cells[:7])  # references, not bytes
    np.testing.assert_array_equal(np.asarray(remote.images), np.asarray(local.images))
    assert list(remote.sample_id) == list(local.sample_id) == [f"p:{i}" for i in range(30) if i != 9]
    assert remote.skipped == local.skipped and len(local.skipped) == 1
    assert not list((tmp_path / "cache").glob("infoscope-blobs-*"))


def test_frozen_backbone_pass_runs_its_shards_on_ray_and_equals_local(cluster, tmp_path, one_thread, monkeypatch):
    """The sharded pass of a frozen resnet18 (weights from a file) over every image: on Ray its shards are the
    same unit (``core.pipeline.backbone_shard``) and the run equals the local one."""
    import torch
    from torchvision.models import resnet18

    from core.executors import RayExecutor
    from core.pipeline import RunConfig, score_run
    from tests.test_scale_pipeline import _photo_folder

    top = _photo_folder(tmp_path / "photos", per_class=24)
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    monkeypatch.setenv("INFOSCOPE_SHARD_ROWS", "16")  # 49 images: 4 shards, mapped in waves of 2

    def cfg(name: str, executor: str) -> RunConfig:
        return RunConfig(sources=[f"p=folder:{top}"], model="resnet18", weights=str(tmp_path / "r18.pt"),
                         image_size=32, epochs=2, holdout=0.25, scores=["loss", "uniqueness"], map_method="pca",
                         device="cpu", seed=0, runs_dir=str(tmp_path / name), executor=executor)

    seen: list[int] = []
    orig = RayExecutor.map_batches

    def spy(self, fn, bounds, *a, **kw):
        if (fn.func if isinstance(fn, partial) else fn).__name__ == "backbone_shard":
            seen.append(len(bounds))
        return orig(self, fn, bounds, *a, **kw)

    monkeypatch.setattr(RayExecutor, "map_batches", spy)
    local = score_run(cfg("local", "local"))
    remote = score_run(cfg("ray", "ray"))
    assert seen == [2, 2]
    np.testing.assert_allclose(np.load(remote / "embeddings.npy"), np.load(local / "embeddings.npy"), rtol=1e-6)
    a, b = pd.read_parquet(remote / "samples.parquet"), pd.read_parquet(local / "samples.parquet")
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    assert (a["pred"] == b["pred"]).all()


def test_ray_run_killed_then_resumed_equals_local_and_redoes_nothing(cluster, tiny_sources, tmp_path, local_run):
    """A CLI run on the test's cluster (``--ray-address``), SIGKILLed right after the CG stage, resumed on Ray."""
    runs = tmp_path / "runs"
    killed = _cli([*_cli_args(tiny_sources, runs), "--executor", "ray", "--ray-address", cluster],
                  INFOSCOPE_KILL_AFTER_STAGE="score.cg_score")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    before = set(json.loads((run / "stages" / "ledger.json").read_text())["stages"])
    assert {"features", "score.si_function", "score.cg_score"} <= before
    done = _cli(["--resume", str(run), "--executor", "ray", "--ray-address", cluster])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[score cg_score] 100% reused" in done.stderr
    assert_same_run(run, local_run)
    man = json.loads((run / "manifest.json").read_text())
    assert man["executor"]["name"] == "ray"
    resumed = man["resumed"]
    assert all(c == {"started": 1, "committed": 1} for c in resumed["stage_counts"].values()), resumed
    assert not before & set(resumed["computed_stages"])


def test_no_ray_needed_without_executor_ray(tiny_sources, tmp_path):
    """``core`` does not import ray; with ray made unimportable, a local run works and ``--executor ray`` is one
    line (exit 2) before any run folder exists."""
    code = "import sys, core.pipeline, core.cli, core.executors; print('ray' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr
    blocked = ("import sys; sys.modules['ray'] = None; from core.cli import app; "
               "sys.argv = ['infoscope', 'score'] + sys.argv[1:]; app()")
    base = ["--source", tiny_sources[1], "--epochs", "1", "--scores", "loss,uniqueness,cg_score", "--map", "pca",
            "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    bad = subprocess.run([sys.executable, "-c", blocked, *base, "--runs-dir", str(runs), "--executor", "ray"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "pip install 'infoscope[ray]'" in lines[0], bad.stderr
    assert not runs.exists() or not any(runs.iterdir())
    ok = subprocess.run([sys.executable, "-c", blocked, *base, "--runs-dir", str(runs)], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert json.loads((run / "manifest.json").read_text())["executor"] == {"name": "local"}


def test_unreachable_ray_address_is_one_line_and_leaves_no_run(tiny_sources, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runs = tmp_path / "runs"
    res = _cli(["--source", tiny_sources[1], "--scores", "loss", "--runs-dir", str(runs), "--executor", "ray",
                "--ray-address", f"127.0.0.1:{port}"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "no Ray head answers" in lines[0], res.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_executor_is_not_part_of_the_fingerprints(tiny_sources, tmp_path):
    from dataclasses import asdict

    from core.pipeline import config_conflicts
    from core.stages import config_hash

    cfg = _config(tiny_sources, tmp_path)
    other = replace(cfg, executor="ray", ray_address="auto")
    assert config_hash(asdict(cfg)) == config_hash(asdict(other))
    assert config_conflicts(cfg, {"executor": "ray", "ray_address": "auto"}) == []


_GPU_SCRIPT = r"""
import json, os, sys
import numpy as np
import ray
from core.executors import RayExecutor

ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)

def task_gpus(item, a):
    return [item, len(ray.get_gpu_ids()), os.getpid()]

def shard_gpus(bounds, a):
    lo, hi = bounds
    return np.full(hi - lo, os.getpid() * 10 + len(ray.get_gpu_ids()), dtype=np.int64)

ex = RayExecutor()
ex.check_device("cuda")  # a cluster with GPUs takes a CUDA run
a = np.zeros(3)
out = {"gpu_tasks": ex.map(task_gpus, [0, 1, 2, 3], shared=(a,), gpu=True),
       "cpu_tasks": ex.map(task_gpus, [0, 1], shared=(a,), gpu=False),
       "actors": ex.map_batches(shard_gpus, [(0, 5), (5, 9), (9, 20), (20, 21), (21, 30)], shared=(a,),
                                gpu=True).tolist(),
       "cluster_gpus": ex.info()["cluster_gpus"]}
print(json.dumps(out))
ray.shutdown()
"""


def test_gpu_steps_get_one_gpu_per_task_and_actor(tmp_path):
    """A cluster with GPUs (2 logical GPUs declared to Ray; this machine has no CUDA device, so the steps'
    functions here only read what Ray assigned them): every ``gpu`` task holds exactly one GPU, CPU tasks none,
    and ``map_batches`` runs its shards on at most one actor per GPU, each holding one."""
    r = subprocess.run([sys.executable, "-c", _GPU_SCRIPT], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cluster_gpus"] == 2
    assert sorted(t[0] for t in out["gpu_tasks"]) == [0, 1, 2, 3]
    assert all(t[1] == 1 for t in out["gpu_tasks"])
    assert all(t[1] == 0 for t in out["cpu_tasks"])
    actors = np.asarray(out["actors"])
    assert len(actors) == 30 and set(actors % 10) == {1}  # every shard ran on an actor holding one GPU
    assert 1 <= len(set(actors // 10)) <= 2  # at most one actor per GPU
