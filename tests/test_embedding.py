"""Uniqueness, neighbours and near-duplicates against brute-force distances."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_map_above_max_fit_is_fitted_on_a_sample_and_places_every_row(mnist_small):
    """Bounded time: above ``max_fit`` rows the map is fitted on a seeded sample and the rest placed by the
    fitted map. For PCA that is the projection on the sample's own principal axes (checked by hand)."""
    x, _ = mnist_small
    f = x.reshape(len(x), -1).astype(np.float32)
    got = map_2d(f, method="pca", max_fit=100, seed=3, batch=37)  # batches do not change the result
    rows = np.sort(np.random.default_rng(3).choice(len(f), 100, replace=False))
    s = f[rows]
    _, _, vt = np.linalg.svd(s - s.mean(0), full_matrices=False)
    want = (f - s.mean(0)) @ vt[:2].T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    full = map_2d(f, method="pca", max_fit=None)
    assert not np.allclose(got, full)  # a real sample, not the full fit
    with pytest.raises(ValueError, match="max_fit"):
        map_2d(f, method="pca", max_fit=2)
