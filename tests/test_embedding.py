"""Uniqueness, neighbours and near-duplicates against brute-force distances."""

from __future__ import annotations

import numpy as np
import pytest

from core.duplicates import near_duplicates
from core.embedding import map_2d, neighbors, uniqueness


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


def test_near_duplicates_of_large_images_compare_pooled_thumbnails():
    """Images above max_values values are compared as average-pooled thumbnails: a resized-then-restored copy
    (not equal pixel for pixel) is found, the cosine is that of the pooled vectors (brute force), and the
    index holds C·s² values per row, not C·H·W."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    base = rng.uniform(size=(30, 3, 8, 8)).astype(np.float32)
    x = F.interpolate(torch.as_tensor(base), size=(96, 96), mode="bilinear", align_corners=False).numpy()
    x += rng.normal(scale=0.05, size=x.shape).astype(np.float32)  # distinct at full resolution
    x[20] = np.clip(x[3] + rng.normal(scale=0.02, size=x[3].shape), 0, None)  # near copy of row 3
    ids = np.array([f"p:{i}" for i in range(30)], dtype=object)
    got = near_duplicates(x, ids, threshold=0.995, device="cpu", max_values=300, batch=7)
    side = int(np.sqrt(300 // 3))  # 10 → 3 × 10 × 10 = 300 values
    pooled = F.adaptive_avg_pool2d(torch.as_tensor(x), (side, side)).numpy().reshape(30, -1)
    u = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    cos = u @ u.T
    np.fill_diagonal(cos, -1)
    want = {(f"p:{i}", f"p:{j}") for i, j in zip(*np.nonzero(cos >= 0.995), strict=True) if i < j}
    assert ("p:3", "p:20") in want
    assert set(map(tuple, got[["sample_id_a", "sample_id_b"]].values)) == want
    row = got[(got.sample_id_a == "p:3") & (got.sample_id_b == "p:20")]
    assert row["cosine"].iloc[0] == pytest.approx(cos[3, 20], abs=1e-5)
