"""Near-duplicate search (core.duplicates) against its brute-force definition on small inputs."""

from __future__ import annotations

import numpy as np
import pytest

from core.duplicates import _Filter, near_duplicates


def brute_force(x: np.ndarray, threshold: float, k: int) -> dict[tuple[int, int], float]:
    """Every row's k nearest other rows (ties by row index) with cosine ≥ threshold, as {(a, b): cos}, a < b."""
    u = x.reshape(len(x), -1).astype(np.float64)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    d2 = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)
    out = {}
    for a in range(len(x)):
        others = np.array([b for b in range(len(x)) if b != a])
        order = others[np.lexsort((others, d2[a, others]))][:k]
        for b in order:
            cos = 1.0 - d2[a, b] / 2.0
            if cos >= threshold and a < b:
                out[(a, int(b))] = cos
    return out


def as_dict(frame) -> dict[tuple[int, int], float]:
    return {(int(a[2:]), int(b[2:])): c for a, b, c in frame[["sample_id_a", "sample_id_b", "cosine"]].values}


def planted(rng: np.random.Generator, n: int, shape: tuple[int, ...], groups: int, size: int,
            noise: float) -> np.ndarray:
    x = rng.uniform(size=(n, *shape)).astype(np.float32)
    for _ in range(groups):
        src = rng.integers(n)
        for j in rng.choice(n, size, replace=False):
            if j != src:
                x[j] = np.clip(x[src] * rng.uniform(0.9, 1.1) + rng.normal(scale=noise, size=shape), 0, None)
    return x


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 20, 13), (64,)])
def test_filter_never_increases_a_distance(shape):
    """The filter map has operator norm exactly 1: its largest singular value (brute force) is 1, so
    ‖F u − F v‖ ≤ ‖u − v‖ for every pair, and equality is reached."""
    filt = _Filter(shape, 256)
    dim = int(np.prod(shape))
    eye = np.eye(dim, dtype=np.float32)
    mat = np.concatenate([filt(eye[i:i + 512]) for i in range(0, dim, 512)]).T  # (filter dim, dim)
    assert mat.shape[0] == filt.dim <= max(256, dim if filt.identity else 0)
    assert np.linalg.norm(mat.astype(np.float64), 2) == pytest.approx(1.0, abs=1e-5)
    if not filt.identity:
        assert filt.dim < dim


@pytest.mark.parametrize("seed,shape,k", [(0, (3, 32, 32), 5), (1, (1, 28, 28), 3), (2, (3, 20, 13), 5)])
def test_pairs_equal_the_brute_force_definition(seed, shape, k):
    rng = np.random.default_rng(seed)
    x = planted(rng, 300, shape, groups=25, size=4, noise=0.02)
    ids = np.array([f"r:{i}" for i in range(len(x))], dtype=object)
    got = near_duplicates(x, ids, threshold=0.995, k=k, device="cpu", batch=64)
    want = brute_force(x, 0.995, k)
    assert len(want) > 30  # the planted groups are found
    assert as_dict(got).keys() == want.keys()
    for key, cos in as_dict(got).items():
        assert cos == pytest.approx(want[key], abs=1e-6)
    assert got.attrs["filter_values"] < int(np.prod(shape)) and got.attrs["truncated_rows"] == 0


def test_a_block_of_identical_images_needs_no_long_search():
    """60 copies of one image (plus noise rows): each copy's k nearest are other copies at distance 0, ties broken
    by row index, exactly as the brute-force definition; the search stops without reaching the candidate cap."""
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(200, 3, 16, 16)).astype(np.float32)
    x[100:160] = x[7]
    ids = np.array([f"r:{i}" for i in range(len(x))], dtype=object)
    got = near_duplicates(x, ids, threshold=0.999, k=4, device="cpu", max_candidates=64, filter_values=48)
    assert as_dict(got).keys() == brute_force(x, 0.999, 4).keys()
    assert got.attrs["truncated_rows"] == 0


def test_more_candidates_than_the_cap_are_counted_not_hidden():
    """Rows whose filter-space neighbours within the radius outnumber ``max_candidates`` without settling the k
    nearest are counted in ``truncated_rows``; with the cap raised the result equals the brute force."""
    rng = np.random.default_rng(9)
    base = rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)
    x = np.repeat(base, 80, axis=0) + rng.normal(scale=0.01, size=(80, 3, 16, 16)).astype(np.float32)
    ids = np.array([f"r:{i}" for i in range(len(x))], dtype=object)
    small = near_duplicates(x, ids, threshold=0.99, k=10, device="cpu", max_candidates=4, filter_values=12)
    assert small.attrs["truncated_rows"] > 0
    full = near_duplicates(x, ids, threshold=0.99, k=10, device="cpu", max_candidates=4096, filter_values=12)
    assert full.attrs["truncated_rows"] == 0
    assert as_dict(full).keys() == brute_force(x, 0.99, 10).keys()


def test_bad_threshold_is_refused():
    from core.errors import ScoreError

    with pytest.raises(ScoreError, match="threshold"):
        near_duplicates(np.zeros((4, 1, 4, 4), np.float32), np.arange(4), threshold=1.5)
