"""core.summary_eval and ``infoscope evaluate-summary``: summary vs random subsets on held-out rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dashboard_fixtures import write_tiny_run
from typer.testing import CliRunner

from core.cli import app
from core.errors import InfoscopeError
from core.store import open_run
from core.summary_eval import evaluate_subsets


def _blobs(n_per: int = 60, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, 5)) * 4
    labels = np.repeat(np.arange(k), n_per)
    return centers[labels] + rng.normal(size=(len(labels), 5)), labels


@pytest.mark.parametrize("model", ["logistic", "ridge"])
def test_one_class_summary_loses_to_random(model: str) -> None:
    x, y = _blobs()
    rng = np.random.default_rng(1)
    eval_rows = rng.choice(len(y), 60, replace=False)
    pool = np.setdiff1d(np.arange(len(y)), eval_rows)
    one_class = pool[y[pool] == 0][:20]  # a "summary" that never shows classes 1 and 2
    seen: list[tuple[int, int, str]] = []
    res = evaluate_subsets(x, y, one_class, eval_rows, pool, k_random=3, model=model,
                           progress=lambda a, b, m: seen.append((a, b, m)))
    # a model that only saw class 0 predicts class 0: its accuracy is the share of class 0 among the eval rows
    assert res.summary_acc == pytest.approx(np.mean(y[eval_rows] == 0))
    assert min(res.random_accs) > 0.8 and len(res.random_accs) == 3
    assert res.n_train == 20 and res.n_eval == 60
    assert seen[-1][:2] == (4, 4)
    d = res.to_dict()
    assert d["random_mean"] == pytest.approx(np.mean(res.random_accs))


def test_bad_requests_are_clear_errors() -> None:
    x, y = _blobs()
    with pytest.raises(InfoscopeError, match="overlap"):
        evaluate_subsets(x, y, np.array([0, 1]), np.array([1, 2]), np.arange(len(y)))
    with pytest.raises(InfoscopeError, match="no held-out"):
        evaluate_subsets(x, y, np.array([0, 1]), np.array([], dtype=int), np.arange(len(y)))
    with pytest.raises(InfoscopeError, match="unknown model"):
        evaluate_subsets(x, y, np.array([0]), np.array([1]), np.arange(len(y)), model="svm")


def test_cli_evaluate_summary_on_a_run(tmp_path, mnist_arrays) -> None:
    x, y = mnist_arrays
    tiny = write_tiny_run(tmp_path, x, y, per_class=24)
    df = open_run(tiny.path).df
    train = df[df["split"] == "train"]
    ids = train.groupby("label_name").head(3)["sample_id"].tolist()
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids))
    out = CliRunner().invoke(app, ["evaluate-summary", "--run", str(tiny.path), "--ids", str(f), "--random", "2",
                                   "--model", "ridge"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("progress")] == ["1/3", "2/3", "3/3"]
    res = json.loads(lines[-1].removeprefix("result "))
    assert res["n_train"] == len(ids) and len(res["random_accs"]) == 2
    assert 0 <= res["summary_acc"] <= 1 and res["n_eval"] > 0
    bad = tmp_path / "bad.txt"
    bad.write_text("no-such-id\n")
    out = CliRunner().invoke(app, ["evaluate-summary", "--run", str(tiny.path), "--ids", str(bad)])
    assert out.exit_code == 2 and "not in the run" in out.output
