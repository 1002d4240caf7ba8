"""Unit tests of core.selection (dataset summarisation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.selection import _allocate, informativeness_curve, resolve_budget, summarize


def _table(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], [30, 20, 10])[:n]
    score = rng.random(n)
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    return pd.DataFrame({"label": labels, "si_function": score}), emb


def test_resolve_budget_count_and_fraction() -> None:
    assert resolve_budget(200, 10) == 10
    assert resolve_budget(200, 0.25) == 50
    assert resolve_budget(5, 10) == 5
    with pytest.raises(ValueError):
        resolve_budget(5, -1)


def test_top_picks_highest_scores_nan_last() -> None:
    t = pd.DataFrame({"label": ["a"] * 5, "s": [0.1, np.nan, 0.9, 0.5, 0.3]})
    assert summarize(t, None, 3, "top", score="s").tolist() == [2, 3, 4]
    assert summarize(t, None, 5, "top", score="s").tolist() == [2, 3, 4, 0, 1]


def test_allocate_is_proportional_and_exact() -> None:
    alloc = _allocate(np.array([30, 20, 10]), 12)
    assert alloc.sum() == 12
    assert alloc.tolist() == [6, 4, 2]
    # one per class first when the budget allows, never more than a class holds
    assert _allocate(np.array([100, 1, 1]), 3).tolist() == [1, 1, 1]
    assert _allocate(np.array([2, 1]), 10).tolist() == [2, 1]


def test_class_balanced_keeps_top_within_each_class() -> None:
    t, _ = _table()
    idx = summarize(t, None, 12, "class_balanced")
    assert len(idx) == len(set(idx)) == 12
    counts = t.iloc[idx]["label"].value_counts().to_dict()
    assert counts == {"a": 6, "b": 4, "c": 2}
    for c, k in counts.items():
        in_class = t[t["label"] == c]["si_function"].sort_values(ascending=False)
        assert set(t.iloc[idx][t.iloc[idx]["label"] == c].index) == set(in_class.index[:k])


def test_diversity_covers_clusters_and_prefers_informative() -> None:
    rng = np.random.default_rng(1)
    centers = np.array([[10, 0], [0, 10], [-10, 0], [0, -10]], dtype=np.float32)
    emb = np.concatenate([c + rng.normal(scale=0.1, size=(25, 2)) for c in centers]).astype(np.float32)
    score = rng.random(100)
    t = pd.DataFrame({"label": np.repeat(list("wxyz"), 25), "s": score})
    idx = summarize(t, emb, 4, "diversity", score="s")
    assert len(set(idx.tolist())) == 4
    assert sorted({int(i) // 25 for i in idx}) == [0, 1, 2, 3]  # one per cluster
    assert idx[0] == int(np.argmax(score))  # starts from the most informative row
    # top-k by score would typically miss clusters; diversity must not depend on row order
    perm = rng.permutation(100)
    idx2 = summarize(t.iloc[perm].reset_index(drop=True), emb[perm], 4, "diversity", score="s")
    assert sorted({int(perm[i]) // 25 for i in idx2}) == [0, 1, 2, 3]


def test_diversity_prefix_is_nested_and_needs_embeddings() -> None:
    t, emb = _table()
    a = summarize(t, emb, 10, "diversity")
    b = summarize(t, emb, 20, "diversity")
    assert b[:10].tolist() == a.tolist()
    with pytest.raises(ValueError, match="embeddings"):
        summarize(t, None, 5, "diversity")


def test_unknown_method_and_score() -> None:
    t, emb = _table()
    with pytest.raises(ValueError, match="unknown method"):
        summarize(t, emb, 5, "random")
    with pytest.raises(ValueError, match="not in the table"):
        summarize(t, emb, 5, "top", score="cg_score")


def test_informativeness_curve() -> None:
    t = pd.DataFrame({"s": [1.0, 3.0, np.nan, 0.0, 4.0]})
    order = summarize(t.assign(label="a"), None, 5, "top", score="s")
    curve = informativeness_curve(t, order, "s")
    assert curve.shape == (5,)
    np.testing.assert_allclose(curve, [0.5, 0.875, 1.0, 1.0, 1.0])
    assert np.all(np.diff(curve) >= 0)
    # top-k dominates any other order at every budget
    rnd = informativeness_curve(t, np.array([3, 0, 2, 1, 4]), "s")
    assert np.all(curve >= rnd - 1e-12)
    # negative scores are shifted, all-NaN gives zeros
    neg = informativeness_curve(pd.DataFrame({"s": [-1.0, 1.0]}), np.array([1, 0]), "s")
    np.testing.assert_allclose(neg, [1.0, 1.0])
    assert informativeness_curve(pd.DataFrame({"s": [np.nan, np.nan]}), np.array([0, 1]), "s").tolist() == [0, 0]
