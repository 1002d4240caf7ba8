"""Feature-space products of a run: the 2-D map, kNN uniqueness, stored neighbours, near-duplicate pairs.

- Map: UMAP (McInnes et al., 2018) of the penultimate features, seeded; ``method="pca"`` is a fast
  deterministic fallback (tests use it: UMAP's first fit in a process pays ~1 min of numba compilation).
- ``uniqueness``: mean Euclidean distance to the k nearest other rows in feature space (faiss, exact), a kNN
  density baseline: isolated samples score high (cf. Sorscher et al., "Beyond neural scaling laws", 2022).
- Near-duplicates: pairs whose L2-normalised pixel vectors have cosine similarity ≥ a threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def neighbors(features: np.ndarray, k: int = 10, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest other rows of every row: (Euclidean distances (n, k), row indices (n, k))."""
    k = min(k, len(features) - 1)
    return knn(features, features, k, exclude_self=True, device=device)


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
                    device: str = "auto") -> pd.DataFrame:
    """Pairs (a, b), a before b, with cosine similarity ≥ ``threshold`` between their pixel vectors."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(k, len(x) - 1)
    if k < 1:
        return pd.DataFrame(columns=["sample_id_a", "sample_id_b", "cosine"])
    d, idx = knn(x, x, k, exclude_self=True, device=device)
    cos = 1.0 - d.astype(np.float64) ** 2 / 2.0  # ‖a−b‖² = 2 − 2cos for unit vectors
    rows = []
    for i, j in zip(*np.nonzero(cos >= threshold), strict=True):
        a, b = int(i), int(idx[i, j])
        if a < b:
            rows.append((sample_id[a], sample_id[b], float(cos[i, j])))
    return pd.DataFrame(rows, columns=["sample_id_a", "sample_id_b", "cosine"]).sort_values(
        "cosine", ascending=False, ignore_index=True)
