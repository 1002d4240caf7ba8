"""Smooth unique information of a *linear* head on frozen features, exact at any n in (d+1)×(d+1) algebra.

Source: H. Harutyunyan, A. Achille, G. Paolini, O. Majumder, A. Ravichandran, R. Bhotika, S. Soatto,
"Estimating informativeness of samples with Smooth Unique Information", ICLR 2021: SI of a network fine-tuned
from w₀ and linearized at w₀, trained for a finite time t on the MSE loss. For a linear head the network *is*
its linearization, and its NTK is exactly kron(Φ̃Φ̃ᵀ, I_k): nothing is approximated, and since the kernel has
rank d+1 every quantity has a primal form whose cost is linear in n (the wide ReLU head of
``core.scores.si_head`` needs n×n algebra, so above ``max_problem`` rows the default SI uses this head).

The training algorithm: features φ̃ᵢ ∈ ℝᴰ (D = d+1; ``si_head.prepare_features``: standardised on the
problem's and held-out rows, scaled by 1/√d, a constant 1 appended), weights W ∈ ℝᴰˣᵏ from W₀ = 0 (f₀ = 0),
gradient flow on L(W) = ½Σᵢ‖Wᵀφ̃ᵢ − yᵢ‖² + (λ/2)‖W‖² (yᵢ one-hot) for time t:

    W(t) = g_t(C + λI) B,   C = Σᵢ φ̃ᵢφ̃ᵢᵀ,   B = Σᵢ φ̃ᵢyᵢᵀ,   g_t(a) = (1 − e^{−ηta})/a

(the dual form of ``si_head.solve_alpha`` with Θ = Φ̃Φ̃ᵀ, by the push-through identity). ηt is chosen by early
stopping on the held-out MSE, as for the ReLU head.

Leave-one-out, exact. With the contour quadrature of ``si_head.flow_poles``, g_t(a) = Σ_q β_q/(a + p_q), so
W = Σ_q β_q R_q B with R_q = (C + (λ + p_q)I)⁻¹. Removing row i downdates C by φ̃ᵢφ̃ᵢᵀ and B by φ̃ᵢyᵢᵀ;
Sherman–Morrison gives

    R_q B − R_q⁽ⁱ⁾(B − φ̃ᵢyᵢᵀ) = −R_qφ̃ᵢ ρ_{q,i}ᵀ / (1 − h_{q,i}),
    h_{q,i} = φ̃ᵢᵀR_qφ̃ᵢ,   ρ_{q,i} = (R_qB)ᵀφ̃ᵢ − yᵢ,

so ΔWᵢ = W − W₋ᵢ = −Σ_q β_q R_qφ̃ᵢ ρ_{q,i}ᵀ/(1 − h_{q,i}). In the eigenbasis C = U diag(c) Uᵀ every R_q is
diagonal, so all n changes cost O(n·Q·D·k) after one D×D eigendecomposition, and

    si_weights(i)  = ‖ΔWᵢ‖²_F / (2σ²)                                   [nats]
    si_function(i) = mean over held-out x of ‖ΔWᵢᵀφ̃(x)‖² / (2σ²)         [nats]

(KL divergences between the Gaussian-smoothed weight / output distributions, the paper's eqs. 4–5). A *set*
S is left out by re-solving with C − Σ_S φ̃φ̃ᵀ and B − Σ_S φ̃yᵀ (its unique information, not a sum of its rows'
scores). ``retrain_without`` re-solves without given rows by a fresh eigendecomposition with the exact g_t (no
quadrature, no rank-one identity): ``tests/test_si_linear.py`` checks ``linear_head_loo`` against it and against
the dual ``si_head.head_loo`` with the linear kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from core.errors import ScoreError
from core.scores.si_head import HeadLOO, flow_filter, flow_poles, prepare_features

_BATCH = 1024  # rows per block of the leave-one-out (memory: batch · Q · D complex numbers)


def linear_design(x: np.ndarray, xv: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Φ̃ of the training rows and of the held-out rows: standardised over both together (fixed preprocessing,
    so leaving a row out does not change the features), scaled by 1/√d, bias column appended."""
    return prepare_features(np.concatenate([x, xv]) if len(xv) else x, x, xv.reshape(-1, x.shape[1]))[1:]


def _check(phi: torch.Tensor, y: torch.Tensor, lam: float, eta_t: float | None) -> None:
    if phi.ndim != 2 or y.ndim != 2 or len(phi) != len(y):
        raise ScoreError(f"features {tuple(phi.shape)} and targets {tuple(y.shape)} do not match")
    if len(phi) < 2:
        raise ScoreError(f"leave-one-out needs at least 2 training rows, got {len(phi)}")
    if not (lam >= 0 and math.isfinite(lam)) or (eta_t is None and lam <= 0):
        raise ScoreError(f"λ must be ≥ 0 (and > 0 when t = ∞), got {lam}")


def _eig(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c, u = torch.linalg.eigh(phi.T @ phi)
    return c.clamp_min(0.0), u


def solve_weights(phi: torch.Tensor, y: torch.Tensor, *, lam: float, eta_t: float | None,
                  eig: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The trained head W(t) = g_t(C + λI) Φ̃ᵀY, (D, k) float64."""
    c, u = eig if eig is not None else _eig(phi)
    g = torch.as_tensor(flow_filter((c + lam).numpy(), eta_t), dtype=torch.float64)
    return u @ (g[:, None] * (u.T @ (phi.T @ y)))


def choose_time_linear(phi: torch.Tensor, phiv: torch.Tensor, y: torch.Tensor, yv: torch.Tensor, *, lam: float,
                       grid: np.ndarray | None = None,
                       eig: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[float, list[tuple[float, float]]]:
    """Early stopping in closed form: the ηt on a log grid minimising the held-out MSE of the linear head.
    Returns (ηt, [(ηt, held-out MSE), ...]).

    The default grid follows the spectrum of C + λI (its eigenvalues grow with n): 25 points from
    ηt = 0.1/a_max (hardly trained) to 100/a_min (converged in every direction)."""
    c, u = eig if eig is not None else _eig(phi)
    a = (c + lam).numpy()
    grid = time_grid(a) if grid is None else np.asarray(grid, dtype=np.float64)
    bt = (u.T @ (phi.T @ y)).numpy()
    pv = (phiv @ u).numpy()
    yvn = yv.numpy()
    path = []
    for s in grid:
        pred = pv @ (flow_filter(a, float(s))[:, None] * bt)
        path.append((float(s), float(((pred - yvn) ** 2).sum(1).mean())))
    return min(path, key=lambda p: p[1])[0], path


def time_grid(a: np.ndarray, points: int = 25) -> np.ndarray:
    """ηt from 0.1/max(a) to 100/min(a) (a > 0: eigenvalues of C + λI), log-spaced."""
    a = np.asarray(a, dtype=np.float64)
    top = float(a.max())
    low = float(a[a > 1e-12 * top].min()) if top > 0 else 1.0
    return np.logspace(math.log10(0.1 / top), math.log10(100.0 / low), points)


def _val_factor(phiv: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor | None:
    """F with ‖F Ẽ‖²_F = mean over held-out x of ‖(UẼ)ᵀφ̃(x)‖²: Φ̃_v U / √m, or a D×D factor when m > D."""
    if phiv is None or len(phiv) == 0:
        return None
    pv = (phiv @ u) / math.sqrt(len(phiv))
    if len(pv) <= pv.shape[1]:
        return pv
    s, v = torch.linalg.eigh(pv.T @ pv)
    return s.clamp_min(0.0).sqrt()[:, None] * v.T


def linear_head_loo(phi: torch.Tensor, phiv: torch.Tensor | None, y: torch.Tensor, *, lam: float,
                    eta_t: float | None, eig: tuple[torch.Tensor, torch.Tensor] | None = None,
                    batch: int = _BATCH) -> HeadLOO:
    """Every row's exact leave-one-out change of the linear head (see the module docstring).

    Args:
        phi: Φ̃ (n, D) float64 (``linear_design``); phiv: held-out Φ̃ (m, D) or None.
        y: one-hot targets (n, k) float64; lam: λ ≥ 0 (> 0 when t = ∞); eta_t: η·t or None (t = ∞).
        eig: the eigendecomposition (c, U) of C = Φ̃ᵀΦ̃ when already computed.
    Returns ``HeadLOO`` with dw2 = ‖W − W₋ᵢ‖²_F, df2 = mean held-out ‖f − f₋ᵢ‖², resid, loo_resid, val_pred.
    """
    phi, y = phi.double(), y.double()
    _check(phi, y, lam, eta_t)
    n, k = y.shape
    c, u = eig if eig is not None else _eig(phi)
    a = c + lam
    shifts, betas = flow_poles(eta_t)
    p = torch.as_tensor(shifts, dtype=torch.complex128)
    coef = torch.as_tensor(betas, dtype=torch.complex128)
    coef[1:] *= 2.0  # conjugate pairs: 2·Re
    dq = 1.0 / (a.to(torch.complex128)[None, :] + p[:, None])  # (P, D): eigenvalues of R_q
    bt = (u.T @ (phi.T @ y)).to(torch.complex128)  # Ũᵀ B, (D, k)
    rb = dq[:, :, None] * bt[None]  # (P, D, k): Uᵀ R_q B
    w = solve_weights(phi, y, lam=lam, eta_t=eta_t, eig=(c, u))
    resid = phi @ w - y
    fac = _val_factor(phiv.double() if phiv is not None else None, u)
    dw2 = torch.empty(n, dtype=torch.float64)
    df2 = torch.full((n,), float("nan"), dtype=torch.float64)
    loo_resid = torch.empty(n, k, dtype=torch.float64)
    for s in range(0, n, batch):
        psi = phi[s:s + batch] @ u  # (b, D): Uᵀφ̃ᵢ
        psi_c = psi.to(torch.complex128)
        h = (psi_c * psi_c) @ dq.T  # (b, P): h_{q,i}
        rho = torch.einsum("bd,pdk->bpk", psi_c, rb) - y[s:s + batch, None, :]  # (b, P, k)
        left = (coef[None, :] / (1.0 - h))[:, :, None] * dq[None] * psi_c[:, None, :]  # (b, P, D)
        e = -torch.real(torch.einsum("bpd,bpk->bdk", left, rho))  # Uᵀ ΔWᵢ, (b, D, k)
        dw2[s:s + batch] = (e * e).sum((1, 2))
        loo_resid[s:s + batch] = resid[s:s + batch] - torch.einsum("bd,bdk->bk", psi, e)
        if fac is not None:
            df2[s:s + batch] = torch.einsum("md,bdk->bmk", fac, e).pow(2).sum((1, 2))
    val_pred = (phiv.double() @ w).numpy() if phiv is not None and len(phiv) else None
    return HeadLOO(dw2=dw2.clamp_min(0).numpy(), df2=df2.clamp_min(0).numpy(), resid=resid.numpy(),
                   loo_resid=loo_resid.numpy(), val_pred=val_pred)


def retrain_without(phi: torch.Tensor, phiv: torch.Tensor | None, y: torch.Tensor, sets: list[np.ndarray], *,
                    lam: float, eta_t: float | None) -> list[tuple[float, float]]:
    """(‖W − W₋S‖²_F, mean held-out ‖f − f₋S‖²) for each set S of row positions, by re-solving without S:
    a fresh eigendecomposition of C − Σ_S φ̃φ̃ᵀ and the exact g_t (S = every row gives W₋S = W₀ = 0).

    This is the unique information of the set S (Harutyunyan et al. 2021, sec. 3), not a sum of its rows'
    scores; for one row it is the brute-force leave-one-out that ``linear_head_loo`` computes in closed form.
    """
    phi, y = phi.double(), y.double()
    _check(phi, y, lam, eta_t)
    n = len(phi)
    w = solve_weights(phi, y, lam=lam, eta_t=eta_t)
    cfull, bfull = phi.T @ phi, phi.T @ y
    pv = phiv.double() if phiv is not None and len(phiv) else None
    out = []
    for s in sets:
        s = np.unique(np.asarray(s, dtype=np.int64))
        if len(s) and (s.min() < 0 or s.max() >= n):
            raise ScoreError(f"set positions must be in [0, {n}), got {s.min()}..{s.max()}")
        if len(s) == n:
            dw = w
        elif len(s) == 0:
            dw = torch.zeros_like(w)
        else:
            ps, ys = phi[s], y[s]
            cs, us = torch.linalg.eigh(cfull - ps.T @ ps)
            g = torch.as_tensor(flow_filter((cs.clamp_min(0.0) + lam).numpy(), eta_t), dtype=torch.float64)
            dw = w - us @ (g[:, None] * (us.T @ (bfull - ps.T @ ys)))
        dw2 = float((dw * dw).sum())
        df2 = float((pv @ dw).pow(2).sum(1).mean()) if pv is not None else float("nan")
        out.append((max(dw2, 0.0), max(df2, 0.0) if pv is not None else df2))
    return out


def solve_linear_problem(x: np.ndarray, xv: np.ndarray, y: torch.Tensor, yv: torch.Tensor | None, *, lam: float,
                         t: Any, sets: list[np.ndarray] | None = None, with_path: bool = False) -> dict[str, Any]:
    """One problem with the linear head: ηt (early stopping when ``t = "auto"``), every row's leave-one-out
    and the given sets' unique information (unscaled squared norms; divide by 2σ² for nats). ``with_path``:
    the held-out MSE path on the early-stopping grid is returned also when t is given (for a run-wide ηt)."""
    phi, phiv = linear_design(x, xv)
    eig = _eig(phi)
    path: list[tuple[float, float]] = []
    if t == "auto":
        if yv is None or not len(phiv):
            raise ScoreError("t = 'auto' (early stopping) needs held-out rows; give t explicitly")
        eta_t, path = choose_time_linear(phi, phiv, y, yv, lam=lam, eig=eig)
    else:
        eta_t = None if t in (None, "inf", float("inf")) else float(t)
        if with_path and yv is not None and len(phiv):
            path = choose_time_linear(phi, phiv, y, yv, lam=lam, eig=eig)[1]
    out = linear_head_loo(phi, phiv if len(phiv) else None, y, lam=lam, eta_t=eta_t, eig=eig)
    set_vals = retrain_without(phi, phiv if len(phiv) else None, y, sets, lam=lam, eta_t=eta_t) if sets else []
    return {"loo": out, "eta_t": eta_t, "path": path, "sets": set_vals}
