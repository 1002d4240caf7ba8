"""Resumable runs (``infoscope score --resume``): a run killed with SIGKILL at a stage boundary or inside a
stage finishes with the same scores as an uninterrupted run, without redoing what was finished.

The kills come from the documented test hooks of ``core.stages`` (``INFOSCOPE_KILL_AFTER_STAGE``,
``INFOSCOPE_KILL_BEFORE_COMMIT``), which SIGKILL the CLI process exactly as ``kill -9`` would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import RunStoreError
from core.stages import LEDGER, STAGES, StageLedger, StageOutput, StageRunner
from core.store import open_run
from core.store.run import read_status
from tests.conftest import si_cap_toml

ROOT = Path(__file__).resolve().parents[1]
SCORES = "loss,el2n,uniqueness,si_function,cg_score,prediction_depth"


def recipe(sources: list[str], runs: Path) -> list[str]:
    """Every kind of stage: label noise, adversarial copies (a stage), SI with two cross-fitting networks
    (sub-stages), a retrained-free depth, CG, the map and the flags. SI is capped at ``TEST_SI_MAX_REPEATS`` cross-fittings through a
    ``--config`` file (speed: the default allows up to 48 on data this small)."""
    return ["--source", sources[0], "--source", sources[1], "--label-noise", "0.1", "--adversarial", "0.02",
            "--epochs", "2", "--scores", SCORES, "--map", "pca", "--seed", "0", "--device", "cpu",
            "--runs-dir", str(runs), "--name", "resume", "--config", si_cap_toml(runs)]


def cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    for k in ("INFOSCOPE_KILL_AFTER_STAGE", "INFOSCOPE_KILL_BEFORE_COMMIT", "INFOSCOPE_KILL_AFTER_SHARD",
              "INFOSCOPE_SHARD_ROWS"):
        if k not in env:
            e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "core.cli", "score", *args], capture_output=True, text=True,
                          timeout=600, env=e, cwd=ROOT)


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def ledger_of(run: Path) -> dict:
    return json.loads((run / STAGES / LEDGER).read_text())


def file_stamps(run: Path, stages: list[str]) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file the given stages committed: unchanged means not written again."""
    out = {}
    for name in stages:
        for f in (run / STAGES / name).iterdir():
            st = f.stat()
            out[f"{name}/{f.name}"] = (st.st_ino, st.st_mtime_ns)
    return out


def one_error_line(res: subprocess.CompletedProcess, words: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("[")]  # not progress
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def assert_same_scores(run: Path, reference: Path) -> None:
    """Every column of samples.parquet: floats within 1e-6 (they are bitwise equal on CPU with one thread),
    everything else equal; the embeddings and the neighbour lists too."""
    a, b = open_run(run).df, open_run(reference).df
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=0, atol=1e-6, err_msg=c)
        elif c != "image_path":
            pd.testing.assert_series_equal(a[c], b[c], obj=c)
    np.testing.assert_array_equal(np.load(run / "embeddings.npy"), np.load(reference / "embeddings.npy"))
    np.testing.assert_array_equal(np.load(run / "neighbors.npy"), np.load(reference / "neighbors.npy"))


@pytest.fixture(scope="module")
def reference(tiny_sources, tmp_path_factory) -> Path:
    """The same recipe, uninterrupted."""
    runs = tmp_path_factory.mktemp("reference")
    res = cli(recipe(tiny_sources, runs))
    assert res.returncode == 0, res.stderr
    return only_run(runs)


def test_uninterrupted_run_leaves_no_stages_and_records_no_resume(reference):
    assert read_status(reference)[0] == "complete"
    assert not (reference / STAGES).exists()
    assert "resumed" not in json.loads((reference / "manifest.json").read_text())


def test_killed_twice_then_resumed_equals_uninterrupted_and_redoes_nothing_finished(tiny_sources, tmp_path,
                                                                                    reference):
    runs = tmp_path / "runs"
    killed = cli(recipe(tiny_sources, runs), INFOSCOPE_KILL_AFTER_STAGE="train")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(runs)
    status, reason = read_status(run)
    assert status == "incomplete" and f"--resume {run.name}" in reason
    first = [k for k in ledger_of(run)["stages"] if k != "load"]
    assert first == ["split", "train"]
    stamps = file_stamps(run, first)

    # second attempt, killed inside SI right after its first cross-fitting network was committed
    again = cli(["--resume", run.name, "--runs-dir", str(runs)], INFOSCOPE_KILL_AFTER_STAGE="subset.*")
    assert again.returncode == -signal.SIGKILL, again.stderr
    assert "[train] 100% reused" in again.stderr
    assert file_stamps(run, first) == stamps  # split and train were read, not written again
    led = ledger_of(run)
    subsets = [k for k in led["stages"] if k.startswith("subset.")]
    assert len(subsets) == 1 and "score.si_function" not in led["stages"]
    sub_stamps = file_stamps(run, subsets)

    done = cli(["--resume", str(run)])
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip().splitlines()[-1]) == run
    assert read_status(run)[0] == "complete" and not (run / STAGES).exists()
    assert_same_scores(run, reference)

    resumed = json.loads((run / "manifest.json").read_text())["resumed"]
    counts = resumed["stage_counts"]
    assert resumed["attempts"] == 3
    assert set(resumed["reused_stages"]) == set(led["stages"]) - {"load"}
    # every stage committed exactly once over the three attempts; only SI was started twice (killed inside it)
    assert all(c["committed"] == 1 for c in counts.values()), counts
    assert {k for k, c in counts.items() if c["started"] != 1} == {"score.si_function"}
    assert counts["score.si_function"]["started"] == 2
    si = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]["params"]
    # one network per fold and cross-fitting; all but the first were trained in attempt 3
    assert sum(k.startswith("subset.") for k in counts) == si["folds"] * si["repeats"]
    assert subsets[0] not in resumed["computed_stages"] and sub_stamps  # the first one was reused


def test_kill_inside_a_stage_redoes_it_and_reads_nothing_half_written(tiny_sources, tmp_path, reference):
    runs = tmp_path / "runs"
    killed = cli(recipe(tiny_sources, runs), INFOSCOPE_KILL_BEFORE_COMMIT="score.cg_score")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(runs)
    half = run / STAGES / "score.cg_score"
    assert (half / "arrays.npz").exists() and "score.cg_score" not in ledger_of(run)["stages"]
    # poison what the killed stage left (and a torn temp file): a resume that read them would fail or differ
    (half / "arrays.npz").write_bytes(b"half-written")
    (half / ".arrays.npz.x.npz.tmp").write_bytes(b"torn")
    done = cli(["--resume", run.name, "--runs-dir", str(runs)])
    assert done.returncode == 0, done.stderr
    assert_same_scores(run, reference)
    counts = json.loads((run / "manifest.json").read_text())["resumed"]["stage_counts"]
    assert counts["score.cg_score"] == {"started": 2, "committed": 1}
    assert all(c == {"started": 1, "committed": 1} for k, c in counts.items() if k != "score.cg_score"), counts


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["load", "split", "adversarial", "features", "duplicates", "score.loss",
                                   "score.el2n", "score.uniqueness", "score.si_function", "score.cg_score",
                                   "score.prediction_depth", "map", "flags"])
def test_kill_after_any_stage_then_resume(stage, tiny_sources, tmp_path, reference):
    """kill -9 right after each stage of the recipe: the resumed run equals the uninterrupted one and every
    stage was started and committed exactly once over both attempts."""
    runs = tmp_path / "runs"
    killed = cli(recipe(tiny_sources, runs), INFOSCOPE_KILL_AFTER_STAGE=stage)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(runs)
    before = set(ledger_of(run)["stages"])
    assert stage in before
    done = cli(["--resume", str(run)])
    assert done.returncode == 0, done.stderr
    assert_same_scores(run, reference)
    resumed = json.loads((run / "manifest.json").read_text())["resumed"]
    assert all(c == {"started": 1, "committed": 1} for c in resumed["stage_counts"].values()), resumed
    # sub-stages (cross-fitting networks) are read only while their score is unfinished
    assert set(resumed["reused_stages"]) == {s for s in before - {"load"} if not s.startswith("subset.")}
    assert not before & set(resumed["computed_stages"])


@pytest.fixture(scope="module")
def partial(tiny_sources, tmp_path_factory) -> Path:
    """A run killed right after its split (cheap), for the refusals below (tests copy it before damaging)."""
    runs = tmp_path_factory.mktemp("partial")
    killed = cli(recipe(tiny_sources, runs), INFOSCOPE_KILL_AFTER_STAGE="split")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return only_run(runs)


def test_resume_refuses_other_options_with_one_line(partial, tmp_path):
    res = cli(["--resume", str(partial), "--epochs", "5", "--scores", "loss"])
    one_error_line(res, "epochs: the run has 2, given 5")
    assert "scores" in res.stderr
    res = cli(["--resume", str(partial), "--seed", "1"])
    one_error_line(res, "seed: the run has 0, given 1")
    (tmp_path / "other.toml").write_text("epochs = 7\n[scores.cg_score]\nrepeats = 3\n")
    res = cli(["--resume", str(partial), "--config", str(tmp_path / "other.toml")])
    one_error_line(res, "epochs: the run has 2, given 7")
    assert "score_params" in res.stderr
    assert read_status(partial)[0] == "incomplete" and "train" not in ledger_of(partial)["stages"]


def test_resume_accepts_options_that_agree_with_the_run(partial, tmp_path, reference):
    run = tmp_path / partial.name
    shutil.copytree(partial, run)
    (tmp_path / "same.toml").write_text("epochs = 2\nseed = 0\n")
    done = cli(["--resume", str(run), "--config", str(tmp_path / "same.toml"), "--label-noise", "0.1",
                "--scores", SCORES, "--device", "cpu"])
    assert done.returncode == 0, done.stderr
    assert_same_scores(run, reference)


def test_resume_refuses_complete_missing_damaged_and_locked(partial, reference, tmp_path):
    one_error_line(cli(["--resume", str(reference)]), "already complete")
    one_error_line(cli(["--resume", "no-such-run", "--runs-dir", str(tmp_path)]), "no such run folder")
    (tmp_path / "plain").mkdir()
    one_error_line(cli(["--resume", str(tmp_path / "plain")]), "not a partial run")
    broken = tmp_path / "broken"
    shutil.copytree(partial, broken)
    (broken / STAGES / LEDGER).write_text('{"version": 1, "config": [')
    one_error_line(cli(["--resume", str(broken)]), "damaged")
    locked = tmp_path / "locked"
    shutil.copytree(partial, locked)
    holder = StageLedger.open(locked)
    holder.acquire()  # as a live writer holds it
    try:
        one_error_line(cli(["--resume", str(locked)]), "being written by another process")
    finally:
        holder.release()


def test_resume_refuses_when_the_sources_changed(tiny_sources, tmp_path):
    copies = []
    for spec in tiny_sources:
        name, path = spec.split("=npz:")
        shutil.copy(path, tmp_path / Path(path).name)
        copies.append(f"{name}=npz:{tmp_path / Path(path).name}")
    runs = tmp_path / "runs"
    assert cli(recipe(copies, runs), INFOSCOPE_KILL_AFTER_STAGE="split").returncode == -signal.SIGKILL
    src = Path(copies[0].split("=npz:")[1])
    z = dict(np.load(src))
    z["y"] = np.roll(z["y"], 1)  # other labels, same files
    np.savez(src, **z)
    one_error_line(cli(["--resume", str(only_run(runs))]), "other data than when this run started")
    assert read_status(only_run(runs))[0] == "incomplete"  # refused before the run was taken over


# ---- the ledger itself (in process, no subprocess) -------------------------------------------------------

class _Steps:
    def __init__(self):
        self.times: dict[str, float] = {}

    def reused(self, name, wall):
        self.times[name] = wall


def _ledger(tmp_path: Path) -> StageLedger:
    return StageLedger.create(tmp_path, {"seed": 0}, {"device": "cpu"})


def test_stage_reused_only_while_inputs_and_files_are_unchanged(tmp_path):
    led = _ledger(tmp_path)
    runner = StageRunner(led, _Steps())
    calls = []

    def stage(name, deps, value):
        def compute():
            calls.append(name)
            return np.asarray(value)
        return runner.run(name, deps, compute, lambda v: StageOutput(arrays={"v": np.asarray(v)}),
                          lambda o: o.arrays["v"])

    assert stage("a", [], [1.0, 2.0]).tolist() == [1.0, 2.0]
    stage("b", ["a"], [3.0])
    assert stage("a", [], [9.0]).tolist() == [1.0, 2.0] and calls == ["a", "b"]  # read back, not computed
    stage("b", ["a"], [3.0])
    assert calls == ["a", "b"]
    # a same-size change to a committed file is caught by its SHA-256: the stage is computed again
    f = tmp_path / STAGES / "a" / "arrays.npz"
    raw = bytearray(f.read_bytes())
    raw[-30] ^= 0xFF
    f.write_bytes(bytes(raw))
    assert stage("a", [], [5.0, 6.0]).tolist() == [5.0, 6.0] and calls == ["a", "b", "a"]
    # its output changed, so the stage consuming it no longer matches its inputs and is recomputed too
    stage("b", ["a"], [3.0])
    assert calls == ["a", "b", "a", "b"]
    led.release()


def test_network_states_are_read_with_weights_only(tmp_path):
    led = _ledger(tmp_path)
    led.begin("net")
    led.commit("net", "x", StageOutput(states={"model": {"w": torch.ones(2)}}), 0.0)
    assert torch.equal(led.load("net").states["model"]["w"], torch.ones(2))
    # a checkpoint holding an arbitrary object is refused by torch.load(weights_only=True)
    led.begin("evil")
    led.commit("evil", "x", StageOutput(states={"model": {"w": torch.ones(1), "obj": _Steps()}}), 0.0)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        led.load("evil")
    led.release()


def test_second_writer_and_damaged_ledger_are_refused(tmp_path):
    led = _ledger(tmp_path)
    other = StageLedger.open(tmp_path)
    with pytest.raises(RunStoreError, match="another process"):
        other.acquire()
    led.release()
    other.acquire()
    other.release()
    (tmp_path / STAGES / LEDGER).write_text(json.dumps({"version": 1, "config": {}, "stages": {"../x": {
        "inputs": "a", "output": "b", "files": {}}}, "counts": {}, "attempts": [], "config_hash": "h",
        "context": {}}))
    with pytest.raises(RunStoreError, match="damaged"):
        StageLedger.open(tmp_path)


# ---- other model kinds: a frozen ImageNet backbone, a linear head on --features, --pred-probs ------------

def test_frozen_backbone_run_resumes_with_its_rebuilt_network(tmp_path):
    """resnet18 from a local weights file, frozen: the trained network is rebuilt without its weights file and
    the committed state dict loaded; depth, SI on the pretrained features and the flags read it."""
    from torchvision.models import resnet18

    from tests.test_scale_pipeline import _photo_folder

    top = _photo_folder(tmp_path / "photos", per_class=24)  # 49 images: more training rows than depth's k=30
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")

    def args(runs: Path) -> list[str]:
        return ["--source", f"p=folder:{top}", "--model", "resnet18", "--weights", str(tmp_path / "r18.pt"),
                "--image-size", "32", "--epochs", "3", "--holdout", "0.25", "--scores",
                "loss,uniqueness,si_function,prediction_depth", "--map", "pca", "--device", "cpu",
                "--runs-dir", str(runs)]

    ref = cli(args(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    killed = cli(args(tmp_path / "runs"), INFOSCOPE_KILL_AFTER_STAGE="train")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(tmp_path / "runs")
    done = cli(["--resume", str(run)])
    assert done.returncode == 0, done.stderr
    assert_same_scores(run, only_run(tmp_path / "ref"))
    m = json.loads((run / "manifest.json").read_text())
    assert m["model"]["weights_info"] == json.loads((only_run(tmp_path / "ref") / "manifest.json").read_text()
                                                    )["model"]["weights_info"]
    assert m["resumed"]["stage_counts"]["train"] == {"started": 1, "committed": 1}
    assert "train" in m["resumed"]["reused_stages"]


def test_backbone_features_resume_from_the_last_finished_shard(tmp_path):
    """The frozen backbone's one pass over every row is sharded: killed after its second shard, the resumed run
    reads the two finished shards, computes only the rest, and ends with the uninterrupted run's scores."""
    from torchvision.models import resnet18

    from tests.test_scale_pipeline import _photo_folder

    top = _photo_folder(tmp_path / "photos", per_class=24)  # 49 images: 4 shards of 16 rows
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")

    def args(runs: Path) -> list[str]:
        return ["--source", f"p=folder:{top}", "--model", "resnet18", "--weights", str(tmp_path / "r18.pt"),
                "--image-size", "32", "--epochs", "2", "--holdout", "0.25", "--scores", "loss,uniqueness",
                "--map", "pca", "--device", "cpu", "--runs-dir", str(runs)]

    ref = cli(args(tmp_path / "ref"), INFOSCOPE_SHARD_ROWS="16")  # same shards, so the same batches of rows
    assert ref.returncode == 0, ref.stderr
    killed = cli(args(tmp_path / "runs"), INFOSCOPE_SHARD_ROWS="16", INFOSCOPE_KILL_AFTER_SHARD="backbone_features:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = only_run(tmp_path / "runs")
    shards = list((run / STAGES / "backbone_features.shards").rglob("*.npy"))
    assert sorted(p.name for p in shards) == ["0000000000-0000000016.npy", "0000000016-0000000032.npy"]
    assert "backbone_features" not in ledger_of(run)["stages"]  # killed inside the stage: not committed
    done = cli(["--resume", str(run)], INFOSCOPE_SHARD_ROWS="16")
    assert done.returncode == 0, done.stderr
    assert_same_scores(run, only_run(tmp_path / "ref"))
    counts = json.loads((run / "manifest.json").read_text())["resumed"]["stage_counts"]["backbone_features"]
    assert counts == {"started": 2, "committed": 1, "shards_computed": 4, "shards_reused": 2}


def test_resume_refuses_a_changed_weights_file(tmp_path):
    from torchvision.models import resnet18

    from tests.test_scale_pipeline import _photo_folder

    top = _photo_folder(tmp_path / "photos")
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    killed = cli(["--source", f"p=folder:{top}", "--model", "resnet18", "--weights", str(tmp_path / "r18.pt"),
                  "--image-size", "32", "--epochs", "1", "--scores", "loss", "--map", "pca", "--device", "cpu",
                  "--runs-dir", str(tmp_path / "runs")], INFOSCOPE_KILL_AFTER_STAGE="split")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    torch.manual_seed(1)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")  # other weights, same path
    one_error_line(cli(["--resume", str(only_run(tmp_path / "runs"))]), "--weights")


@pytest.mark.parametrize("outputs", ["features", "pred_probs"])
def test_user_outputs_run_resumes_after_a_crash(outputs, tmp_path, monkeypatch):
    """A run whose map step raised (status failed) resumes in process: the linear head on --features (or no
    network at all with --pred-probs) is read back and the result equals an uninterrupted run."""
    from sklearn.datasets import load_digits

    import core.pipeline as pipeline
    from core.pipeline import RunConfig, resume_run, score_run

    b = load_digits()
    x, y = b.images[:120] / 16.0, b.target[:120]
    np.savez(tmp_path / "digits.npz", x=(x * 255).round().astype(np.uint8), y=y)
    feats = (x.reshape(120, -1) + np.random.default_rng(0).normal(0, 0.05, (120, 64))).astype(np.float32)
    np.save(tmp_path / "feats.npy", feats)
    probs = np.random.default_rng(1).dirichlet(np.ones(10), 120)
    np.save(tmp_path / "probs.npy", probs)
    extra = {"features": str(tmp_path / "feats.npy")} if outputs == "features" else {
        "pred_probs": str(tmp_path / "probs.npy")}

    def cfg(runs: str) -> RunConfig:
        return RunConfig(sources=[f"digits=npz:{tmp_path / 'digits.npz'}"], runs_dir=runs, epochs=5, lr=0.05,
                         scores=["loss", "el2n", "uniqueness", "cg_score"], map_method="pca", **extra)

    reference = score_run(cfg(str(tmp_path / "ref")))
    real_map = pipeline.map_2d

    def broken(*a, **k):
        raise RuntimeError("map failed")

    monkeypatch.setattr(pipeline, "map_2d", broken)
    with pytest.raises(RuntimeError, match="map failed"):
        score_run(cfg(str(tmp_path / "runs")))
    run = only_run(tmp_path / "runs")
    assert read_status(run)[0] == "failed"
    monkeypatch.setattr(pipeline, "map_2d", real_map)
    assert resume_run(run.name, runs_dir=tmp_path / "runs") == run
    assert_same_scores(run, reference)
    counts = json.loads((run / "manifest.json").read_text())["resumed"]["stage_counts"]
    assert counts["train"] == counts["score.cg_score"] == {"started": 1, "committed": 1}
    assert counts["map"] == {"started": 2, "committed": 1}
