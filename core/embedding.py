"""Feature-space products of a run: the 2-D map, kNN uniqueness, stored neighbours, near-duplicate pairs.

- Map: UMAP (McInnes et al., 2018) of the penultimate features, seeded; ``method="pca"`` is a fast
  deterministic fallback (tests use it: UMAP's first fit in a process pays ~1 min of numba compilation).
  Above ``MAP_MAX_FIT`` rows the map is fitted on a seeded sample and the other rows are transformed.
- ``uniqueness``: mean Euclidean distance to the k nearest other rows in feature space (faiss, exact), a kNN
  density baseline: isolated samples score high (cf. Sorscher et al., "Beyond neural scaling laws", 2022).
- Near-duplicate pairs: ``core.duplicates``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.knn import knn
from core.scores.registry import ScoreContext, ScoreResult

MAP_MAX_FIT = 50_000  # rows a map is fitted on; beyond, a seeded sample is fitted and the rest transformed


def map_2d(features: np.ndarray, *, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
           max_fit: int | None = MAP_MAX_FIT, batch: int = 50_000) -> np.ndarray:
    """(n, 2) float32 coordinates of ``features`` by UMAP or PCA.

    Bounded time at any n: with more than ``max_fit`` rows the map is fitted on a seeded random sample of
    ``max_fit`` rows and every row is then placed by the fitted map's ``transform`` (UMAP's out-of-sample
    embedding; for PCA the projection on the sample's two principal axes), ``batch`` rows at a time, so the
    fit costs the same at 200,000 rows as at 50,000 and the rest grows linearly."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 3:
        return np.zeros((len(x), 2), np.float32)
    if method not in ("umap", "pca"):
        raise ValueError(f"unknown map method {method!r}: use 'umap' or 'pca'")
    fit_rows = np.arange(len(x))
    if max_fit is not None and len(x) > max_fit:
        if max_fit < 3:
            raise ValueError(f"max_fit must be at least 3, got {max_fit}")
        fit_rows = np.sort(np.random.default_rng(seed).choice(len(x), int(max_fit), replace=False))
    sample = x[fit_rows]
    if method == "pca":
        mean = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
        axes = vt[:2].T

        def place(rows: np.ndarray) -> np.ndarray:
            out = (rows - mean) @ axes
            return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    else:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(sample) - 1), random_state=seed,
                            n_jobs=1, low_memory=True)
        fitted = reducer.fit_transform(sample)
        if len(fit_rows) == len(x):
            return fitted.astype(np.float32)
        place = reducer.transform
    out = np.empty((len(x), 2), np.float32)
    for s in range(0, len(x), batch):
        out[s:s + batch] = place(x[s:s + batch])
    if method == "umap":
        out[fit_rows] = fitted  # the fitted rows keep their own embedding
    return out


def neighbors(features: np.ndarray, k: int = 10, device: str = "auto", *,
              executor: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest other rows of every row: (Euclidean distances (n, k), row indices (n, k)); the query
    shards are searched on ``executor`` (``core.executors``; default this process)."""
    k = min(k, len(features) - 1)
    return knn(features, features, k, exclude_self=True, device=device, executor=executor)


def uniqueness(features: np.ndarray, k: int = 10, device: str = "auto") -> np.ndarray:
    """Mean Euclidean distance to the k nearest other rows (higher = more isolated)."""
    d, _ = neighbors(features, k, device)
    return d.mean(1)


def uniqueness_adapter(ctx: ScoreContext) -> ScoreResult:
    k = int(ctx.params.get("k", 10))
    dist = ctx.extra.get("neighbor_dist")
    if dist is None or dist.shape[1] < k:
        dist, _ = neighbors(ctx.embeddings, k, str(ctx.device))
    return ScoreResult({"uniqueness": dist[:, :k].mean(1)}, {"k": k, "space": "penultimate features"})
