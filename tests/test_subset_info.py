"""core.subset_info: subset information and iterative selection against brute-force re-solving on tiny problems."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InfoscopeError
from core.subset_info import iterative_selection, ridge_loo_si, subset_information


def _problem(n: int = 40, d: int = 3, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centers = rng.normal(size=(k, d)) * 2
    x = centers[labels] + rng.normal(size=(n, d))
    xe = rng.normal(size=(15, d)) * 2
    return x, labels, xe


def _brute_w(x: np.ndarray, labels: np.ndarray, classes: np.ndarray, lam_eff: float) -> np.ndarray:
    """Ridge re-solved from scratch with an explicit inverse."""
    phi = np.hstack([x, np.ones((len(x), 1))])
    y = (labels[:, None] == classes[None, :]).astype(float)
    return np.linalg.inv(phi.T @ phi + lam_eff * np.eye(phi.shape[1])) @ phi.T @ y


def _f(w: np.ndarray, xe: np.ndarray) -> np.ndarray:
    return np.hstack([xe, np.ones((len(xe), 1))]) @ w


def test_subset_information_equals_brute_force() -> None:
    x, labels, xe = _problem()
    keep = np.random.default_rng(1).random(len(x)) < 0.5
    out = subset_information(x, labels, keep, lam=0.5, sigma=0.7, eval_features=xe)
    classes = np.unique(labels)
    lam_eff = 0.5 * np.mean(np.sum(np.hstack([x, np.ones((len(x), 1))]) ** 2, axis=1))
    assert out["lam"] == pytest.approx(lam_eff)
    w_all = _brute_w(x, labels, classes, lam_eff)
    w_kept = _brute_w(x[keep], labels[keep], classes, lam_eff)
    assert out["weights_nats"] == pytest.approx(0.5 * np.sum((w_all - w_kept) ** 2) / 0.49, rel=1e-9)
    f_gap = np.mean(np.sum((_f(w_all, xe) - _f(w_kept, xe)) ** 2, axis=1))
    assert out["function_nats"] == pytest.approx(0.5 * f_gap / 0.49, rel=1e-9)
    assert out["weights_nats_all"] == pytest.approx(0.5 * np.sum(w_all**2) / 0.49, rel=1e-9)
    assert out["n_kept"] == keep.sum() and out["n_removed"] == (~keep).sum()
    # keeping everything loses nothing
    full = subset_information(x, labels, np.ones(len(x), bool), lam=0.5, sigma=0.7, eval_features=xe)
    assert full["weights_nats"] == pytest.approx(0.0, abs=1e-20) and full["function_nats"] == pytest.approx(0.0, abs=1e-20)


def test_loo_si_equals_brute_force() -> None:
    x, labels, xe = _problem(n=25)
    sw, sf = ridge_loo_si(x, labels, lam=0.3, sigma=1.3, eval_features=xe)
    classes = np.unique(labels)
    lam_eff = 0.3 * np.mean(np.sum(np.hstack([x, np.ones((len(x), 1))]) ** 2, axis=1))
    w = _brute_w(x, labels, classes, lam_eff)
    for i in range(len(x)):
        m = np.arange(len(x)) != i
        wi = _brute_w(x[m], labels[m], classes, lam_eff)
        assert sw[i] == pytest.approx(0.5 * np.sum((w - wi) ** 2) / 1.69, rel=1e-8)
        assert sf[i] == pytest.approx(0.5 * np.mean(np.sum((_f(w, xe) - _f(wi, xe)) ** 2, 1)) / 1.69, rel=1e-8)
    # the single-row subset information is the leave-one-out SI
    one = subset_information(x, labels, np.arange(len(x)) != 4, lam=0.3, sigma=1.3, eval_features=xe)
    assert one["weights_nats"] == pytest.approx(sw[4], rel=1e-8)
    assert one["function_nats"] == pytest.approx(sf[4], rel=1e-8)


def test_duplicates_make_information_non_additive() -> None:
    x, labels, xe = _problem(n=40)
    # one distinctive point (far away, its own class) given twice
    x = np.vstack([x, [[8.0, -8.0, 8.0]], [[8.0, -8.0, 8.0]]])
    labels = np.concatenate([labels, [3, 3]])
    n = len(x)
    sw, sf = ridge_loo_si(x, labels, lam=0.05, eval_features=xe)
    both = np.ones(n, bool)
    both[[n - 2, n - 1]] = False
    info = subset_information(x, labels, both, lam=0.05, eval_features=xe)
    # each copy alone is cheap to lose; both together lose far more than the sum of their LOO values
    assert info["weights_nats"] > 20 * (sw[n - 2] + sw[n - 1])
    assert info["function_nats"] > 20 * (sf[n - 2] + sf[n - 1])
    # a single copy (no duplicate) would carry far more leave-one-out information than each duplicate does
    sw1, sf1 = ridge_loo_si(x[:-1], labels[:-1], lam=0.05, eval_features=xe)
    assert sw1[-1] > 20 * sw[n - 1] and sf1[-1] > 20 * sf[n - 1]


def _brute_iterative(x: np.ndarray, labels: np.ndarray, budget: int, step: float, lam_eff: float,
                     xe: np.ndarray) -> list[int]:
    classes = np.unique(labels)
    alive = np.arange(len(x))
    while True:
        w = _brute_w(x[alive], labels[alive], classes, lam_eff)
        si = []
        for j in range(len(alive)):
            m = np.delete(alive, j)
            wj = _brute_w(x[m], labels[m], classes, lam_eff)
            si.append(0.5 * np.mean(np.sum((_f(w, xe) - _f(wj, xe)) ** 2, 1)))
        si = np.array(si)
        if len(alive) <= budget:
            return alive[np.argsort(-si, kind="stable")].tolist()
        drop = min(max(1, int(step * len(alive))), len(alive) - budget)
        alive = np.sort(alive[np.argsort(si, kind="stable")[drop:]])


def test_iterative_selection_equals_brute_force() -> None:
    x, labels, xe = _problem(n=30)
    lam_eff = 0.2 * np.mean(np.sum(np.hstack([x, np.ones((len(x), 1))]) ** 2, axis=1))
    seen: list[tuple[int, int]] = []
    got = iterative_selection(x, labels, 12, step=0.1, lam=0.2, eval_features=xe,
                              progress=lambda a, b: seen.append((a, b)))
    assert got.tolist() == _brute_iterative(x, labels, 12, 0.1, lam_eff, xe)
    assert len(got) == 12 and len(set(got.tolist())) == 12
    assert seen[-1] == (18, 18)
    # one-shot pruning (keep the 12 highest LOO SI of the full pool) generally differs from rescoring
    assert iterative_selection(x, labels, 30, eval_features=xe).shape == (30,)


def test_bad_input_is_one_clear_error() -> None:
    x, labels, _ = _problem()
    with pytest.raises(InfoscopeError, match="one entry per row"):
        subset_information(x, labels, np.ones(3, bool))
    with pytest.raises(InfoscopeError, match="sigma"):
        subset_information(x, labels, np.ones(len(x), bool), sigma=0)
    with pytest.raises(InfoscopeError, match="NaN"):
        subset_information(np.full_like(x, np.nan), labels, np.ones(len(x), bool))
    with pytest.raises(InfoscopeError, match="step"):
        iterative_selection(x, labels, 5, step=1.5)
