"""--features / --pred-probs: validated arrays, scores computed from them checked against their definitions,
scores that need a network NaN with the reason in the manifest."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.errors import DataError, InfoscopeError
from core.pipeline import RunConfig, score_run
from core.store import open_run
from core.user_outputs import load_features, load_pred_probs


@pytest.fixture(scope="module")
def digits_user(tmp_path_factory):
    """120 sklearn digits as an npz source, plus a user's model: features (64 pixels + noise) and the
    predicted probabilities of a logistic regression fitted on them."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = tmp_path_factory.mktemp("user")
    b = load_digits()
    x, y = b.images[:120] / 16.0, b.target[:120]
    np.savez(d / "digits.npz", x=(x * 255).round().astype(np.uint8), y=y)
    feats = x.reshape(120, -1) + np.random.default_rng(0).normal(0, 0.05, (120, 64))
    probs = LogisticRegression(max_iter=300).fit(feats, y).predict_proba(feats)
    np.save(d / "feats.npy", feats.astype(np.float32))
    np.save(d / "probs.npy", probs)
    return {"source": f"digits=npz:{d / 'digits.npz'}", "features": str(d / "feats.npy"),
            "pred_probs": str(d / "probs.npy"), "feats": feats.astype(np.float32), "probs": probs, "y": y, "dir": d}


def test_bad_arrays_are_one_clear_error(tmp_path):
    good = np.full((4, 2), 0.5)
    cases = {
        "rows.npy": (np.full((3, 2), 0.5), "3 rows but the sources give 4"),
        "cols.npy": (np.full((4, 3), 1 / 3), "3 columns but 2 classes"),
        "nan.npy": (np.where(np.eye(4, 2) > 0, np.nan, 0.5), "NaN or infinite.*row 0"),
        "sum.npy": (np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.2], [0.5, 0.5]]), "sum to 1.*row 2 sums to 1.1"),
        "logits.npy": (np.array([[2.0, -1.0]] * 4), r"values must lie in \[0, 1\].*not logits"),
        "flat.npy": (np.full(4, 0.5), "2-D array"),
    }
    for name, (arr, match) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(DataError, match=match):
            load_pred_probs(str(tmp_path / name), 4, 2, ["a", "b"])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy"):
        load_features(str(tmp_path / "obj.npy"), 4)
    with pytest.raises(DataError, match="not found"):
        load_features(str(tmp_path / "missing.npy"), 4)
    np.save(tmp_path / "good.npy", good)
    np.testing.assert_array_equal(load_pred_probs(str(tmp_path / "good.npy"), 4, 2, ["a", "b"]), good)


def test_pred_probs_and_features_score_without_training(digits_user, tmp_path):
    u = digits_user
    run = open_run(score_run(RunConfig(
        sources=[u["source"]], runs_dir=str(tmp_path), features=u["features"], pred_probs=u["pred_probs"],
        scores=["loss", "margin", "confidence", "variability", "el2n", "forgetting", "uniqueness", "cg_score",
                "si_weights", "prediction_depth"],
        score_params={"cg_score": {"repeats": 1}}, map_method="pca")))
    df, m = run.df, run.manifest
    p, y = u["probs"], u["y"]
    py = p[np.arange(len(y)), y]
    np.testing.assert_allclose(df["loss"], -np.log(py), rtol=1e-5)
    other = np.where(np.eye(10, dtype=bool)[y], -np.inf, np.log(p))
    np.testing.assert_allclose(df["margin"], np.log(py) - other.max(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(df["pred"], p.argmax(1))
    conf = df["confidence"][df["split"] == "train"]
    np.testing.assert_allclose(conf, py[df["split"] == "train"], rtol=1e-5)
    # uniqueness on the user's features: brute-force mean distance to the 10 nearest other rows
    f = u["feats"].astype(np.float64)
    dist = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    np.testing.assert_allclose(df["uniqueness"], np.sort(dist, 1)[:, :10].mean(1), rtol=1e-4)
    np.testing.assert_allclose(run.embeddings(), u["feats"])
    assert np.isfinite(df["cg_score"]).all()
    for col in ["variability", "el2n", "forgetting", "prediction_depth"]:
        assert df[col].isna().all(), col
    # SI is the head on the user's features (nothing else to linearize): defined on every training row
    assert df.loc[df.split == "train", "si_weights"].notna().all() and df.loc[df.split == "test", "si_weights"].isna().all()
    assert m["scores"]["si_weights"]["params"]["features"] == "frozen"
    note = m["user_outputs"]
    assert note["outputs_from"] == "--pred-probs" and "si_weights" not in note["not_computed"]
    assert "snapshot" in m["scores"]["el2n"]["info"]["el2n_not_computed"]


def test_features_alone_train_a_linear_head(digits_user, tmp_path):
    u = digits_user
    run = open_run(score_run(RunConfig(
        sources=[u["source"]], runs_dir=str(tmp_path), features=u["features"], epochs=20, lr=0.05,
        scores=["loss", "el2n", "forgetting", "uniqueness", "prediction_depth"], map_method="pca")))
    df, m = run.df, run.manifest
    train = df["split"] == "train"
    assert df.loc[train, "el2n"].notna().all() and df.loc[train, "forgetting"].notna().all()
    assert df["prediction_depth"].isna().all() and "uniqueness" not in m["user_outputs"]["not_computed"]
    assert m["user_outputs"]["outputs_from"] == "linear head trained on --features"
    assert m["model"]["train_acc"] > 0.9  # digits are linear in pixel space


def test_cli_refuses_row_changing_options(digits_user, tmp_path):
    u = digits_user
    res = CliRunner().invoke(app, ["score", "--source", u["source"], "--pred-probs", u["pred_probs"],
                                   "--adversarial", "0.1", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--adversarial" in res.output and "Traceback" not in res.output
    np.save(tmp_path / "short.npy", u["probs"][:50])
    res = CliRunner().invoke(app, ["score", "--source", u["source"], "--pred-probs", str(tmp_path / "short.npy"),
                                   "--runs-dir", str(tmp_path), "--map", "pca"])
    assert res.exit_code == 2 and "50 rows but the sources give 120" in " ".join(res.output.split())
    with pytest.raises(InfoscopeError):
        RunConfig(sources=["digits"], features="x.npy", undersample="3:0.5").validate()
