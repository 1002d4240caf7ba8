"""k-nearest-neighbour search (faiss), shared by prediction depth, flags and the uniqueness baseline.

``knn(query, support, k)`` returns, for every query row, the ``k`` support rows with the smallest Euclidean
distance ‖q − s‖₂ (nearest first; ties in an unspecified order). The index is chosen by the support size
(``index="auto"``): below ``APPROX_MIN_ROWS`` (100,000) rows a flat index (``IndexFlatL2``: exact, no
training); above it an approximate one, HNSW on CPU (``IndexHNSWFlat``, M = 32, efSearch = max(128, 2k);
Malkov & Yashunin, 2018) or IVF on GPU (``IndexIVFFlat``, nlist ≈ 4√n trained by k-means on a seeded sample,
nprobe = 32). ``index="flat" | "hnsw" | "ivf"`` forces one. A GPU index is used only when
``faiss.get_num_gpus() > 0`` (the ``faiss-gpu`` build) and ``device`` allows it; otherwise the CPU index runs.
Approximate neighbours agree with exact ones on tests and are recorded as such by callers that care.

Self-matches: when the query rows are (some of) the support rows, a point must not be its own neighbour
(a k-NN probe or a density estimate that counts the point itself is biased). ``exclude_self=True`` says
query row ``i`` *is* support row ``i``; ``self_index[i]`` says more generally which support row query ``i`` is
(−1 for none). The search then asks for ``k + 1`` neighbours and drops the row's own index wherever it
appears (not merely the first hit, which may be an exact duplicate of the point).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import numpy as np

from core.errors import ScoreError

Metric = Literal["l2", "cosine"]


def _as_float32(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    a = a.reshape(len(a), -1)
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ScoreError(f"kNN {name} contains NaN or infinite values")
    return a


def _normalize(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, 1e-12)


def use_gpu(device: str | None) -> bool:
    import faiss

    if device is not None and str(device).startswith("cpu"):
        return False
    return getattr(faiss, "get_num_gpus", lambda: 0)() > 0


APPROX_MIN_ROWS = 100_000
IndexKind = Literal["auto", "flat", "hnsw", "ivf"]


def choose_index(n: int, gpu: bool, kind: IndexKind = "auto") -> str:
    """The index for ``n`` support rows: ``flat`` below :data:`APPROX_MIN_ROWS`, else ``ivf`` on GPU, ``hnsw`` on CPU."""
    if kind != "auto":
        if kind not in ("flat", "hnsw", "ivf"):
            raise ValueError(f"unknown index {kind!r}: auto, flat, hnsw or ivf")
        return kind
    if n < APPROX_MIN_ROWS:
        return "flat"
    return "ivf" if gpu else "hnsw"


def index_for(n: int, device: str | None = "auto") -> str:
    """The index :func:`knn` builds for ``n`` support rows on ``device`` (for the manifest)."""
    return choose_index(n, use_gpu(device))


def _build_index(support: np.ndarray, gpu: bool, kind: str = "flat", k: int = 10):
    import faiss

    n, d = support.shape
    if kind == "hnsw":  # CPU only in faiss
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(128, 2 * k)
        index.add(support)
        return index
    if kind == "ivf":
        nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        sample = support
        if n > 256 * nlist:
            sample = support[np.sort(np.random.default_rng(0).choice(n, 256 * nlist, replace=False))]
        index.train(sample)
        index.nprobe = min(nlist, 32)
        if gpu:
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
            index._infoscope_res = res
        index.add(support)
        return index
    index = faiss.IndexFlatL2(d)
    if gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
        index._infoscope_res = res  # keep the resources alive as long as the index
    index.add(support)
    return index


def search_shard(bounds: tuple[int, int], index, query: np.ndarray, k: int,
                 gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows of query rows ``[lo, hi)``: the unit of a sharded search on every executor.
    ``index`` is a faiss index, or its bytes (``faiss.serialize_index``, as a remote executor ships it), read
    back here (onto the GPU when ``gpu``)."""
    lo, hi = bounds
    if isinstance(index, np.ndarray):
        import faiss

        index = faiss.deserialize_index(index)
        if gpu:
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
            index._infoscope_res = res
    return index.search(query[lo:hi], k)


def _search(index, query: np.ndarray, k: int, batch: int, executor=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_shard` over shards of ``batch`` query rows, in this process or on ``executor``
    (``core.executors``): the same shards either way, so the same neighbours."""
    from core.executors import shard_bounds

    bounds = shard_bounds(len(query), batch)
    if executor is not None and executor.remote:
        import faiss

        gpu = hasattr(index, "getDevice")
        blob = faiss.serialize_index(faiss.index_gpu_to_cpu(index) if gpu else index)
        parts = executor.map(partial(search_shard, k=k, gpu=gpu), bounds, shared=(blob, query), gpu=gpu)
    else:
        parts = [search_shard(b, index, query, k) for b in bounds]
    dists = np.empty((len(query), k), dtype=np.float32)
    idx = np.empty((len(query), k), dtype=np.int64)
    for (lo, hi), (d, i) in zip(bounds, parts, strict=True):
        dists[lo:hi], idx[lo:hi] = d, i
    return dists, idx


def exact_distances(q: np.ndarray, s: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances ‖q_i − s_j‖² of the found neighbours j = ``idx[i]``, recomputed in float64 from the
    float32 rows (faiss computes ‖q‖² + ‖s‖² − 2q·s with BLAS, whose rounding depends on the batch and the
    thread count, so the same neighbours came back with distances that differ in the 6th digit between a
    2-thread process and 1-thread Ray workers), and each row re-sorted nearest first (ties by index).
    Missing hits (−1) keep +inf and stay last. Returns ``(float32 squared distances, idx)``."""
    d2 = np.full(idx.shape, np.inf, dtype=np.float64)
    step = max(1, chunk // max(1, idx.shape[1]))
    for lo in range(0, len(idx), step):
        rows = idx[lo:lo + step]
        ok = rows >= 0
        diff = q[lo:lo + step, None, :].astype(np.float64) - s[np.where(ok, rows, 0)]  # exact differences
        part = np.einsum("ijk,ijk->ij", diff, diff)
        d2[lo:lo + step] = np.where(ok, part, np.inf)
    order = np.lexsort((idx, d2), axis=-1)
    return (np.take_along_axis(d2, order, axis=1).astype(np.float32),
            np.take_along_axis(idx, order, axis=1))


def _drop_self(dists: np.ndarray, idx: np.ndarray, self_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own support index from its k+1 hits, keeping the first k of the rest."""
    is_self = idx == self_index[:, None]
    # rows where the point itself was not retrieved (many exact duplicates): drop the last hit instead
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    # exactly one True per row is removed only if self appears once; cap to k kept entries per row
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dists, order, axis=1), np.take_along_axis(idx, order, axis=1)


def knn(
    query: np.ndarray,
    support: np.ndarray,
    k: int,
    exclude_self: bool = False,
    *,
    self_index: np.ndarray | None = None,
    metric: Metric = "l2",
    device: str | None = "auto",
    batch: int = 16384,
    index: IndexKind = "auto",
    executor=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest support rows of every query row (exact below 100,000 support rows, see the module doc).

    Args:
        query: (m, ...) array, flattened to (m, d).
        support: (n, ...) array, flattened to (n, d).
        k: neighbours per query (``1 ≤ k ≤ n`` minus one when self-matches are excluded).
        exclude_self: query row i is support row i (``query`` is ``support``); never return it.
        self_index: (m,) int, the support row each query row is (−1 for none); overrides ``exclude_self``.
        metric: ``"l2"`` (Euclidean) or ``"cosine"`` (Euclidean between L2-normalised rows,
            ‖a−b‖ = √(2 − 2 cos(a, b)), which orders neighbours by cosine similarity).
        device: ``"cpu"`` forces the CPU index; anything else uses a GPU index when faiss sees a GPU.
        batch: query rows per faiss call (bounds the result memory).
        index: ``"auto"`` (by support size), or force ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"``.
        executor: where the ``batch``-row query shards are searched (``core.executors``; None: here).

    Returns:
        ``(distances, indices)``: float32 (m, k) Euclidean distances, nearest first, and int64 (m, k) support
        row indices.
    """
    q = _as_float32(query, "query")
    s = _as_float32(support, "support")
    if q.shape[1] != s.shape[1]:
        raise ScoreError(f"kNN query has {q.shape[1]} features, support has {s.shape[1]}")
    if metric == "cosine":
        q, s = _normalize(q), _normalize(s)
    elif metric != "l2":
        raise ValueError(f"unknown metric {metric!r}: use 'l2' or 'cosine'")
    if exclude_self and self_index is None:
        if len(q) != len(s):
            raise ValueError("exclude_self=True needs query and support to be the same rows")
        self_index = np.arange(len(q))
    drop = self_index is not None
    available = len(s) - (1 if drop else 0)
    if k < 1 or k > available:
        raise ScoreError(f"kNN needs 1 ≤ k ≤ {available} (support of {len(s)} rows), got k={k}")
    gpu = use_gpu(device)
    kind = choose_index(len(s), gpu, index)
    built = _build_index(s, gpu and kind != "hnsw", kind, k + 1)
    dists, idx = _search(built, q, k + 1 if drop else k, batch, executor)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if len(short):  # an approximate index found fewer than k rows for these queries: search them exactly
        dists[short], idx[short] = _search(_build_index(s, gpu, "flat"), q[short], idx.shape[1], batch)
    dists, idx = exact_distances(q, s, idx)
    if drop:
        dists, idx = _drop_self(dists, idx, np.asarray(self_index, dtype=np.int64), k)
    return np.sqrt(np.maximum(dists, 0.0)), idx


def index_from_batches(n: int, d: int, read: Callable[[np.ndarray], np.ndarray], gpu: bool, kind: str, k: int,
                        batch: int):
    """:func:`_build_index` over rows given by ``read(rows) -> float32 (len(rows), d)``, added ``batch`` rows at a
    time: the index holds the vectors, the caller never does."""
    import faiss

    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(128, 2 * k)
    elif kind == "ivf":
        nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        sample = np.arange(n)
        if n > 256 * nlist:
            sample = np.sort(np.random.default_rng(0).choice(n, 256 * nlist, replace=False))
        index.train(read(sample))
        index.nprobe = min(nlist, 32)
    else:
        index = faiss.IndexFlatL2(d)
    if gpu and kind != "hnsw":
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
        index._infoscope_res = res
    for s in range(0, n, batch):
        index.add(read(np.arange(s, min(n, s + batch))))
    return index


def knn_self_batches(read: Callable[[np.ndarray], np.ndarray], n: int, d: int, k: int, *,
                     device: str | None = "auto", batch: int = 16384,
                     index: IndexKind = "auto") -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` of every row against all rows, itself excluded (``exclude_self=True``), for rows that are
    read in batches: ``read(rows)`` returns their float32 ``(len(rows), d)`` vectors (finite). Same index choice,
    same query batches, hence the same result as ``knn(x, x, k, exclude_self=True)`` on ``x = read(all rows)``
    for the exact index; memory is the index plus one batch."""
    if k < 1 or k > n - 1:
        raise ScoreError(f"kNN needs 1 ≤ k ≤ {n - 1} (support of {n} rows), got k={k}")
    gpu = use_gpu(device)
    kind = choose_index(n, gpu, index)
    built = index_from_batches(n, d, read, gpu and kind != "hnsw", kind, k + 1, batch)
    dists = np.empty((n, k + 1), dtype=np.float32)
    idx = np.empty((n, k + 1), dtype=np.int64)
    for s in range(0, n, batch):
        rows = np.arange(s, min(n, s + batch))
        dists[rows], idx[rows] = built.search(read(rows), k + 1)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if len(short):  # an approximate index found fewer than k rows for these queries: search them exactly
        exact = index_from_batches(n, d, read, gpu, "flat", k + 1, batch)
        for s in range(0, len(short), batch):
            rows = short[s:s + batch]
            dists[rows], idx[rows] = exact.search(read(rows), k + 1)
    dists, idx = _drop_self(dists, idx, np.arange(n, dtype=np.int64), k)
    return np.sqrt(np.maximum(dists, 0.0)), idx


def knn_vote(neighbour_labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of k neighbours' labels (rows ordered nearest first).

    Ties are broken in favour of the tied class whose nearest member is closest.
    Returns ``(predicted class, vote counts (m, n_classes))``.
    """
    m, k = neighbour_labels.shape
    counts = np.zeros((m, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(m), k), neighbour_labels.ravel()), 1)
    # tie-break bonus in (0, 1): larger for classes that appear earlier in the ranking
    first = np.full((m, n_classes), k, dtype=np.int64)
    ranks = np.broadcast_to(np.arange(k), (m, k))
    np.minimum.at(first, (np.repeat(np.arange(m), k), neighbour_labels.ravel()), ranks.ravel())
    score = counts + (k - first) / (k + 1.0)
    return score.argmax(axis=1), counts
