"""core.knn: exact faiss neighbours against brute force (nearest first, self excluded)."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ScoreError
from core.knn import knn, knn_vote


def _brute(q: np.ndarray, s: np.ndarray, k: int, self_index: np.ndarray | None = None):
    d = np.sqrt(((q[:, None, :].astype(np.float64) - s[None, :, :]) ** 2).sum(-1))
    if self_index is not None:
        rows = np.flatnonzero(self_index >= 0)
        d[rows, self_index[rows]] = np.inf
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


def test_matches_brute_force_nearest_first():
    rng = np.random.default_rng(0)
    s, q = rng.normal(size=(300, 12)), rng.normal(size=(40, 12))
    d, i = knn(q, s, 7)
    bd, bi = _brute(q, s, 7)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, rtol=1e-4, atol=1e-4)
    assert (np.diff(d, axis=1) >= 0).all()  # nearest first, never the farthest
    far = np.sqrt(((q[:, None] - s[None]) ** 2).sum(-1)).max(1)
    assert (d[:, 0] < far).all()


def test_real_images_match_brute_force(mnist_small):
    x, _ = mnist_small
    flat = x.reshape(len(x), -1)
    d, i = knn(flat[:50], flat, 5, self_index=np.arange(50))
    bd, bi = _brute(flat[:50], flat, 5, self_index=np.arange(50))
    np.testing.assert_allclose(d, bd, rtol=1e-3, atol=1e-3)
    assert (np.sort(i, 1) == np.sort(bi, 1)).mean() > 0.98  # float32 near-ties may swap order


def test_exclude_self_never_returns_the_point():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 5))
    d, i = knn(x, x, 4, exclude_self=True)
    assert not (i == np.arange(100)[:, None]).any()
    bd, bi = _brute(x, x, 4, self_index=np.arange(100))
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, rtol=1e-4, atol=1e-4)


def test_exact_duplicates_keep_the_twin_not_self():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 3))
    x[5] = x[7]  # twins
    d, i = knn(x, x, 1, exclude_self=True)
    assert i[5, 0] == 7 and i[7, 0] == 5
    assert d[5, 0] == pytest.approx(0.0, abs=1e-3)


def test_self_index_only_for_some_rows():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(50, 4))
    q = np.concatenate([s[:10], rng.normal(size=(5, 4))])
    self_index = np.concatenate([np.arange(10), -np.ones(5, dtype=int)])
    _, i = knn(q, s, 3, self_index=self_index)
    _, bi = _brute(q, s, 3, self_index=self_index)
    np.testing.assert_array_equal(i, bi)


def test_cosine_orders_by_angle():
    rng = np.random.default_rng(4)
    s, q = rng.normal(size=(80, 6)), rng.normal(size=(10, 6))
    _, i = knn(q, s * rng.uniform(0.1, 10, size=(80, 1)), 3, metric="cosine")
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (s / np.linalg.norm(s, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(i, np.argsort(-cos, axis=1)[:, :3])


def test_bad_k_is_a_clear_error():
    x = np.zeros((5, 2))
    with pytest.raises(ScoreError):
        knn(x, x, 5, exclude_self=True)


def test_vote_majority_and_tie_break_by_nearest():
    labels = np.array([[2, 1, 1, 2, 0], [0, 3, 3, 3, 0], [4, 5, 5, 4, 1]])
    pred, counts = knn_vote(labels, 6)
    assert pred.tolist() == [2, 3, 4]  # 2-2 tie -> class of the nearest, majority, tie -> nearest
    assert counts[1].tolist() == [2, 0, 0, 3, 0, 0]


def test_index_choice_by_size():
    from core.knn import APPROX_MIN_ROWS, choose_index

    assert choose_index(APPROX_MIN_ROWS - 1, gpu=False) == "flat"
    assert choose_index(APPROX_MIN_ROWS, gpu=False) == "hnsw"
    assert choose_index(APPROX_MIN_ROWS, gpu=True) == "ivf"
    assert choose_index(10, gpu=False, kind="ivf") == "ivf"
    with pytest.raises(ValueError, match="unknown index"):
        choose_index(10, gpu=False, kind="lsh")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact(kind):
    from core.knn import knn

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (20, 16))
    x = (centers[rng.integers(0, 20, 3000)] + rng.normal(0, 1, (3000, 16))).astype(np.float32)
    d_exact, i_exact = knn(x, x, 10, exclude_self=True, device="cpu", index="flat")
    d_apx, i_apx = knn(x, x, 10, exclude_self=True, device="cpu", index=kind)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_apx, i_exact, strict=True)])
    assert recall >= 0.95, recall
    assert not (i_apx == np.arange(3000)[:, None]).any()  # never the row itself
    # a returned neighbour's distance is its true distance, and never closer than the exact k-th
    true = np.linalg.norm(x[:, None] - x[i_apx], axis=-1)
    np.testing.assert_allclose(d_apx, true, rtol=1e-3, atol=1e-3)
    assert (d_apx[:, -1] >= d_exact[:, -1] - 1e-4).all()


def test_distances_do_not_depend_on_the_query_batch():
    """Distances of the found neighbours are recomputed in float64: the same for any query batch (faiss's BLAS
    rounding differs with the batch and the thread count, which is how a Ray worker's query shards came back
    with uniqueness values 3.7e-6 apart) and equal to the float64 brute force to float32 precision."""
    rng = np.random.default_rng(4)
    x = (100.0 + rng.normal(size=(400, 48))).astype(np.float32)  # far from 0: ‖q‖² + ‖s‖² − 2q·s cancels
    d_all, i_all = knn(x, x, 6, exclude_self=True, device="cpu", batch=400)
    d_small, i_small = knn(x, x, 6, exclude_self=True, device="cpu", batch=7)
    np.testing.assert_array_equal(i_all, i_small)
    np.testing.assert_array_equal(d_all, d_small)
    x64 = x.astype(np.float64)
    want = np.sqrt(((x64[:, None, :] - x64[i_all]) ** 2).sum(-1))
    np.testing.assert_allclose(d_all, want, rtol=1e-7)
