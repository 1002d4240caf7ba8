"""Smooth unique information (SI) of every training sample, for the linearized network.

Source: H. Harutyunyan, A. Achille, G. Paolini, O. Majumder, A. Ravichandran, R. Bhotika, S. Soatto,
"Estimating informativeness of samples with Smooth Unique Information", ICLR 2021 (sections 3–4).

The linearized network around w₀ (Lee et al., NeurIPS 2019) is f_w(x) = f₀(x) + J(x)(w − w₀), with J the
Jacobian of the k outputs w.r.t. the chosen parameters and Θ(x, x') = J(x)J(x')ᵀ its empirical NTK
(``core.ntk``). Training it on S = {(xᵢ, yᵢ)} with the loss

    L(w) = ½ Σᵢ ‖f_w(xᵢ) − yᵢ‖² + (λ/2)‖w − w₀‖²       (yᵢ one-hot; ±1 when the network has one output)

by gradient flow with learning rate η for time t has the closed form (A = Θ + λI, E_t = exp(−ηAt),
r = f₀(X) − Y stacked as an (n·k)-vector, row i·k + j):

    α = −A⁻¹(I − E_t) r,     w_t − w₀ = Jᵀα,     f_t(x) = f₀(x) + Θ(x, X) α        (t = ∞: α = −A⁻¹r).

Leaving sample i out gives α₋ᵢ on the other n−1 samples; with Δαᵢ = α − pad(α₋ᵢ) (zeros in block i):

    si_weights(i)  = ‖w − w₋ᵢ‖² / (2σ²) = Δαᵢᵀ Θ Δαᵢ / (2σ²)
                     (the paper's ½(w−w₋ᵢ)ᵀΣ⁻¹(w−w₋ᵢ) with Σ = σ²I: the KL between N(w, Σ) and N(w₋ᵢ, Σ));
    si_function(i) = (1/(2σ²)) · mean over held-out x of ‖f(x) − f₋ᵢ(x)‖²,   f(x) − f₋ᵢ(x) = Θ(x, X) Δαᵢ.

Closed-form leave-one-out (no retraining, no per-sample pass over the data):

- kernel path, t = ∞: with B = A⁻¹ and its k×k diagonal blocks B_ii, the block-inverse (Schur complement)
  identity A₋ᵢ⁻¹ = B₋ᵢ₋ᵢ − B₋ᵢ,ᵢ B_ii⁻¹ B_ᵢ,₋ᵢ gives pad(α₋ᵢ) = α − B[:, i] cᵢ with cᵢ = B_ii⁻¹ αᵢ, i.e.
  Δαᵢ = B[:, i] cᵢ, and the leave-one-out residual f₋ᵢ(xᵢ) − yᵢ = −cᵢ. One inverse, O((nk)³) once, then
  O(n²k²) for ‖Δw‖² and O(n²mk²) for the m held-out inputs (Θ(X_val, X) D with D = [Δα₁ … Δαₙ]).
- kernel path, finite t: there is no block identity for the matrix exponential, so every A₋ᵢ is
  eigendecomposed: exact, O(n·(nk)³) — meant for small n (tests, the fidelity bench).
- feature path (Θ ≈ G Gᵀ, G = JΩ ∈ R^{nk×d} from ``core.ntk.jacobian_features``, or the exact Jacobian when
  the parameter set is small): the same problem is ridge regression in d dimensions, u = Gᵀα, with
  H = GᵀG + λI, u = −H⁻¹(I − e^{−ηtH})Gᵀr. At t = ∞ leave-one-out is a rank-k downdate (Woodbury /
  Sherman–Morrison, leverage Lᵢ = GᵢH⁻¹Gᵢᵀ, trained residual eᵢ = rᵢ + Gᵢu):
  Δuᵢ = −H⁻¹Gᵢᵀ(I − Lᵢ)⁻¹eᵢ, LOO residual (I − Lᵢ)⁻¹eᵢ, ‖Δw‖² ≈ ‖Δuᵢ‖², and
  mean‖f − f₋ᵢ‖² = Δuᵢᵀ(G_valᵀG_val)Δuᵢ / m: O(nk·d²) once, then O(n·d²) — 50 000 samples fit in memory.
  Finite t in the feature path eigendecomposes every H₋ᵢ: O(n·d³) (refused beyond a few minutes' work).

Accuracy of projections: leave-one-out scores depend on the whole spectrum of Θ + λI, not only its largest
directions, so a plain random projection (d ≪ min(nk, p)) changes them more than it changes Θ entrywise.
Keeping the classifier's Jacobian exact (``projection_exact="last:1"``, the adapter's default; its block is
kron(AAᵀ+1, I) on the penultimate features A) and projecting the rest recovers most of it:
``bench/results/si_demo.md`` reports time, correlation with the exact scores and mislabel-detection AUROC.

λ = 0 at t = ∞ needs a non-singular Θ (a clear ``ScoreError`` otherwise); finite t is defined for λ = 0
(the flow is (1 − e^{−ηta})/a → ηt on null directions).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.errors import ScoreError
from core.ntk import ParamSpec, jacobian_features, model_outputs, ntk_matrix, select_parameters
from core.scores.registry import ScoreContext, ScoreResult

_MAX_KERNEL_ROWS = 6000  # n·k above which the exact path switches to Jacobian features (d = p)
_MAX_FEATURE_DIM = 8192  # p above which exact Jacobian features are too wide for d×d algebra
_MAX_FINITE_T_FLOPS = 5e12  # finite t: one eigendecomposition per sample; refuse jobs beyond ~minutes


@dataclass
class UniqueInfo:
    """Per-training-sample results of ``unique_information`` (numpy, float64).

    si_weights (n,), si_function (n,) (NaN without held-out inputs), residuals (n, k) = f(xᵢ) − yᵢ of the
    trained linearized model, loo_residuals (n, k) = f₋ᵢ(xᵢ) − yᵢ, params (effective λ, t, η, σ...), info.
    """

    si_weights: np.ndarray
    si_function: np.ndarray
    residuals: np.ndarray
    loo_residuals: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------


def make_targets(y: np.ndarray | torch.Tensor, k: int) -> torch.Tensor:
    """Regression targets (n, k) float64: one-hot for k ≥ 2 outputs, ±1 (label 0 → −1, 1 → +1) for k = 1.

    Float targets of shape (n, k) pass through unchanged.
    """
    y = torch.as_tensor(np.asarray(y))
    if y.is_floating_point() and y.dim() == 2:
        if y.shape[1] != k:
            raise ScoreError(f"targets have {y.shape[1]} columns, the network has {k} outputs")
        if not torch.isfinite(y).all():
            raise ScoreError("targets contain NaN or infinite values")
        return y.double()
    if y.dim() != 1:
        raise ScoreError(f"labels must be a vector (n,) or float targets (n, k), got shape {tuple(y.shape)}")
    y = y.long()
    if k == 1:
        if ((y != 0) & (y != 1)).any():
            raise ScoreError("a one-output network takes binary labels 0/1 (targets ±1)")
        return (2.0 * y.double() - 1.0)[:, None]
    if (y < 0).any() or (y >= k).any():
        raise ScoreError(f"labels must lie in [0, {k}), got range [{int(y.min())}, {int(y.max())}]")
    return torch.nn.functional.one_hot(y, k).double()


def _validate(n: int, lam: float, t: float | None, lr: float, sigma: float) -> None:
    if n < 2:
        raise ScoreError(f"leave-one-out needs at least 2 training samples, got {n}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ScoreError(f"lam (weight decay λ) must be finite and >= 0, got {lam}")
    if t is not None and not (t >= 0 and math.isfinite(t)):
        raise ScoreError(f"t (training time) must be >= 0 or None for convergence, got {t}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ScoreError(f"lr (η) must be > 0, got {lr}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ScoreError(f"sigma must be > 0, got {sigma}")


def _flow(ev: torch.Tensor, eta_t: float) -> torch.Tensor:
    """g(a) = (1 − e^{−ηta}) / a elementwise, with its limit ηt at a = 0 (finite-time gradient flow)."""
    small = (ev * eta_t).abs() < 1e-12
    safe = torch.where(small, torch.ones_like(ev), ev)
    return torch.where(small, torch.full_like(ev, eta_t), -torch.expm1(-eta_t * safe) / safe)


def _chol(a: torch.Tensor, what: str, lam: float) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        hint = "set lam > 0 (weight decay) or a finite t" if lam == 0 else "increase lam"
        raise ScoreError(f"{what} is singular or not positive definite (duplicate or degenerate samples?): {hint}")
    return chol


# --------------------------------------------------------------------------------------------------------
# kernel path: Θ (nk × nk) exact
# --------------------------------------------------------------------------------------------------------


def loo_kernel(theta: torch.Tensor, theta_val: torch.Tensor | None, resid: torch.Tensor, *, lam: float,
               t: float | None, lr: float = 1.0) -> dict[str, torch.Tensor]:
    """Leave-one-out of linearized training from the kernel, for every training sample.

    Args:
        theta: Θ(X, X), (n·k, n·k) float64, row i·k + j (``core.ntk.ntk_matrix`` layout).
        theta_val: Θ(X_val, X), (m·k, n·k), or None.
        resid: r = f₀(X) − Y, (n, k).
        lam, t, lr: λ, training time (None = ∞) and η.

    Returns dict of float64 tensors: ``dw2`` (n,) = ‖w − w₋ᵢ‖², ``df2`` (n,) = mean over the m held-out
    inputs of ‖f(x) − f₋ᵢ(x)‖² (absent without theta_val), ``resid`` (n, k) trained residuals,
    ``loo_resid`` (n, k) = f₋ᵢ(xᵢ) − yᵢ.
    """
    n, k = resid.shape
    r = resid.reshape(-1)
    if t is None:
        delta, alpha, loo_resid = _loo_kernel_inf(theta, r, n, k, lam)
    else:
        delta, alpha, loo_resid = _loo_kernel_finite(theta, r, n, k, lam, t * lr)
    out = {"dw2": (delta * (theta @ delta)).sum(0).clamp_min(0),
           "resid": (r + theta @ alpha).reshape(n, k), "loo_resid": loo_resid}
    if theta_val is not None:
        m = theta_val.shape[0] // k
        out["df2"] = (theta_val @ delta).pow(2).sum(0) / m
    return out


def _loo_kernel_inf(theta: torch.Tensor, r: torch.Tensor, n: int, k: int, lam: float):
    """t = ∞: Δαᵢ = B[:, i] B_ii⁻¹ αᵢ from one Cholesky inverse B = (Θ + λI)⁻¹ (block-inverse identity)."""
    a = theta + lam * torch.eye(n * k, dtype=theta.dtype, device=theta.device)
    b = torch.cholesky_inverse(_chol(a, "Θ + λI", lam))
    alpha = -(b @ r)
    idx = torch.arange(n, device=theta.device)
    b4 = b.reshape(n, k, n, k)
    b_ii = b4[idx, :, idx, :]  # (n, k, k) diagonal blocks
    c = torch.linalg.solve(b_ii, alpha.reshape(n, k, 1))[..., 0]  # cᵢ = B_ii⁻¹ αᵢ
    delta = torch.einsum("Nik,ik->Ni", b.reshape(n * k, n, k), c)  # column i: Δαᵢ = B[:, i] cᵢ
    return delta, alpha, -c


def _loo_kernel_finite(theta: torch.Tensor, r: torch.Tensor, n: int, k: int, lam: float, eta_t: float):
    """Finite t: α = −V g(Λ) Vᵀ r for A = VΛVᵀ, and the same for every A₋ᵢ (one eigh per sample)."""
    a = theta + lam * torch.eye(n * k, dtype=theta.dtype, device=theta.device)
    alpha = _flow_solve(a, r, eta_t)
    delta = torch.empty(n * k, n, dtype=theta.dtype, device=theta.device)
    loo_resid = torch.empty(n, k, dtype=theta.dtype, device=theta.device)
    keep_all = torch.arange(n * k, device=theta.device)
    for i in range(n):
        keep = keep_all[(keep_all < i * k) | (keep_all >= (i + 1) * k)]
        alpha_i = torch.zeros_like(alpha)
        alpha_i[keep] = _flow_solve(a[keep][:, keep], r[keep], eta_t)
        delta[:, i] = alpha - alpha_i
        loo_resid[i] = r[i * k:(i + 1) * k] + theta[i * k:(i + 1) * k] @ alpha_i
    return delta, alpha, loo_resid


def _flow_solve(a: torch.Tensor, r: torch.Tensor, eta_t: float) -> torch.Tensor:
    """−A⁻¹(I − e^{−ηtA}) r by eigendecomposition of the symmetric A."""
    ev, vec = torch.linalg.eigh(a)
    return -(vec @ (_flow(ev, eta_t) * (vec.T @ r)))


# --------------------------------------------------------------------------------------------------------
# feature path: Θ ≈ G Gᵀ, d×d algebra
# --------------------------------------------------------------------------------------------------------


def loo_features(g: torch.Tensor, g_val: torch.Tensor | None, resid: torch.Tensor, *, lam: float,
                 t: float | None, lr: float = 1.0, chunk: int = 1024) -> dict[str, torch.Tensor]:
    """Leave-one-out of linearized training in feature space (ridge regression in d dimensions).

    Args:
        g: G (n, k, d) float64, Θ ≈ G Gᵀ. g_val: (m, k, d) or None. resid: r = f₀(X) − Y, (n, k).

    Returns the same keys as ``loo_kernel``.
    """
    n, k, d = g.shape
    gf = g.reshape(n * k, d)
    r = resid.reshape(-1)
    h = gf.T @ gf + lam * torch.eye(d, dtype=g.dtype, device=g.device)
    c_val = None
    if g_val is not None:
        gv = g_val.reshape(-1, d)
        c_val = (gv.T @ gv) / g_val.shape[0]
    if t is None:
        du, loo_resid, u = _loo_features_inf(g, gf, h, r, lam, chunk)
    else:
        du, loo_resid, u = _loo_features_finite(g, h, r, t * lr)
    out = {"dw2": du.pow(2).sum(0), "resid": (r + gf @ u).reshape(n, k), "loo_resid": loo_resid}
    if c_val is not None:
        out["df2"] = (du * (c_val @ du)).sum(0).clamp_min(0)
    return out


def _loo_features_inf(g: torch.Tensor, gf: torch.Tensor, h: torch.Tensor, r: torch.Tensor, lam: float,
                      chunk: int):
    """t = ∞: u = −H⁻¹Gᵀr; Δuᵢ = −H⁻¹Gᵢᵀ(I − Lᵢ)⁻¹eᵢ with Lᵢ = GᵢH⁻¹Gᵢᵀ, eᵢ = rᵢ + Gᵢu (Woodbury)."""
    n, k, d = g.shape
    chol = _chol(h, "GᵀG + λI", lam)
    u = -torch.cholesky_solve((gf.T @ r)[:, None], chol)[:, 0]
    e = (r + gf @ u).reshape(n, k)
    du = torch.empty(d, n, dtype=g.dtype, device=g.device)
    loo_resid = torch.empty(n, k, dtype=g.dtype, device=g.device)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    for s in range(0, n, chunk):
        gi = g[s:s + chunk]  # (b, k, d)
        hg = torch.cholesky_solve(gi.reshape(-1, d).T, chol).T.reshape(len(gi), k, d)  # rows of (H⁻¹Gᵢᵀ)ᵀ
        lev = gi @ hg.transpose(1, 2)  # Lᵢ (b, k, k)
        z = torch.linalg.solve(eye - lev, e[s:s + chunk, :, None])[..., 0]  # (I − Lᵢ)⁻¹eᵢ
        loo_resid[s:s + chunk] = z
        du[:, s:s + chunk] = -torch.einsum("bkd,bk->db", hg, z)
    return du, loo_resid, u


def _loo_features_finite(g: torch.Tensor, h: torch.Tensor, r: torch.Tensor, eta_t: float):
    """Finite t: u = −V g(Λ) Vᵀ Gᵀr for H = VΛVᵀ, and the same for every H₋ᵢ = H − GᵢᵀGᵢ (eigh each)."""
    n, k, d = g.shape
    gf = g.reshape(n * k, d)
    rr = r.reshape(n, k)
    b = gf.T @ r
    u = _flow_solve(h, b, eta_t)
    du = torch.empty(d, n, dtype=g.dtype, device=g.device)
    loo_resid = torch.empty(n, k, dtype=g.dtype, device=g.device)
    for i in range(n):
        gi = g[i]
        u_i = _flow_solve(h - gi.T @ gi, b - gi.T @ rr[i], eta_t)
        du[:, i] = u - u_i
        loo_resid[i] = rr[i] + gi @ u_i
    return du, loo_resid, u


# --------------------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------------------


def unique_information(
    model: nn.Module,
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    x_val: np.ndarray | torch.Tensor | None,
    *,
    lam: float = 1e-3,
    lam_relative: bool = False,
    t: float | None = None,
    lr: float = 1.0,
    sigma: float = 1.0,
    params: ParamSpec = None,
    projection_dim: int | None = None,
    projection: str = "sparse",
    projection_exact: ParamSpec = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    chunk_size: int | None = None,
    progress: Callable[[str, float | None], None] | None = None,
    executor: Any = None,
) -> UniqueInfo:
    """Smooth unique information of every training sample in the weights and in the function.

    Args:
        model: the network f (outputs (batch, k)); linearized at its current weights, in eval mode.
        x_train: (n, ...) inputs; y_train: int labels (n,) -> one-hot (±1 for one output) or float (n, k).
        x_val: held-out inputs (m, ...) for ``si_function`` (None or empty -> NaN).
        lam: weight decay λ; with ``lam_relative`` it is multiplied by mean diag Θ = ‖J‖²_F / (n·k).
        t: training time (None = convergence); lr: η (E_t = exp(−ηAt)); sigma: σ of the SI definitions.
        params: parameter subset of the Jacobian (``core.ntk.select_parameters``).
        projection_dim: use Θ ≈ GGᵀ with d random directions (``projection`` kind, ``seed``); None = exact
            (kernel path when n·k ≤ p and n·k ≤ 6000, else exact Jacobian features when p ≤ 8192).
        projection_exact: parameters kept exact (unprojected) in the projected path, e.g. ``"last:1"`` (the
            classifier, whose block kron(AAᵀ+1, I) carries much of a trained network's kernel).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``; chunk_size: Jacobian chunk (samples).
        executor: a ``core.executors`` executor: the projected Jacobian features are then computed in shards
            of ``JACOBIAN_SHARD_ROWS`` rows by ``core.ntk.jacobian_shard`` on it (Ray tasks when remote);
            None: one call in this process.

    Returns:
        ``UniqueInfo`` with ``si_weights`` = ‖w − w₋ᵢ‖²/(2σ²) and ``si_function`` =
        mean‖f(x) − f₋ᵢ(x)‖²/(2σ²) (Harutyunyan et al., ICLR 2021), plus residuals and leave-one-out
        residuals; ``params`` holds the effective settings.
    """
    say = progress or (lambda msg, frac=None: None)
    dev = resolve_device(device)
    x_train = _as_tensor(x_train, "x_train")
    n = len(x_train)
    _validate(n, lam, t, lr, sigma)
    has_val = x_val is not None and len(x_val) > 0
    xv = _as_tensor(x_val, "x_val") if has_val else None
    names = select_parameters(model, params)
    p = sum(dict(model.named_parameters())[nm].numel() for nm in names)
    f0 = model_outputs(model, x_train, device=dev).double()
    k = f0.shape[1]
    if not torch.isfinite(f0).all():
        raise ScoreError("the network's outputs at the linearization point are not finite")
    y = make_targets(y_train, k).to(dev)
    if len(y) != n:
        raise ScoreError(f"x_train has {n} rows but y_train has {len(y)}")
    resid = f0 - y
    path = _choose_path(n, k, p, projection_dim)
    if t is not None:
        size = n * k if path == "kernel" else min(projection_dim or p, p)
        if n * 9.0 * size**3 > _MAX_FINITE_T_FLOPS:
            raise ScoreError(f"finite t needs one eigendecomposition of a {size}×{size} matrix per sample "
                             f"(n = {n}): too slow; use t=None (training to convergence), fewer samples or a "
                             "smaller projection_dim")
    kw = dict(params=names, device=dev, chunk_size=chunk_size)
    if path == "kernel":
        say("SI: exact NTK of the training set", 0.05)
        theta = ntk_matrix(model, x_train, **kw, progress=lambda f: say("SI: exact NTK", 0.05 + 0.6 * f))
        theta_val = ntk_matrix(model, xv, x_train, **kw) if has_val else None
        lam_eff = lam * float(torch.diagonal(theta).mean()) if lam_relative else lam
        say("SI: closed-form leave-one-out", 0.75)
        out = loo_kernel(theta, theta_val, resid, lam=lam_eff, t=t, lr=lr)
        d = None
    else:
        d = projection_dim
        fkw = dict(kw, projection_dim=projection_dim, projection=projection, seed=seed,
                   exact_params=projection_exact)
        say("SI: Jacobian features of the training set", 0.05)
        if executor is not None:
            g = _sharded_jacobian(executor, model, x_train, k, fkw, dev)
            g_val = _sharded_jacobian(executor, model, xv, k, fkw, dev) if has_val else None
        else:
            g = jacobian_features(model, x_train, **fkw,
                                  progress=lambda f: say("SI: Jacobian features", 0.05 + 0.6 * f)).double()
            g_val = jacobian_features(model, xv, **fkw).double() if has_val else None
        lam_eff = lam * float(g.pow(2).sum() / (n * k)) if lam_relative else lam
        say("SI: closed-form leave-one-out", 0.75)
        out = loo_features(g, g_val, resid, lam=lam_eff, t=t, lr=lr)
        d = g.shape[2]
    say("SI: done", 1.0)
    nan = np.full(n, np.nan)
    classes = np.asarray(y.argmax(1).cpu()) if k > 1 else np.asarray((y[:, 0] > 0).long().cpu())
    counts = np.bincount(classes, minlength=max(k, 2))
    info = {"path": path, "singleton_classes": [int(c) for c in np.flatnonzero(counts == 1)]}
    if not has_val:
        info["note"] = "no held-out inputs: si_function is NaN"
    return UniqueInfo(
        si_weights=(out["dw2"] / (2 * sigma**2)).cpu().numpy(),
        si_function=(out["df2"] / (2 * sigma**2)).cpu().numpy() if has_val else nan,
        residuals=out["resid"].cpu().numpy(),
        loo_residuals=out["loo_resid"].cpu().numpy(),
        params={"lam": lam_eff, "lam_input": lam, "lam_relative": lam_relative, "t": t, "lr": lr,
                "sigma": sigma, "params": names if params is not None else "all", "n_params": p,
                "projection_dim": projection_dim, "projection": projection if projection_dim else None,
                "projection_exact": projection_exact if projection_dim else None,
                "feature_dim": d, "n_train": n, "n_val": len(xv) if has_val else 0, "n_outputs": k},
        info=info,
    )


JACOBIAN_SHARD_ROWS = 1024


def _sharded_jacobian(executor: Any, model: nn.Module, x: torch.Tensor, k: int, fkw: dict[str, Any],
                      dev: torch.device) -> torch.Tensor:
    """Jacobian features (n, k, d) float64 from shards of rows mapped on ``executor`` (a remote one gets a CPU
    copy of the network and the device by name)."""
    from functools import partial

    from core.executors import shard_bounds
    from core.ntk import jacobian_shard

    kw = dict(fkw, device="cuda" if dev.type == "cuda" else str(dev))
    net = copy.deepcopy(model).cpu() if getattr(executor, "remote", False) else model
    out = executor.map_batches(partial(jacobian_shard, **kw), shard_bounds(len(x), JACOBIAN_SHARD_ROWS),
                               shared=(net, x.cpu().numpy()), gpu=dev.type == "cuda")
    return torch.as_tensor(out, device=dev).double().reshape(len(x), k, -1)


def _as_tensor(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ScoreError(f"{what} contains NaN or infinite values")
    return x


def _choose_path(n: int, k: int, p: int, projection_dim: int | None) -> str:
    """'kernel' (exact nk×nk algebra), or 'features' (d×d algebra: projected, or exact Jacobian if p small)."""
    if projection_dim is not None:
        return "features"
    if n * k <= min(p, _MAX_KERNEL_ROWS):
        return "kernel"
    if p <= _MAX_FEATURE_DIM:
        return "features"
    if n * k <= _MAX_KERNEL_ROWS:
        return "kernel"
    raise ScoreError(f"exact SI for n·k = {n * k} rows and p = {p} parameters does not fit in memory: "
                     "set projection_dim (e.g. 1024) or a smaller parameter set (params)")


# --------------------------------------------------------------------------------------------------------
# the pipeline adapter
# --------------------------------------------------------------------------------------------------------

NETWORK_DEFAULTS: dict[str, Any] = {
    "method": "network",
    "lam": 1e-3,
    "lam_relative": True,
    "t": None,
    "lr": 1.0,
    "sigma": 1.0,
    "params": None,
    "projection_dim": 1024,
    "projection": "sparse",
    "projection_exact": "last:1",
    "linearize_at": "trained",
    "max_val": 500,
    "chunk_size": None,
}


def _linearization_model(ctx: ScoreContext, where: str) -> nn.Module:
    """The network to linearize: the trained one, the same architecture at init, or a local checkpoint."""
    if where == "trained":
        return ctx.model
    from core.models.nets import load_weights

    net = copy.deepcopy(ctx.model)
    if where == "init":
        net.load_state_dict(ctx.init_state)
    else:
        load_weights(net, where)
    return net.eval()


def adapter(ctx: ScoreContext) -> ScoreResult:
    """``si_weights`` and ``si_function`` for the train rows (NaN for test rows).

    ``method = "head"`` (the default): the paper's quantity for a stated algorithm: a wide two-layer ReLU head
    trained for a finite time on features that did not see the row (cross-fitted, or a pretrained network
    at w₀), exact kernel, exact closed-form leave-one-out (``core.scores.si_crossfit``).
    ``method = "network"``: the whole trained network linearized at its trained weights (``network_adapter``),
    an approximation kept for comparison (``bench/results/si_default.md`` measures its error).
    """
    method = str((ctx.params or {}).get("method", "head"))
    if method == "head":
        from core.scores.si_crossfit import head_adapter

        return head_adapter(ctx, dict(ctx.params or {}))
    if method != "network":
        raise ScoreError(f"unknown SI method {method!r}: 'head' (default) or 'network'")
    return network_adapter(ctx)


def network_adapter(ctx: ScoreContext) -> ScoreResult:
    """SI of the whole trained network linearized at its trained weights (an approximation; see ``adapter``).

    Held-out inputs: the test rows that are not injected adversarial copies (at most ``max_val``, seeded
    subsample), or the train rows when the run has no test split. Defaults: λ = 10⁻³ · mean diag Θ,
    t = ∞, all parameters, linearized at the trained weights; the classifier's Jacobian exact and every
    other parameter CountSketch-projected to d = 1024 (``bench/results/si_demo.md`` measures this against the
    exact kernel: time, correlation, and mislabel detection).
    """
    unknown = sorted(set(ctx.params or {}) - set(NETWORK_DEFAULTS))
    if unknown:
        raise ScoreError(f"unknown SI parameter(s) {unknown} for method 'network'; known: {', '.join(NETWORK_DEFAULTS)}")
    prm = {**NETWORK_DEFAULTS, **(ctx.params or {})}
    t = prm["t"]
    t = None if t in (None, "inf", "none", "None", float("inf")) else float(t)
    proj = prm["projection_dim"]
    proj = None if proj in (None, 0, "none", "None", "exact") else int(proj)
    n_all = len(ctx.data.labels)
    tr = ctx.train_idx
    adv = np.asarray(ctx.data.is_adversarial, dtype=bool)
    val = np.array([i for i in ctx.test_idx if not adv[i]], dtype=int)
    val_source = "test"
    if len(val) == 0:
        val, val_source = tr, "train"
    rng = np.random.default_rng(ctx.seed)
    if prm["max_val"] and len(val) > int(prm["max_val"]):
        val = np.sort(rng.choice(val, int(prm["max_val"]), replace=False))
    model = _linearization_model(ctx, str(prm["linearize_at"]))
    images = ctx.data.images
    res = unique_information(
        model, images[tr], ctx.data.labels[tr], images[val],
        lam=float(prm["lam"]), lam_relative=bool(prm["lam_relative"]), t=t, lr=float(prm["lr"]),
        sigma=float(prm["sigma"]), params=prm["params"], projection_dim=proj, projection=str(prm["projection"]),
        projection_exact=prm["projection_exact"], seed=ctx.seed, device=ctx.device, chunk_size=prm["chunk_size"],
        progress=ctx.progress, executor=ctx.extra.get("executor"),
    )
    cols = {name: np.full(n_all, np.nan) for name in ("si_weights", "si_function")}
    cols["si_weights"][tr] = res.si_weights
    cols["si_function"][tr] = res.si_function
    params = {**res.params, "method": "network", "linearize_at": str(prm["linearize_at"]), "max_val": prm["max_val"],
              "eta": res.params["lr"], "val_source": val_source}
    info = {**res.info, "val_source": val_source,
            "loo_residual_norm_mean": float(np.linalg.norm(res.loo_residuals, axis=1).mean())}
    return ScoreResult(columns=cols, params=params, info=info)
