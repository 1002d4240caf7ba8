"""The model-quality guardrail: training length from the dataset size, a loud warning when held-out accuracy
is too low to trust the flags (CLI line + manifest), and no flood of flags on clean real photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.photo_crops import make_photo_crops

SCORES = "loss,margin,confidence,uniqueness,cg_score"


def _score(args: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    res = subprocess.run([sys.executable, "-m", "core.cli", "score", *args, "--scores", SCORES, "--map", "pca",
                          "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return res, Path(res.stdout.strip().splitlines()[-1])


def test_small_photo_set_default_recipe_is_trusted_or_warns(tmp_path):
    pytest.importorskip("skimage")
    src = make_photo_crops(tmp_path / "photos", per_class=9, size=32, seed=0)  # 63 crops, 7 classes
    res, run = _score(["--source", f"photos=folder:{src}", "--runs-dir", str(tmp_path / "runs")])
    m = json.loads((run / "manifest.json").read_text())
    q = m["model"]["quality"]
    assert set(q) >= {"heldout_acc", "trust_flags", "message", "min_heldout_acc"}
    assert m["model"]["epochs_requested"] is None and m["model"]["epoch_budget"] == 100  # 1 step/epoch: 400 capped
    assert m["model"]["epochs"] == m["model"]["best_epoch"] <= len(m["model"]["heldout_loss"])
    warned = "WARNING" in res.stderr
    assert q["heldout_acc"] >= 0.9 or (warned and not q["trust_flags"])
    assert warned == (not q["trust_flags"])
    t = pd.read_parquet(run / "samples.parquet")
    assert t["flag_mislabeled"].mean() < 0.05 and t["flag_adversarial"].mean() < 0.05


def test_weak_model_warns_in_cli_and_manifest_and_withholds_flags(tiny_sources, tmp_path):
    cfg = tmp_path / "strict.toml"
    cfg.write_text("min_heldout_acc = 0.999\nlabel_noise = 0.2\n")
    res, run = _score(["--source", tiny_sources[0], "--epochs", "1", "--config", str(cfg),
                       "--runs-dir", str(tmp_path / "runs")])
    warning = [ln for ln in res.stderr.splitlines() if "WARNING" in ln]
    assert warning and "held-out accuracy" in " ".join(res.stderr.split())
    m = json.loads((run / "manifest.json").read_text())
    q = m["model"]["quality"]
    assert q["trust_flags"] is False and q["message"].startswith("WARNING") and q["heldout_acc"] < 0.999
    assert m["flags"]["withheld"] is True and m["flags"]["n_mislabeled"] == 0
    t = pd.read_parquet(run / "samples.parquet")
    assert not t["flag_mislabeled"].any() and not t["flag_adversarial"].any()
    assert t["suspicion_mislabeled"].max() > 0  # the ranking is kept for review
