"""Feature-space products of a run: the 2-D map, kNN uniqueness, stored neighbours, near-duplicate pairs.

- Map: UMAP (McInnes et al., 2018) of the penultimate features, seeded; ``method="pca"`` is a fast
  deterministic fallback (tests use it: UMAP's first fit in a process pays ~1 min of numba compilation).
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


def map_2d(features: np.ndarray, *, method: str = "umap", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """(n, 2) float32 coordinates of ``features`` by UMAP or PCA."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 3:
        return np.zeros((len(x), 2), np.float32)
    if method == "pca":
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        out = xc @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)
    if method != "umap":
        raise ValueError(f"unknown map method {method!r}: use 'umap' or 'pca'")
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed,
                        n_jobs=1, low_memory=True)
    return reducer.fit_transform(x).astype(np.float32)


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


def near_duplicates(images: np.ndarray, sample_id: np.ndarray, *, threshold: float = 0.995, k: int = 5,
                    device: str = "auto", batch: int = 16384) -> pd.DataFrame:
    """Pairs (a, b), a before b, with cosine similarity ≥ ``threshold`` between their pixel vectors, among each
    row's ``k`` nearest rows. ``images`` (an array or an :class:`~core.data.image_store.ImageStore`) is read
    ``batch`` rows at a time (unit vectors computed per row, exactly as for the whole array); the faiss index
    holds the n unit pixel vectors, nothing else grows with n."""
    from core.knn import knn_self_batches

    n = len(images)
    k = min(k, n - 1)
    if k < 1:
        return pd.DataFrame(columns=["sample_id_a", "sample_id_b", "cosine"])
    dim = int(np.prod(images.shape[1:]))

    def unit(rows: np.ndarray) -> np.ndarray:
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
            x = images[int(rows[0]):int(rows[-1]) + 1]
        else:
            x = images[rows]
        x = np.asarray(x).reshape(len(rows), -1).astype(np.float32)
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
