"""core.scores.cg: the closed form against the explicit definition, invariances, robustness, a real-data property."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.scores.cg import cg_score, cg_score_details, complexity_gap, ntk_gram, ntk_relu_kernel, unit_rows


def _naive_kernel(x: np.ndarray) -> np.ndarray:
    u = np.clip(x @ x.T, -1, 1)
    h = u * (np.pi - np.arccos(u)) / (2 * np.pi)
    np.fill_diagonal(h, 0.5)
    return h


def _explicit_gap(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """yᵀH⁻¹y − y₋ᵢᵀH₋ᵢ⁻¹y₋ᵢ by deleting row and column i and solving again (the definition)."""
    full = y @ np.linalg.solve(h, y)
    out = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out.append(full - y[keep] @ np.linalg.solve(h[np.ix_(keep, keep)], y[keep]))
    return np.array(out)


@pytest.fixture(scope="module")
def slice3(mnist_small):
    """90 real digits of classes 0, 1, 7 (30 each)."""
    x, y = mnist_small
    idx = np.concatenate([np.flatnonzero(y == c)[:30] for c in (0, 1, 7)])
    return x[idx], y[idx]


def test_kernel_formula_and_diagonal():
    u = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.2])
    expect = np.array([-0.0, -0.5 * (np.pi - 2 * np.pi / 3), 0.0, 0.5 * (np.pi - np.pi / 3), np.pi, np.pi]) / (2 * np.pi)
    np.testing.assert_allclose(ntk_relu_kernel(u.copy()), expect, atol=1e-15)
    x = unit_rows(np.random.default_rng(0).normal(size=(37, 9)))
    h = ntk_gram(x, block=8)
    np.testing.assert_allclose(h, _naive_kernel(x), atol=1e-14)
    assert np.all(np.diag(h) == 0.5) and np.array_equal(h, h.T)


def test_closed_form_equals_explicit_removal(slice3):
    x, y = slice3
    h = _naive_kernel(unit_rows(x))
    t = np.where(y == 7, 1.0, -1.0)
    closed, jitter = complexity_gap(h, t)
    assert jitter == 0.0
    np.testing.assert_allclose(closed, _explicit_gap(h, t), rtol=1e-8, atol=1e-8)
    # only the trailing rows (how one-vs-rest problems are laid out)
    tail, _ = complexity_gap(h, t, last=25)
    np.testing.assert_allclose(tail, closed[-25:], rtol=1e-10, atol=1e-12)


def test_one_vs_rest_all_equals_explicit_per_class(slice3):
    x, y = slice3
    s = cg_score(x, y, negatives="all", device="cpu")
    xu = unit_rows(x)
    for c in (0, 1, 7):
        order = np.concatenate([np.flatnonzero(y != c), np.flatnonzero(y == c)])
        h = _naive_kernel(xu[order])
        t = np.where(y[order] == c, 1.0, -1.0)
        expl = _explicit_gap(h, t)[t > 0]
        np.testing.assert_allclose(s[y == c], expl, rtol=1e-8, atol=1e-8)


def test_invariant_to_sample_order(slice3):
    x, y = slice3
    perm = np.random.default_rng(5).permutation(len(y))
    for neg in ("balanced", "all"):
        a = cg_score(x, y, negatives=neg, repeats=3, seed=1, device="cpu")
        b = cg_score(x[perm], y[perm], negatives=neg, repeats=3, seed=1, device="cpu")
        np.testing.assert_allclose(b, a[perm], rtol=1e-9, atol=1e-12)


def test_all_negatives_is_deterministic_and_balanced_is_seeded(slice3):
    x, y = slice3
    a = cg_score(x, y, negatives="all", seed=0, device="cpu")
    b = cg_score(x, y, negatives="all", seed=123, repeats=9, device="cpu")
    np.testing.assert_array_equal(a, b)
    c = cg_score(x, y, negatives="balanced", ratio=0.5, seed=0, device="cpu")
    d = cg_score(x, y, negatives="balanced", ratio=0.5, seed=0, device="cpu")
    e = cg_score(x, y, negatives="balanced", ratio=0.5, seed=1, device="cpu")
    np.testing.assert_array_equal(c, d)
    assert not np.allclose(c, e)


def test_duplicates_are_jittered_not_fatal(slice3):
    x, y = slice3
    x2 = np.concatenate([x, x[:3], x[40:41]])
    y2 = np.concatenate([y, y[:3], [7]])  # three exact twins, one twin with a conflicting label
    res = cg_score_details(x2, y2, negatives="all", device="cpu")
    assert np.isfinite(res.scores).all()
    assert res.info["jitter_max"] > 0 and res.info["problems_jittered"] >= 1
    # the conflicting twin is the most atypical member of class 7
    assert np.argmax(np.where(y2 == 7, res.scores, -np.inf)) == len(y2) - 1


def test_chunking(slice3):
    x, y = slice3
    a = cg_score_details(x, y, repeats=2, device="cpu")
    b = cg_score_details(x, y, repeats=2, max_class_size=30, device="cpu")
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    c = cg_score_details(x, y, repeats=2, max_class_size=10, device="cpu")
    assert c.info["problems"] == 3 * 2 * 3
    assert np.isfinite(c.scores).all() and (c.scores > 0).all()


def test_flipped_labels_rank_high(mnist_small):
    """Honest property: on 400 real digits with 20 random label flips, CG (no training) finds the flips."""
    x, y = mnist_small
    rng = np.random.default_rng(1)
    flip = rng.choice(len(y), 20, replace=False)
    noisy = y.copy()
    noisy[flip] = (noisy[flip] + rng.integers(1, 10, 20)) % 10
    truth = np.zeros(len(y), bool)
    truth[flip] = True
    s = cg_score(x, noisy, device="cpu")
    assert roc_auc_score(truth, s) > 0.93
    assert truth[np.argsort(-s)[:20]].sum() >= 10


def test_bad_arguments(slice3):
    x, y = slice3
    with pytest.raises(ValueError):
        cg_score(x, y, negatives="some")
    with pytest.raises(ValueError):
        cg_score(x, y[:-1])
    from core.errors import ScoreError

    with pytest.raises(ScoreError):
        cg_score(x, np.zeros(len(y), dtype=int))


def test_adapter_echoes_params_and_uses_embeddings(slice3):
    from types import SimpleNamespace

    from core.scores.cg import adapter

    x, y = slice3
    emb = np.random.default_rng(0).normal(size=(len(y), 16))
    ctx = SimpleNamespace(data=SimpleNamespace(images=x, labels=y), embeddings=emb, device="cpu", seed=3,
                          params={"repeats": 2}, progress=lambda *a, **k: None)
    res = adapter(ctx)
    s = res.columns["cg_score"]
    assert s.shape == (len(y),) and np.isfinite(s).all()
    assert res.params == {"negatives": "balanced", "ratio": 1.0, "repeats": 2, "seed": 3, "max_class_size": 5000,
                          "features": "pixels", "dataset_level": True, "dataset_max_rows": 4096}
    assert res.info["jitter_max"] == 0.0 and res.info["problems"] == 3 * 2
    np.testing.assert_allclose(s, cg_score(x, y, repeats=2, seed=3, device="cpu"))
    ctx.params = {"features": "embeddings", "negatives": "all"}
    np.testing.assert_allclose(adapter(ctx).columns["cg_score"], cg_score(emb, y, negatives="all", device="cpu"))


def test_auto_features_are_pixels_for_small_images_and_embeddings_for_large_ones(slice3):
    from types import SimpleNamespace

    from core.scores.cg import MAX_PIXEL_VALUES, adapter

    x, y = slice3
    emb = np.random.default_rng(0).normal(size=(len(y), 16))
    big = np.zeros((len(y), 3, 80, 80), np.float32)  # 19,200 values > 12,288: never read as pixels
    assert big[0].size > MAX_PIXEL_VALUES >= x[0].size
    ctx = SimpleNamespace(data=SimpleNamespace(images=big, labels=y), embeddings=emb, device="cpu", seed=3,
                          params={"repeats": 1}, progress=lambda *a, **k: None)
    res = adapter(ctx)
    assert res.params["features"] == "embeddings"
    np.testing.assert_allclose(res.columns["cg_score"], cg_score(emb, y, repeats=1, seed=3, device="cpu"))
    ctx.data = SimpleNamespace(images=x, labels=y)
    assert adapter(ctx).params["features"] == "pixels"


def test_adapter_default_scores_classes_up_to_5000_rows_unchunked():
    from core.scores.cg import DEFAULT_PARAMS, _problems

    limit = DEFAULT_PARAMS["max_class_size"]
    assert limit == 5000
    for size, chunks in [(5000, 1), (5001, 2), (12000, 3)]:
        labels = np.r_[np.zeros(size, int), np.ones(200, int)]
        pos = [p for p, _ in _problems(labels, "balanced", 1.0, 1, 0, limit) if labels[p[0]] == 0]
        assert len(pos) == chunks and sum(len(p) for p in pos) == size
        assert len(np.unique(np.concatenate(pos))) == size  # every row scored exactly once per draw
