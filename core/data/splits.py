"""Train/test splits."""

from __future__ import annotations

import math

import numpy as np

from core.errors import DataError


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded stratified split: an array of ``"train"`` / ``"test"`` strings, one per row.

    Each class puts ``round(test_fraction * count)`` of its rows (drawn uniformly) in the test split, but a
    class with at least two rows always keeps at least one train row, and a single-row class stays in train.
    ``test_fraction=0`` gives all ``"train"``.

    Raises:
        DataError: when ``test_fraction`` is not in [0, 1).
    """
    labels = np.asarray(labels)
    if not math.isfinite(float(test_fraction)) or not 0.0 <= float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    split = np.full(len(labels), "train", dtype=object)
    if test_fraction == 0 or len(labels) == 0:
        return split
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        n_test = min(round(test_fraction * len(rows)), len(rows) - 1)
        if n_test > 0:
            split[rng.choice(rows, size=n_test, replace=False)] = "test"
    return split
