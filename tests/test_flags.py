"""core.flags: the rule finds injected flips and attacked copies on real digits, explains itself, degrades."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from core.attacks import fgsm
from core.flags import DEFAULT_THRESHOLDS, compute_flags, percentile
from core.models.nets import MLP
from core.scores.cg import cg_score


def _train(x: np.ndarray, y: np.ndarray, steps: int = 30) -> tuple[MLP, np.ndarray]:
    """Full-batch Adam on an MLP (stopped early, as on noisy labels); returns the model and p(given label) after every 10 steps (Data Maps)."""
    torch.manual_seed(0)
    model = MLP(784, 10, hidden=(64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    probs = []
    for step in range(steps):
        opt.zero_grad()
        out = model(xt)
        F.cross_entropy(out, yt).backward()
        opt.step()
        if step % 10 == 9:
            probs.append(out.softmax(1).detach()[torch.arange(len(y)), yt].numpy())
    return model.eval(), np.mean(probs, axis=0)


def _table(model: MLP, x: np.ndarray, given: np.ndarray, split: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    with torch.no_grad():
        logits = model(torch.as_tensor(x))
        emb = model.embed(torch.as_tensor(x)).numpy()
    p = logits.softmax(1).numpy()
    lg = logits.numpy()
    own = lg[np.arange(len(given)), given]
    other = np.where(np.eye(10, dtype=bool)[given], -np.inf, lg).max(1)
    table = pd.DataFrame({
        "label": given, "pred": p.argmax(1), "pred_prob": p.max(1),
        "loss": -np.log(np.clip(p[np.arange(len(given)), given], 1e-12, 1)), "margin": own - other, "split": split,
    })
    return table, emb


@pytest.fixture(scope="module")
def noisy(mnist_small):
    x, y = mnist_small
    rng = np.random.default_rng(0)
    flip = rng.choice(len(y), 40, replace=False)
    given = y.copy()
    given[flip] = (given[flip] + rng.integers(1, 10, 40)) % 10
    model, conf = _train(x, given)
    table, emb = _table(model, x, given, np.array(["train"] * len(y)))
    table["confidence"] = conf
    table["cg_score"] = cg_score(x, given, device="cpu")
    return x, y, given, table, emb, model


def test_flags_find_flipped_labels(noisy):
    _, y, given, table, emb, _ = noisy
    truth = given != y
    out = compute_flags(table, emb)
    assert list(out.columns) == ["flag_mislabeled", "flag_adversarial", "flag_reason", "suspicion_mislabeled",
                                 "suspicion_adversarial"]
    assert out.index.equals(table.index)
    assert roc_auc_score(truth, out["suspicion_mislabeled"]) > 0.93
    flagged = out["flag_mislabeled"].to_numpy()
    assert flagged.sum() >= 10
    assert truth[flagged].mean() > 3 * truth.mean()  # precision far above the 10% base rate
    assert out["suspicion_mislabeled"].between(0, 1).all() and out["suspicion_adversarial"].between(0, 1).all()


def test_reasons_name_the_scores_and_evidence(noisy):
    _, _, given, table, emb, _ = noisy
    out = compute_flags(table, emb)
    reasons = out.loc[out["flag_mislabeled"], "flag_reason"]
    assert len(reasons) and reasons.str.startswith("mislabeled?").all()
    r = reasons.iloc[0]
    for piece in ("cg_score in top", "model predicts", "neighbours are", "confidence", "used: model, datamaps"):
        assert piece in r, r
    assert (out.loc[~(out["flag_mislabeled"] | out["flag_adversarial"]), "flag_reason"] == "").all()


def test_missing_and_nan_columns_degrade(noisy):
    _, y, given, table, emb, _ = noisy
    truth = given != y
    minimal = table[["label", "pred", "pred_prob"]]
    out = compute_flags(minimal, None)
    assert out["flag_mislabeled"].sum() > 0 and not out["flag_adversarial"].any()
    assert (out["suspicion_mislabeled"] == 0).all()  # no graded evidence at all -> no ranking
    nan_cg = table.assign(cg_score=np.nan, si_function=np.nan)
    out2 = compute_flags(nan_cg, emb)
    r = out2.loc[out2["flag_mislabeled"], "flag_reason"]
    assert len(r) and not r.str.contains("cg_score").any()
    assert roc_auc_score(truth, out2["suspicion_mislabeled"]) > 0.9
    only_cg = table[["label", "cg_score"]]
    out3 = compute_flags(only_cg, None)
    assert roc_auc_score(truth, out3["suspicion_mislabeled"]) > 0.9
    with pytest.raises(ValueError):
        compute_flags(table.drop(columns="label"), emb)


def test_thresholds_are_configurable(noisy):
    _, _, _, table, emb, _ = noisy
    base = compute_flags(table, emb)["flag_mislabeled"].sum()
    strict = compute_flags(table, emb, thresholds={"min_votes": 4})["flag_mislabeled"].sum()
    assert strict < base
    w = compute_flags(table, emb, thresholds={"weights_mislabeled": {"cg": 0.0, "model": 0.0, "datamaps": 0.0}})
    expect = percentile(compute_flags(table, emb, k=10).pipe(lambda _: _neighbour_share(table, emb)))
    np.testing.assert_allclose(w["suspicion_mislabeled"], expect)
    assert DEFAULT_THRESHOLDS["weights_mislabeled"]["cg"] == 1.0  # the caller's dict did not leak into defaults


def _neighbour_share(table, emb):
    from core.flags import neighbour_labels

    labs = neighbour_labels(emb, table["label"].to_numpy(), np.arange(len(table)), 10)
    return (labs != table["label"].to_numpy()[:, None]).mean(1)


def test_adversarial_copies_are_found_better_than_chance(noisy):
    x, y, given, table, _, model = noisy
    clean = np.flatnonzero((given == y) & (table["pred"].to_numpy() == y))[:30]
    adv = fgsm(model, x[clean], y[clean], 0.2, device="cpu").numpy()
    xx = np.concatenate([x, adv])
    gg = np.concatenate([given, y[clean]])
    split = np.array(["train"] * len(x) + ["test"] * len(adv))
    t2, emb2 = _table(model, xx, gg, split)
    t2["cg_score"] = cg_score(xx, gg, device="cpu")
    is_adv = np.r_[np.zeros(len(x), bool), np.ones(len(adv), bool)]
    out = compute_flags(t2, emb2)  # no depth: the neighbours stand in for it
    assert roc_auc_score(is_adv, out["suspicion_adversarial"]) > 0.75
    flagged = out["flag_adversarial"].to_numpy()
    assert flagged.any() and is_adv[flagged].mean() > 3 * is_adv.mean()
    assert out.loc[flagged, "flag_reason"].str.startswith("adversarial?").all()
    from core.scores.prediction_depth import prediction_depth

    res = prediction_depth(model, x, given, adv, k=10, device="cpu")
    t2["prediction_depth"] = np.r_[res.train, res.query].astype(float)
    out = compute_flags(t2, emb2)
    flagged = out["flag_adversarial"].to_numpy()
    assert roc_auc_score(is_adv, out["suspicion_adversarial"]) > 0.75
    assert flagged.any() and is_adv[flagged].mean() > 3 * is_adv.mean()
    assert out.loc[flagged, "flag_reason"].str.contains("early layers keep the label").all()
