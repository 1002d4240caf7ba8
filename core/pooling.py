"""Average pooling of image-like maps to a budget of values per row (large images and feature maps).

A map (C, H, W) with more than ``max_values`` values is average-pooled over space to the largest s × s grid with
C·s² ≤ ``max_values`` (each side at most its own size, 1×1 at least: global average pooling). Used where every
row of a large-image run must fit a fixed width: prediction depth's k-NN probes and near-duplicate search.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pooled_shape(chw: tuple[int, int, int], max_values: int) -> tuple[int, int, int]:
    """The (C, h, w) a (C, H, W) map is pooled to (itself when C·H·W ≤ ``max_values``)."""
    c, h, w = (int(v) for v in chw)
    if c * h * w <= max_values:
        return c, h, w
    side = max(1, math.isqrt(max(int(max_values) // c, 1)))
    return c, min(h, side), min(w, side)


def pool_spatial(x: torch.Tensor, max_values: int) -> torch.Tensor:
    """(b, C, H, W) average-pooled to ``pooled_shape`` (returned as is when it already fits)."""
    c, h, w = pooled_shape(tuple(x.shape[1:]), max_values)
    if (h, w) == tuple(x.shape[2:]):
        return x
    return F.adaptive_avg_pool2d(x, (h, w))
