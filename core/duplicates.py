"""Near-duplicate pairs: images whose L2-normalised pixel vectors have cosine similarity ≥ a threshold τ.

**What is reported.** For every row a, its ``k`` nearest rows b (Euclidean distance between unit pixel vectors
u, i.e. largest cosine) whose cosine is ≥ τ; a pair is listed once, as (a, b) with a before b. Since
‖u_a − u_b‖² = 2 − 2 cos(a, b), "cosine ≥ τ" is "‖u_a − u_b‖ ≤ r" with r² = 2(1 − τ), and the k nearest rows
within r are exactly the rows that are both among the k nearest and within r.

**How, in memory that does not hold n pixel vectors.** Two stages, exact (for an exact index):

1. *Filter.* A linear map F with operator norm ≤ 1 sends each unit vector to a short vector
   f = F u (each channel block-averaged to an s × s grid with C·s² ≤ ``filter_values``, divided by the
   averaging map's operator norm ‖M_h‖₂‖M_w‖₂, computed exactly). Then ‖f_a − f_b‖ ≤ ‖u_a − u_b‖: a pair
   within r in pixel space is within r in filter space. Only the n short vectors are indexed
   (``core.knn``: flat below 100,000 rows, HNSW above), 243 values per RGB row instead of 3,072 at 32×32.
2. *Verify.* Each row's filter-space neighbours within r are checked with their exact pixel-space distance
   (rows re-read from the image store a batch at a time). A row asks the filter index for more neighbours (×4
   each round) until the last one returned is farther than r, or its k nearest verified rows are no farther
   than that last filter distance (every row not yet returned is at least that far in pixel space, since
   ‖f_a − f_b‖ ≤ ‖u_a − u_b‖), or ``max_candidates`` is reached (counted in ``truncated_rows``; a block of
   thousands of identical images stops at the second rule at once).

Images with more than ``max_values`` values (C·H·W) are compared as average-pooled thumbnails (each channel
pooled to the largest s × s grid with C·s² ≤ ``max_values``, 3 × 36 × 36 for RGB): that thumbnail *is* the
pixel space above. MNIST- and CIFAR-size images are compared pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from core.errors import ScoreError

DUP_MAX_VALUES = 4096  # pixel values per image compared; larger images are pooled first
FILTER_VALUES = 256  # values per row in the filter index
FIRST_CANDIDATES = 16  # filter-space neighbours asked for first
MAX_CANDIDATES = 4096  # most filter-space neighbours one row may be verified against
PAIR_CHUNK = 2048  # (query, candidate) pairs whose pixel difference is held at once


def _bins(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix with the bins of ``torch.nn.functional.adaptive_avg_pool1d``."""
    m = np.zeros((out, size), np.float64)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class _Filter:
    """f = (M_h ⊗ M_w) u / (‖M_h‖₂‖M_w‖₂) per channel: a map of operator norm exactly 1 to ≤ ``values`` values."""

    def __init__(self, chw: tuple[int, ...], values: int) -> None:
        from core.pooling import pooled_shape

        self.identity = len(chw) != 3 or int(np.prod(chw)) <= values
        if self.identity:
            self.dim = int(np.prod(chw))
            return
        c, h, w = chw
        _, s, t = pooled_shape((c, h, w), values)
        mh, mw = _bins(h, s), _bins(w, t)
        scale = 1.0 / (np.linalg.norm(mh, 2) * np.linalg.norm(mw, 2))
        self.mh, self.mw = (mh * scale).astype(np.float32), mw.astype(np.float32)
        self.chw, self.dim = (c, h, w), c * s * t

    def __call__(self, u: np.ndarray) -> np.ndarray:
        if self.identity:
            return u
        x = u.reshape(len(u), *self.chw)
        f = np.einsum("sh,bchw,tw->bcst", self.mh, x, self.mw, optimize=True)
        return np.ascontiguousarray(f.reshape(len(u), -1), dtype=np.float32)


def _pair_dist2(uq: np.ndarray, q: np.ndarray, c: np.ndarray, unit: Callable[[np.ndarray], np.ndarray],
                chunk: int) -> np.ndarray:
    """‖u_q − u_c‖² (summed in float64) for pairs (query-batch row ``q``, store row ``c``), reading the candidate
    rows ``chunk`` distinct rows at a time."""
    out = np.empty(len(q), np.float64)
    order = np.argsort(c, kind="stable")
    rows, first = np.unique(c[order], return_index=True)
    bounds = np.append(first, len(order))
    for s in range(0, len(rows), chunk):
        uc = unit(rows[s:s + chunk])
        block = order[bounds[s]:bounds[min(s + chunk, len(rows))]]
        for p in range(0, len(block), PAIR_CHUNK):  # bounded memory however many pairs a block holds
            sel = block[p:p + PAIR_CHUNK]
            diff = uq[q[sel]] - uc[np.searchsorted(rows[s:s + chunk], c[sel])]
            out[sel] = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    return out


def unit_reader(images: np.ndarray, max_values: int = DUP_MAX_VALUES) -> Callable[[np.ndarray], np.ndarray]:
    """``read(rows)``: the compared vectors of ``rows`` of ``images`` (an array or an image store; a run of
    consecutive rows is read as one slice), float32 ``(len(rows), d)``: pooled to ``max_values`` values when
    larger (module docstring), flattened and scaled to unit L2 norm (a zero image stays 0)."""
    import torch

    from core.pooling import pool_spatial

    pooled = len(images.shape) == 4 and int(np.prod(images.shape[1:])) > max_values

    def read(rows: np.ndarray) -> np.ndarray:
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

    return read


def near_duplicates(images: np.ndarray, sample_id: np.ndarray, *, threshold: float = 0.995, k: int = 5,
                    device: str = "auto", batch: int = 4096, max_values: int = DUP_MAX_VALUES,
                    filter_values: int = FILTER_VALUES, max_candidates: int = MAX_CANDIDATES) -> pd.DataFrame:
    """Pairs (a, b), a before b, with cosine ≥ ``threshold`` among each row's ``k`` nearest rows (module
    docstring). ``images`` (an array or an :class:`~core.data.image_store.ImageStore`) is read a batch of rows
    at a time. Memory: the filter index (n × ≤ ``filter_values`` float32) plus one batch; the frame's
    ``attrs`` record ``filter_values``, ``index`` and ``truncated_rows``."""
    from core.device import rows_per_batch
    from core.knn import choose_index, index_from_batches, use_gpu
    from core.pooling import pooled_shape

    if not 0.0 < threshold <= 1.0:
        raise ScoreError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    n = len(images)
    empty = pd.DataFrame(columns=["sample_id_a", "sample_id_b", "cosine"])
    k = min(k, n - 1)
    if k < 1:
        return empty
    shape = tuple(int(v) for v in images.shape[1:])
    cmp_shape = pooled_shape(shape, max_values) if len(shape) == 3 else shape
    filt = _Filter(cmp_shape, filter_values)
    batch = min(int(batch), rows_per_batch(shape, cap=int(batch), budget_values=1 << 26))
    r2 = 2.0 * (1.0 - float(threshold))
    unit = unit_reader(images, max_values)
    gpu = use_gpu(device)
    kind = choose_index(n, gpu)
    index = index_from_batches(n, filt.dim, lambda rows: filt(unit(rows)), gpu and kind != "hnsw", kind, 2 * k,
                               batch)
    cap = max(1, min(int(max_candidates), n - 1))
    pairs: list[tuple[int, int, float]] = []
    truncated = 0
    for s in range(0, n, batch):
        rows = np.arange(s, min(n, s + batch))
        uq = unit(rows)
        fq = filt(uq)
        todo = np.arange(len(rows))
        want = min(FIRST_CANDIDATES, cap)
        while len(todo):
            dist, idx = index.search(fq[todo], want + 1)  # squared L2; +1 for the row itself
            own = idx == rows[todo][:, None]
            near = (idx >= 0) & ~own & (dist <= r2)
            qi, cj = np.nonzero(near)
            d2 = _pair_dist2(uq, todo[qi], idx[qi, cj], unit, batch)
            keep = d2 <= r2
            qi, cand, d2 = qi[keep], idx[qi, cj][keep], d2[keep]
            order = np.lexsort((cand, d2, qi))  # per row: nearest first, ties by row index
            qi, cand, d2 = qi[order], cand[order], d2[order]
            start = np.searchsorted(qi, np.arange(len(todo)))
            end = np.searchsorted(qi, np.arange(len(todo)), side="right")
            # the farthest filter distance returned bounds every unseen row's pixel distance from below
            last = np.where(idx[:, -1] >= 0, dist[:, -1], np.inf)
            nverified = end - start
            kth = np.where(nverified >= k, d2[np.minimum(start + k - 1, len(d2) - 1)] if len(d2) else np.inf,
                           np.inf)
            settled = (last > r2) | (kth <= last) | (want >= n - 1)  # nothing unseen can enter the k nearest
            done = settled | (want >= cap)
            truncated += int((done & ~settled).sum())
            for t in np.flatnonzero(done):
                a = int(rows[todo[t]])
                for j in range(start[t], min(end[t], start[t] + k)):
                    if a < int(cand[j]):
                        pairs.append((a, int(cand[j]), 1.0 - float(d2[j]) / 2.0))
            todo = todo[~done]
            want = min(cap, want * 4)
    out = pd.DataFrame([(sample_id[a], sample_id[b], c) for a, b, c in pairs],
                       columns=["sample_id_a", "sample_id_b", "cosine"])
    out = out.sort_values(["cosine", "sample_id_a", "sample_id_b"], ascending=[False, True, True],
                          ignore_index=True) if len(out) else empty
    out.attrs.update(filter_values=int(filt.dim), index=kind, truncated_rows=truncated)
    return out
