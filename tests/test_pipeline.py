"""The whole scoring pipeline on real (small) data: run contents, ground truth, determinism, failures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.errors import InfoscopeError
from core.pipeline import RunConfig, score_run
from core.scores.registry import SCORE_SPECS
from core.store import list_runs, open_run
from tests.conftest import tiny_config


def test_tiny_run_has_every_score_and_the_contract(tiny_run):
    run = open_run(tiny_run)
    df, m = run.df, run.manifest
    for col in ["sample_id", "source", "split", "label", "label_name", "image_path", "true_label", "is_mislabeled",
                "is_adversarial", "pred", "pred_prob", "loss", "margin", "umap_x", "umap_y", "flag_mislabeled",
                "flag_adversarial", "flag_reason", "suspicion_mislabeled", "suspicion_adversarial",
                "suggested_label", "suggested_label_name", "suggestion_agrees", "reverse_eps", "px_label_share",
                *SCORE_SPECS]:
        assert col in df.columns, col
    assert not (df["flag_adversarial"] & (df["split"] == "train")).any()  # held-out rows only by default
    assert df.loc[df["pred"] == df["label"], "reverse_eps"].isna().all()
    # the model-free noise evidence: every row measured; noise_z is relative to the class's training rows
    assert df["noise_level"].notna().all() and df["noise_z"].notna().all()
    train = df[df["split"] == "train"]
    assert train.groupby("label")["noise_z"].median().abs().max() < 0.5
    adv = df["is_adversarial"].to_numpy(bool)
    assert df.loc[adv, "noise_z"].median() > df.loc[~adv & (df["split"] == "test"), "noise_z"].median() + 2
    # out-of-sample predictions of the training rows from SI's cross-fitted networks (confident-joint vote)
    from core.store.layout import CROSSFIT_COLUMNS

    tr = (df["split"] == "train").to_numpy()
    for col in CROSSFIT_COLUMNS:
        assert df.loc[tr, col].notna().all() and df.loc[~tr, col].isna().all(), col
        assert col not in m["scores"]
    assert (df.loc[tr, "crossfit_pred_prob"] >= df.loc[tr, "crossfit_label_prob"] - 1e-12).all()
    assert df.loc[tr, "crossfit_label_prob"].between(0, 1).all()
    same = df.loc[tr, "crossfit_pred"] == df.loc[tr, "label"]
    assert np.allclose(df.loc[tr][same]["crossfit_pred_prob"], df.loc[tr][same]["crossfit_label_prob"])
    q = m["model"]["quality"]
    assert q["heldout_acc"] == m["model"]["test_acc"] and isinstance(q["trust_flags"], bool) and q["message"]
    for name in SCORE_SPECS:
        assert np.isfinite(df[name]).sum() > 0, f"{name} is all NaN"
        assert m["scores"][name]["wall_time_s"] >= 0 and m["scores"][name]["paper"]
    assert set(df["source"]) == {"mnist", "digits"}
    assert m["sources"] == [{"name": "mnist", "spec": m["sources"][0]["spec"], "count": int((df.source == "mnist").sum())},
                            {"name": "digits", "spec": m["sources"][1]["spec"], "count": int((df.source == "digits").sum())}]
    assert {"load", "train", "flags", "write"} <= set(m["steps"])
    assert m["versions"]["torch"] and m["device"] == "cpu" and m["n_samples"] == len(df)
    assert df["sample_id"].is_unique
    assert all(run.image(s) is not None for s in df["sample_id"].sample(20, random_state=0))
    assert run.embeddings().shape[0] == len(df)
    assert len(run.neighbors(df["sample_id"].iloc[0], 5)) == 5
    # the flags' thresholds as used (defaults included), so a later change of the defaults cannot rewrite them
    from core.flags import DEFAULT_THRESHOLDS

    used = m["flags"]["thresholds_used"]
    assert used["pixel_keep_share"] == DEFAULT_THRESHOLDS["pixel_keep_share"]
    assert used["name_other_by"] == list(DEFAULT_THRESHOLDS["name_other_by"])
    assert used["weights_mislabeled"] == DEFAULT_THRESHOLDS["weights_mislabeled"]


def test_ground_truth_of_every_corruption(tiny_run):
    run = open_run(tiny_run)
    df, m = run.df, run.manifest
    kinds = [c["kind"] for c in m["corruptions"]]
    assert kinds == ["undersample", "symmetric_label_noise", "adversarial"]
    np.testing.assert_array_equal(df["is_mislabeled"], df["label"] != df["true_label"])
    orig = df[~df["is_adversarial"]]
    assert orig["is_mislabeled"].sum() == m["corruptions"][1]["n_affected"] == round(0.1 * len(orig))
    # class 3 under-sampled to half of each source's 60 / 30 rows
    assert (orig["true_label"] == 3).sum() == 45
    adv = df[df["is_adversarial"]]
    assert len(adv) == m["corruptions"][2]["n"] > 0
    assert adv["sample_id"].str.startswith("adv:").all()
    # crafted against the trained network, never trained on: held out, no training-dynamics scores
    assert (adv["split"] == "test").all() and adv["el2n"].isna().all() and adv["forgetting"].isna().all()
    assert adv["cg_score"].notna().all() and adv["prediction_depth"].notna().all()
    assert (adv["pred"] != adv["label"]).mean() >= m["corruptions"][2]["success_rate"] - 1e-9
    base = df.set_index("sample_id")
    for _, row in adv.head(5).iterrows():
        src = base.loc[row["sample_id"][4:]]
        a, b = run.image(row["sample_id"]).astype(int), run.image(src.name).astype(int)
        assert 0 < np.abs(a - b).max() <= round(0.15 * 255) + 1  # inside the eps ball, not a plain copy
        assert row["true_label"] == src["true_label"]


def test_same_seed_same_scores_other_seed_differs(tiny_sources, tmp_path):
    fast = dict(adversarial=0.0, scores=["loss", "el2n", "cg_score", "uniqueness"], epochs=2)
    a = open_run(score_run(tiny_config(tiny_sources, tmp_path, **fast))).df
    b = open_run(score_run(tiny_config(tiny_sources, tmp_path, **fast))).df
    c = open_run(score_run(tiny_config(tiny_sources, tmp_path, seed=1, **fast))).df
    for col in ["label", "split", "loss", "el2n", "cg_score", "uniqueness"]:
        pd.testing.assert_series_equal(a[col], b[col])
    assert not np.array_equal(a["label"], c["label"])
    assert not np.allclose(a["loss"], c["loss"])


def test_failed_step_marks_run_failed(tiny_sources, tmp_path):
    (tmp_path / "garbage.pt").write_text("not a checkpoint")  # exists (passes validation), fails when training
    cfg = tiny_config(tiny_sources, tmp_path, adversarial=0.0, scores=["loss"], epochs=1,
                      weights=str(tmp_path / "garbage.pt"))
    with pytest.raises(ValueError, match="could not load weights"):
        score_run(cfg)
    (info,) = list_runs(tmp_path)
    assert info.status == "failed" and "could not load weights" in info.reason


@pytest.mark.parametrize("bad, match", [(dict(scores=["nope"]), "unknown score"),
                                        (dict(label_noise=1.5), "label_noise"),
                                        (dict(sources=["mnist=bogus:x"]), "bogus")])
def test_bad_config_is_a_clear_error(tiny_sources, tmp_path, bad, match):
    cfg = tiny_config(tiny_sources, tmp_path)
    for k, v in bad.items():
        setattr(cfg, k, v)
    with pytest.raises((InfoscopeError, ValueError), match=match):
        score_run(cfg)


def test_toml_config_and_unknown_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('sources = ["digits"]\nepochs = 4\n[scores]\nnames = ["loss", "cg_score"]\n'
                 '[scores.cg_score]\nrepeats = 2\n')
    cfg = RunConfig.from_toml(f, epochs=7)
    assert cfg.sources == ["digits"] and cfg.epochs == 7 and cfg.scores == ["loss", "cg_score"]
    assert cfg.score_params == {"cg_score": {"repeats": 2}}
    f.write_text("epochz = 3\n")
    with pytest.raises(InfoscopeError, match="epochz"):
        RunConfig.from_toml(f)


def test_image_mode_survives_label_noise_and_undersampling(tiny_run):
    """The corruptions (label noise, under-sampling) keep how the images were loaded: the manifest says it."""
    m = json.loads((tiny_run / "manifest.json").read_text())
    assert m["config"]["label_noise"] > 0 and m["config"]["undersample"]
    assert m["image_mode"].get("image_size_from"), m["image_mode"]
