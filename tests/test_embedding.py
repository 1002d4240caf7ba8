"""Uniqueness, neighbours and near-duplicates against brute-force distances."""

from __future__ import annotations

import numpy as np

from core.embedding import map_2d, near_duplicates, neighbors, uniqueness


def test_uniqueness_is_mean_distance_to_k_nearest_others():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 5)).astype(np.float32)
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :4].mean(1)
    np.testing.assert_allclose(uniqueness(f, k=4, device="cpu"), expected, rtol=1e-4)
    _, idx = neighbors(f, 4, "cpu")
    assert not (idx == np.arange(60)[:, None]).any()
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.argsort(d, axis=1)[:, :4], 1))


def test_near_duplicates_finds_planted_copy(mnist_small):
    x, _ = mnist_small
    x = x[:50].copy()
    x[40] = x[7] * 0.98  # same image, slightly darker: cosine 1
    ids = np.array([f"m:{i}" for i in range(50)], dtype=object)
    dups = near_duplicates(x, ids, threshold=0.999, device="cpu")
    assert [tuple(r) for r in dups[["sample_id_a", "sample_id_b"]].values] == [("m:7", "m:40")]
    assert dups["cosine"].iloc[0] > 0.9999


def test_pca_map_is_deterministic_and_spreads(mnist_small):
    x, _ = mnist_small
    f = x.reshape(len(x), -1)
    a, b = map_2d(f, method="pca"), map_2d(f, method="pca")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(x), 2) and a.std(0).min() > 0
