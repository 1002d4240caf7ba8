"""Unit tests of core.selection (dataset summarisation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.selection import (
    allocate_equal,
    effective_labels,
    eligibility,
    pick_fallback,
    plan_summary,
    ranking_key,
    resolve_budget,
    summarize,
)


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


def test_allocate_equal_water_fills() -> None:
    assert allocate_equal(np.array([30, 20, 10]), 12).tolist() == [4, 4, 4]
    # a short class gives all it has; the leftover is spread equally over the others
    assert allocate_equal(np.array([30, 20, 2]), 12).tolist() == [5, 5, 2]
    assert allocate_equal(np.array([30, 3, 2]), 12).tolist() == [7, 3, 2]
    assert allocate_equal(np.array([2, 1]), 10).tolist() == [2, 1]
    # a remainder goes one each to the classes with the most room
    assert allocate_equal(np.array([5, 9, 7]), 4).tolist() == [1, 2, 1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        avail = rng.integers(0, 20, 6)
        k = int(rng.integers(0, 130))
        alloc = allocate_equal(avail, k)
        assert alloc.sum() == min(k, avail.sum()) and np.all(alloc <= avail)
        # balanced: a class below another by more than 1 has given everything it has
        for i in range(6):
            if alloc[i] < alloc.max() - 1:
                assert alloc[i] == avail[i]


def test_class_balanced_keeps_top_within_each_class() -> None:
    t, _ = _table()
    idx = summarize(t, None, 12, "class_balanced")
    assert len(idx) == len(set(idx)) == 12
    counts = t.iloc[idx]["label"].value_counts().to_dict()
    assert counts == {"a": 4, "b": 4, "c": 4}
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


def _plan_table() -> tuple[pd.DataFrame, np.ndarray]:
    """Two classes; the last rows of each are held out (no SI, but a CG score)."""
    rng = np.random.default_rng(3)
    n = 40
    t = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label_name": ["a"] * 30 + ["b"] * 10,
                      "split": (["train"] * 24 + ["test"] * 6) + (["train"] * 8 + ["test"] * 2),
                      "si_function": rng.random(n), "cg_score": rng.random(n),
                      "flag_mislabeled": False, "flag_adversarial": False,
                      "decision": pd.Series([None] * n, dtype=object),
                      "relabel_to": pd.Series([None] * n, dtype=object)})
    t.loc[t["split"] == "test", "si_function"] = np.nan
    return t, rng.normal(size=(n, 4))


def test_eligibility_excludes_flagged_and_removed_keep_overrides() -> None:
    t, _ = _plan_table()
    t.loc[[0, 1], "flag_mislabeled"] = True
    t.loc[2, "flag_adversarial"] = True
    t.loc[1, "decision"] = "keep"  # a person kept it: the flag no longer excludes it
    t.loc[[3, 2], "decision"] = "remove"
    mask, counts = eligibility(t)
    assert np.flatnonzero(~mask).tolist() == [0, 2, 3]
    assert counts == {"flagged": 1, "removed": 2}
    assert np.flatnonzero(~eligibility(t, exclude_flagged=False)[0]).tolist() == [2, 3]
    assert eligibility(t, exclude_flagged=False, exclude_removed=False)[0].all()
    for method in ("top", "class_balanced", "diversity", "iterative"):
        p = plan_summary(t, _plan_table()[1], 40, method)
        assert not set(p.idx.tolist()) & {0, 2, 3} and len(p.idx) == 37
        off = plan_summary(t, _plan_table()[1], 40, method, exclude_flagged=False, exclude_removed=False)
        assert len(off.idx) == 40


def test_relabel_decisions_change_the_class() -> None:
    t, _ = _plan_table()
    t.loc[[0, 1, 2], "decision"] = "relabel"
    t.loc[[0, 1, 2], "relabel_to"] = "b"
    labels = effective_labels(t)
    assert (labels == "b").sum() == 13 and labels[3] == "a"
    p = plan_summary(t, None, 26, "class_balanced")
    pc = p.per_class.set_index("class")
    assert pc.loc["b", "available"] == 13 and pc.loc["b", "chosen"] == 13 and pc.loc["a", "chosen"] == 13


def test_held_out_rows_ranked_by_within_class_fallback_percentile() -> None:
    t, _ = _plan_table()
    assert pick_fallback(t, "si_function") == "cg_score"
    assert pick_fallback(t, "cg_score") is None  # defined everywhere: no fallback needed
    labels = t["label_name"].to_numpy()
    key, by = ranking_key(t, "si_function", "cg_score", groups=labels)
    test = (t["split"] == "test").to_numpy()
    assert set(by[test]) == {"fallback"} and set(by[~test]) == {"score"}
    # brute force: percentile of cg among every row of the same class
    for i in np.flatnonzero(test):
        same = t.loc[labels == labels[i], "cg_score"]
        assert key[i] == pytest.approx((same < t.loc[i, "cg_score"]).sum() / len(same) + 1 / len(same))
    for i in np.flatnonzero(~test):
        same = t.loc[(labels == labels[i]) & ~test, "si_function"]
        assert key[i] == pytest.approx(((same < t.loc[i, "si_function"]).sum() + 1) / len(same))
    # the summary covers held-out rows; without a fallback they are left out and counted
    p = plan_summary(t, None, 40, "top")
    assert p.fallback == "cg_score" and len(p.idx) == 40 and p.excluded["no score"] == 0
    q = plan_summary(t, None, 40, "top", fallback=None)
    assert len(q.idx) == 32 and q.excluded["no score"] == 8
    assert not set(q.idx.tolist()) & set(np.flatnonzero(test).tolist())


def test_class_balanced_plan_reports_the_shortfall() -> None:
    t, _ = _plan_table()
    p = plan_summary(t, None, 30, "class_balanced")
    pc = p.per_class.set_index("class")
    assert pc.loc["b", "chosen"] == 10 and pc.loc["a", "chosen"] == 20  # b has only 10: a takes the leftover
    assert "all it has" in pc.loc["b", "note"] and "leftover" in pc.loc["a", "note"]
    assert pc.loc["a", "equal share"] == 15.0


def test_iterative_method_keeps_budget_and_needs_embeddings() -> None:
    t, emb = _plan_table()
    p = plan_summary(t, emb, 10, "iterative")
    assert len(set(p.idx.tolist())) == 10
    with pytest.raises(ValueError, match="embeddings"):
        plan_summary(t, None, 10, "iterative")
    with pytest.raises(ValueError, match="unknown method"):
        plan_summary(t, emb, 10, "nope")
