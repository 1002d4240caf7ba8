"""Feature-space products of a run: the 2-D map, kNN uniqueness, stored neighbours, near-duplicate pairs.

- Map: UMAP (McInnes et al., 2018) of the penultimate features, seeded; ``method="pca"`` is a fast
  deterministic fallback (tests use it: UMAP's first fit in a process pays ~1 min of numba compilation).
  Above ``MAP_MAX_FIT`` rows the map is fitted on a seeded sample and the other rows are transformed.
- ``uniqueness``: mean Euclidean distance to the k nearest other rows in feature space (faiss, exact), a kNN
  density baseline: isolated samples score high (cf. Sorscher et al., "Beyond neural scaling laws", 2022).
- Near-duplicates: pairs whose L2-normalised pixel vectors have cosine similarity ≥ a threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.errors import ScoreError
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


DUP_MAX_VALUES = 4096  # pixel values per image compared by near_duplicates; larger images are pooled first


def near_duplicates(images: np.ndarray, sample_id: np.ndarray, *, threshold: float = 0.995, k: int = 5,
                    device: str = "auto", batch: int = 16384, max_values: int = DUP_MAX_VALUES) -> pd.DataFrame:
    """Pairs (a, b), a before b, with cosine similarity ≥ ``threshold`` between their pixel vectors, among each
    row's ``k`` nearest rows. ``images`` (an array or an :class:`~core.data.image_store.ImageStore`) is read
    a batch of rows at a time (unit vectors computed per row, exactly as for the whole array); the faiss index
    holds the n unit pixel vectors, nothing else grows with n.

    Images with more than ``max_values`` values (C·H·W) are compared as average-pooled thumbnails: each channel
    pooled to the largest s × s grid with C·s² ≤ ``max_values`` (3 × 36 × 36 for RGB). MNIST- and CIFAR-size
    images are compared pixel for pixel; a 224×224 photo's 150,528 values would make the index 600 kB per row."""
    import torch

    from core.device import rows_per_batch
    from core.knn import knn_self_batches
    from core.pooling import pool_spatial, pooled_shape

    n = len(images)
    k = min(k, n - 1)
    if k < 1:
        return pd.DataFrame(columns=["sample_id_a", "sample_id_b", "cosine"])
    shape = tuple(int(v) for v in images.shape[1:])
    dim = int(np.prod(shape))
    pooled = len(shape) == 3 and dim > max_values
    if pooled:
        dim = int(np.prod(pooled_shape(shape, max_values)))
    batch = min(int(batch), rows_per_batch(shape, cap=int(batch), budget_values=1 << 26))

    def unit(rows: np.ndarray) -> np.ndarray:
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
            x = images[int(rows[0]):int(rows[-1]) + 1]
        else:
            x = images[rows]
        x = np.asarray(x, dtype=np.float32)
        if pooled:
            x = pool_spatial(torch.as_tensor(x), max_values).numpy()
        x = x.reshape(len(rows), -1)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if not np.isfinite(x).all():
            raise ScoreError("kNN support contains NaN or infinite values")
        return np.ascontiguousarray(x)

    d, idx = knn_self_batches(unit, n, dim, k, device=device, batch=batch)
    cos = 1.0 - d.astype(np.float64) ** 2 / 2.0  # ‖a−b‖² = 2 − 2cos for unit vectors
    rows = []
    for i, j in zip(*np.nonzero(cos >= threshold), strict=True):
        a, b = int(i), int(idx[i, j])
        if a < b:
            rows.append((sample_id[a], sample_id[b], float(cos[i, j])))
    return pd.DataFrame(rows, columns=["sample_id_a", "sample_id_b", "cosine"]).sort_values(
        "cosine", ascending=False, ignore_index=True)
