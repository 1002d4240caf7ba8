"""Small pure-numpy statistics for the charts (no scipy in the dashboard)."""

from __future__ import annotations

import numpy as np


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic D = sup |F_a − F_b| and its asymptotic p-value.

    NaNs are dropped. The p-value uses the Kolmogorov distribution with Stephens' small-sample correction
    ``λ = (√n_e + 0.12 + 0.11/√n_e)·D``, ``n_e = n_a n_b / (n_a + n_b)``. Returns (nan, nan) if a side is empty.
    """
    a = np.sort(np.asarray(a, dtype=np.float64)[~np.isnan(a)])
    b = np.sort(np.asarray(b, dtype=np.float64)[~np.isnan(b)])
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    allv = np.concatenate([a, b])
    fa = np.searchsorted(a, allv, side="right") / a.size
    fb = np.searchsorted(b, allv, side="right") / b.size
    d = float(np.max(np.abs(fa - fb)))
    ne = a.size * b.size / (a.size + b.size)
    lam = (np.sqrt(ne) + 0.12 + 0.11 / np.sqrt(ne)) * d
    if lam < 1e-3:
        return d, 1.0
    k = np.arange(1, 101)
    p = 2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * (k * lam) ** 2))
    return d, float(np.clip(p, 0.0, 1.0))


def points_in_polygon(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Whether each point (x, y) lies inside the polygon with vertices (px, py) (even–odd ray casting: a
    horizontal ray from the point crosses the boundary an odd number of times)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    inside = np.zeros(x.shape, dtype=bool)
    if len(px) < 3:
        return inside
    for i in range(len(px)):
        x1, y1, x2, y2 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xc)
    return inside
