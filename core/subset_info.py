"""Information a *set* of samples carries, for a ridge head on the run's embeddings (closed forms, no retraining).

Setting. Features φᵢ ∈ ℝᵈ (the run's ``embeddings.npy``) are extended by a constant 1 (bias): φ̃ᵢ ∈ ℝᵈ⁺¹. A
linear head with MSE to the one-hot label yᵢ ∈ ℝᴷ and weight decay λ is the ridge solution

    w(S) = A(S)⁻¹ B(S),   A(S) = Σ_{i∈S} φ̃ᵢφ̃ᵢᵀ + λI,   B(S) = Σ_{i∈S} φ̃ᵢyᵢᵀ          ((d+1)×(d+1) algebra).

Following the smooth unique information of Harutyunyan, Achille, Paolini, Majumder, Ravichandran, Bhotika,
Soatto, "Estimating informativeness of samples with Smooth Unique Information", ICLR 2021 (Gaussian
smoothing of the weights / outputs with variance σ²), the information that the removed rows R = P \\ S carry
about the head trained on the pool P is

    I_w(R) = ½ ‖w(P) − w(S)‖²_F / σ²                                        (weights, nats)
    I_f(R) = ½ · mean_x ‖f_P(x) − f_S(x)‖² / σ²,  f_S(x) = w(S)ᵀx̃            (function, nats, held-out x)

This is *not* a sum of per-sample scores: two identical duplicates each have a small leave-one-out value (the
other copy still carries it) but removing both loses much more than the sum. For one row the same formula is
the leave-one-out SI, in closed form by Sherman–Morrison:

    w(P) − w(P\\{i}) = A⁻¹φ̃ᵢ rᵢᵀ / (1 − hᵢ),   rᵢ = yᵢ − w(P)ᵀφ̃ᵢ,   hᵢ = φ̃ᵢᵀA⁻¹φ̃ᵢ,

so SI_w(i) = ½‖A⁻¹φ̃ᵢ‖²‖rᵢ‖²/((1−hᵢ)²σ²) and SI_f(i) = ½ (A⁻¹φ̃ᵢ)ᵀM(A⁻¹φ̃ᵢ)‖rᵢ‖²/((1−hᵢ)²σ²) with
M = mean_x x̃x̃ᵀ. ``iterative_selection`` uses it to summarise by repeated pruning: remove the lowest-SI 5% of
what is left, rescore the rest in closed form, repeat (the project's evidence: rescoring after each step is what
keeps SI pruning working at high pruning rates).

λ is ``lam`` × mean ‖φ̃ᵢ‖² over the pool when ``lam_relative`` (the prior then weighs like ``lam`` average rows);
it is fixed by the pool, so every subset is fitted by the same algorithm. All algebra is float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.errors import InfoscopeError


def _design(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise InfoscopeError(f"features must be a 2-D array (n, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InfoscopeError("features contain NaN or infinite values")
    return np.hstack([x, np.ones((len(x), 1))])


def _one_hot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, inv = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    y = np.zeros((len(inv), len(classes)))
    y[np.arange(len(inv)), inv] = 1.0
    return y, classes


def effective_lambda(phi: np.ndarray, lam: float, lam_relative: bool) -> float:
    """λ itself, or ``lam`` × mean squared norm of the (bias-extended) rows."""
    if not (np.isfinite(lam) and lam > 0):
        raise InfoscopeError(f"lam must be finite and > 0, got {lam}")
    return float(lam * np.mean(np.einsum("ij,ij->i", phi, phi))) if lam_relative and len(phi) else float(lam)


def ridge_weights(phi: np.ndarray, y: np.ndarray, lam_eff: float) -> np.ndarray:
    """w = (ΦᵀΦ + λI)⁻¹ΦᵀY for bias-extended rows Φ (n, d+1) and targets Y (n, K)."""
    a = phi.T @ phi + lam_eff * np.eye(phi.shape[1])
    return np.linalg.solve(a, phi.T @ y)


def _second_moment(eval_features: np.ndarray | None, phi: np.ndarray) -> np.ndarray:
    xe = phi if eval_features is None or len(eval_features) == 0 else _design(eval_features)
    return xe.T @ xe / max(len(xe), 1)


def subset_information(features: np.ndarray, labels: np.ndarray, keep_mask: np.ndarray, *, lam: float = 1.0,
                       sigma: float = 1.0, eval_features: np.ndarray | None = None,
                       lam_relative: bool = True) -> dict[str, Any]:
    """Information the removed rows carry about the ridge head of the pool (see the module docstring).

    Args:
        features: (n, d) embeddings of the pool P (every row the summary could choose from).
        labels: (n,) class of each row (one-hot MSE targets).
        keep_mask: (n,) bool, True for the kept subset S.
        lam: weight decay λ (relative to mean ‖φ̃‖² when ``lam_relative``).
        sigma: σ of the smoothing, in the units of the outputs; the results are in nats for this σ.
        eval_features: (m, d) inputs x of the functional version (held-out rows); the pool when None.

    Returns:
        dict with ``weights_nats`` = ½‖w(P) − w(S)‖²/σ², ``function_nats`` = ½ mean_x‖f_P(x) − f_S(x)‖²/σ²,
        the same two for S = ∅ (``weights_nats_all``, ``function_nats_all``: w(∅) = 0, what the whole pool
        carries), ``n_kept``, ``n_removed``, ``lam`` (effective λ) and ``sigma``.
    """
    phi = _design(features)
    keep = np.asarray(keep_mask, dtype=bool)
    if keep.shape != (len(phi),) or len(labels) != len(phi):
        raise InfoscopeError(f"features ({len(phi)} rows), labels ({len(labels)}) and keep_mask "
                             f"({keep.shape}) must have one entry per row")
    if not (np.isfinite(sigma) and sigma > 0):
        raise InfoscopeError(f"sigma must be finite and > 0, got {sigma}")
    y, _ = _one_hot(labels)
    lam_eff = effective_lambda(phi, lam, lam_relative)
    w_all = ridge_weights(phi, y, lam_eff)
    w_kept = ridge_weights(phi[keep], y[keep], lam_eff)
    m = _second_moment(eval_features, phi)
    s2 = 2.0 * sigma**2

    def quad(dw: np.ndarray) -> tuple[float, float]:
        return float(np.sum(dw * dw) / s2), float(np.trace(dw.T @ m @ dw) / s2)

    wn, fn = quad(w_all - w_kept)
    wn0, fn0 = quad(w_all)
    return {"weights_nats": wn, "function_nats": fn, "weights_nats_all": wn0, "function_nats_all": fn0,
            "n_kept": int(keep.sum()), "n_removed": int((~keep).sum()), "lam": lam_eff, "sigma": float(sigma)}


def ridge_loo_si(features: np.ndarray, labels: np.ndarray, *, lam: float = 1.0, sigma: float = 1.0,
                 eval_features: np.ndarray | None = None, lam_relative: bool = True,
                 lam_eff: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out SI of every row for the ridge head (Sherman–Morrison, see the module docstring).

    Returns ``(si_weights, si_function)``, each (n,) in nats. ``lam_eff`` overrides λ (used by the iterative
    selection, whose λ is fixed by the whole pool).
    """
    phi = _design(features)
    y, _ = _one_hot(labels)
    lam_e = effective_lambda(phi, lam, lam_relative) if lam_eff is None else float(lam_eff)
    m = _second_moment(eval_features, phi)
    return _loo(phi, y, lam_e, m, sigma)


def _loo(phi: np.ndarray, y: np.ndarray, lam_eff: float, m: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    a = phi.T @ phi + lam_eff * np.eye(phi.shape[1])
    u = np.linalg.solve(a, phi.T).T  # rows A⁻¹φ̃ᵢ
    w = u.T @ y  # A⁻¹ΦᵀY
    r2 = np.sum((y - phi @ w) ** 2, axis=1)
    h = np.einsum("ij,ij->i", u, phi)
    scale = r2 / np.maximum(1.0 - h, 1e-12) ** 2 / (2.0 * sigma**2)
    return np.einsum("ij,ij->i", u, u) * scale, np.einsum("ij,jk,ik->i", u, m, u) * scale


def iterative_selection(features: np.ndarray, labels: np.ndarray, budget: int, *, step: float = 0.05,
                        which: str = "function", lam: float = 1.0, sigma: float = 1.0,
                        eval_features: np.ndarray | None = None, lam_relative: bool = True,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Keep ``budget`` rows by repeated pruning: drop the lowest-SI ``step`` share of what is left, rescore.

    Each round computes the leave-one-out SI (``which`` = ``"function"`` or ``"weights"``) of the remaining
    rows for the ridge head fitted on them (closed form, λ fixed by the whole pool), removes the
    ``max(1, ⌊step·m⌋)`` lowest (never going below ``budget``) and repeats. Returns the kept row positions,
    highest final SI first.
    """
    if which not in ("function", "weights"):
        raise InfoscopeError(f"which must be 'function' or 'weights', got {which!r}")
    if not 0 < step < 1:
        raise InfoscopeError(f"step must be in (0, 1), got {step}")
    phi = _design(features)
    y, _ = _one_hot(labels)
    n = len(phi)
    k = max(0, min(int(budget), n))
    lam_e = effective_lambda(phi, lam, lam_relative)
    m = _second_moment(eval_features, phi)
    alive = np.arange(n)
    col = 1 if which == "function" else 0
    while True:
        si = _loo(phi[alive], y[alive], lam_e, m, sigma)[col]
        if len(alive) <= k:
            return alive[np.argsort(-si, kind="stable")]
        drop = min(max(1, int(step * len(alive))), len(alive) - k)
        order = np.argsort(si, kind="stable")
        alive = np.sort(alive[order[drop:]])
        if progress is not None:
            progress(n - len(alive), n - k)
