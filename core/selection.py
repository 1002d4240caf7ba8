"""Dataset summarisation: pick a budget of rows that keeps as much informativeness as possible.

Pure numpy (no torch, no streamlit). Three methods, all returning row indices (positions in ``table``) in the
order they were chosen, so that the first ``k`` rows of a selection are themselves a selection of budget ``k``
for ``top`` and ``diversity``:

``top``
    The ``budget`` rows with the highest ``score`` (NaN last, ties broken by row order).
``class_balanced``
    The budget is split across classes in proportion to their size (largest-remainder rounding, at least one
    row per class while the budget allows); inside each class the rows with the highest ``score`` are kept.
``diversity``
    Informativeness-weighted greedy k-center over L2-normalised embeddings. With weights
    ``w_i = 0.1 + 0.9 * rank_pct(score_i)`` the greedy step adds the row maximising ``w_i * d(e_i, S)``, where
    ``d(e_i, S)`` is the distance from row ``i`` to the nearest row already selected (the first pick is the
    most informative row). This greedily minimises the weighted covering radius
    ``max_i w_i * min_{j in S} ||e_i - e_j||``: every informative region of the embedding keeps a nearby
    representative, and among equally uncovered rows the more informative one wins. Cost O(budget * n * d).

``informativeness_curve`` gives the share of the total informativeness kept by the first ``k`` rows of an
order, for every ``k``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Method = Literal["top", "class_balanced", "diversity"]
METHODS: tuple[str, ...] = ("top", "class_balanced", "diversity")


def resolve_budget(n: int, budget: int | float) -> int:
    """Number of rows for ``budget``: an int is a count; a float in (0, 1) is a fraction of ``n``.

    The result is clipped to ``[0, n]``.
    """
    if isinstance(budget, (float, np.floating)) and 0 < float(budget) < 1:
        k = int(round(float(budget) * n))
    else:
        k = int(budget)
    if k < 0:
        raise ValueError(f"budget must be non-negative, got {budget}")
    return min(k, n)


def _score_values(table: pd.DataFrame, score: str) -> np.ndarray:
    if score not in table.columns:
        raise ValueError(f"score column {score!r} is not in the table")
    return pd.to_numeric(table[score], errors="coerce").to_numpy(dtype=np.float64)


def _descending(values: np.ndarray) -> np.ndarray:
    """Row positions sorted by value, highest first, NaN last, stable for ties."""
    key = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-key, kind="stable")
    nan_last = np.isnan(values[order])
    return np.concatenate([order[~nan_last], order[nan_last]])


def _rank_pct(values: np.ndarray) -> np.ndarray:
    """Percentile rank in (0, 1] (NaN -> 0)."""
    out = np.zeros(len(values))
    ok = ~np.isnan(values)
    if ok.any():
        out[ok] = pd.Series(values[ok]).rank(pct=True, method="average").to_numpy()
    return out


def _top(values: np.ndarray, k: int) -> np.ndarray:
    return _descending(values)[:k]


def _allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` across groups in proportion to ``sizes`` (largest remainder, one each first if possible)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    alloc = np.zeros(len(sizes), dtype=np.int64)
    if k <= 0 or sizes.sum() == 0:
        return alloc
    k = min(k, int(sizes.sum()))
    nonempty = np.flatnonzero(sizes > 0)
    if k >= len(nonempty):
        alloc[nonempty] = 1
    rest = k - int(alloc.sum())
    if rest > 0:
        room = sizes - alloc
        quota = room / room.sum() * rest
        add = np.minimum(np.floor(quota).astype(np.int64), room)
        alloc += add
        left = k - int(alloc.sum())
        frac = np.where(sizes - alloc > 0, quota - np.floor(quota), -1.0)
        for g in np.argsort(-frac, kind="stable"):
            if left <= 0:
                break
            if sizes[g] - alloc[g] > 0:
                alloc[g] += 1
                left -= 1
        while left > 0:  # rounding met a full group: give the rest to any group with room
            g = int(np.flatnonzero(sizes - alloc > 0)[0])
            alloc[g] += 1
            left -= 1
    return alloc


def _class_balanced(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    classes, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    alloc = _allocate(np.array([len(m) for m in members]), k)
    picked = [m[_descending(values[m])[:a]] for m, a in zip(members, alloc, strict=True)]
    chosen = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    # present them most informative first
    return chosen[_descending(values[chosen])].astype(np.int64)


def _diversity(values: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    n = len(values)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must have shape ({n}, d), got {emb.shape}")
    emb = np.nan_to_num(emb)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    sq = np.einsum("ij,ij->i", emb, emb)
    weights = 0.1 + 0.9 * _rank_pct(values)
    first = int(_descending(values)[0])
    chosen = [first]
    dist = np.full(n, np.inf, dtype=np.float64)
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    last = first
    for _ in range(k - 1):
        d2 = sq + sq[last] - 2.0 * (emb @ emb[last])
        dist = np.minimum(dist, np.sqrt(np.maximum(d2, 0.0)))
        gain = np.where(taken, -1.0, weights * dist)
        last = int(np.argmax(gain))
        if taken[last]:
            break
        taken[last] = True
        chosen.append(last)
    return np.asarray(chosen, dtype=np.int64)


def summarize(table: pd.DataFrame, embeddings: np.ndarray | None, budget: int | float, method: str,
              score: str = "si_function", seed: int = 0, label_column: str = "label") -> np.ndarray:
    """Row positions of a summary of ``table`` under ``budget`` (count, or fraction in (0, 1)).

    Args:
        table: one row per sample with the ``score`` column (and ``label_column`` for ``class_balanced``).
        embeddings: float (n, d) features aligned with ``table`` rows (needed for ``diversity`` only).
        budget: number of rows, or a fraction of the rows when a float strictly between 0 and 1.
        method: ``top``, ``class_balanced`` or ``diversity`` (see the module docstring for the objectives).
        score: the informativeness column (higher = more informative).
        seed: breaks exact ties in ``diversity`` reproducibly (rows are visited in a seeded permutation).
        label_column: the class column used by ``class_balanced``.

    Returns:
        int64 array of distinct row positions, in selection order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    n = len(table)
    k = resolve_budget(n, budget)
    values = _score_values(table, score)
    if n == 0 or k == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "top":
        return _top(values, k).astype(np.int64)
    if method == "class_balanced":
        if label_column not in table.columns:
            raise ValueError(f"class_balanced needs the {label_column!r} column")
        return _class_balanced(values, table[label_column].astype(str).to_numpy(), k)
    if embeddings is None:
        raise ValueError("diversity-aware selection needs the run's embeddings")
    perm = np.random.default_rng(seed).permutation(n)
    picked = _diversity(values[perm], np.asarray(embeddings)[perm], k)
    return perm[picked].astype(np.int64)


def informativeness_curve(table: pd.DataFrame, order: np.ndarray, score: str) -> np.ndarray:
    """Share of the table's total informativeness kept by the first ``k`` rows of ``order``, k = 1..len(order).

    Informativeness is the ``score`` column shifted to be non-negative (``s - min(s)`` when it has negative
    values) with NaN counted as 0. Returns a float array in [0, 1], non-decreasing, of length ``len(order)``.
    """
    values = _score_values(table, score)
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return np.zeros(len(order))
    lo = finite.min()
    shifted = np.nan_to_num(values - min(lo, 0.0), nan=0.0)
    total = shifted.sum()
    if total <= 0:
        return np.zeros(len(order))
    kept = np.cumsum(shifted[np.asarray(order, dtype=np.int64)])
    return np.clip(kept / total, 0.0, 1.0)
