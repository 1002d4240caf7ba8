"""Smooth unique information of a head trained on frozen features: the default SI of a run.

Source: H. Harutyunyan, A. Achille, G. Paolini, O. Majumder, A. Ravichandran, R. Bhotika, S. Soatto,
"Estimating informativeness of samples with Smooth Unique Information", ICLR 2021 (sections 3–5): SI of a
network *fine-tuned from w₀* and linearized at w₀, trained for a finite time t on the MSE loss.

The training algorithm whose information is measured (stated in the manifest, re-run by ``verify-si``):

1. Features. Every row gets a feature vector φ(x) from a network that **did not train on it**: a pretrained
   backbone at w₀ (``--weights``), or the run's own recipe *cross-fitted*: the training rows are split into
   K folds (stratified by class, near-duplicates kept together) and fold j's features come from a network
   trained on the other folds. Features are standardised on the problem's rows and scaled by 1/√d; a constant
   1 is appended (the bias).
2. Head. A two-layer ReLU head on φ, infinitely wide, initialised at random (w₀) and trained by gradient flow
   on L(w) = ½Σᵢ‖f_w(xᵢ) − yᵢ‖² + (λ/2)‖w − w₀‖² (yᵢ one-hot) for time t. In the wide limit the head *is* its
   linearization at w₀ (Lee et al., NeurIPS 2019; Jacot et al., NeurIPS 2018), with the exact NTK

       Θ(x, z) = kron(θ(φ̃(x), φ̃(z)), I_k),
       θ(a, b) = aᵀb · κ₀(u) + ‖a‖‖b‖ · κ₁(u),   u = aᵀb / (‖a‖‖b‖),
       κ₀(u) = (π − arccos u) / (2π),   κ₁(u) = (u (π − arccos u) + √(1 − u²)) / (2π)

   (Cho & Saul, NeurIPS 2009 arc-cosine kernels), and f₀ = 0 (a symmetric initialisation). t is chosen by
   early stopping: the ηt that minimises the held-out MSE on a log grid (the closed form below gives the
   whole path at once), one ηt for all of a run's head problems (their held-out MSE summed,
   ``core.scores.si_crossfit.pooled_time``).
3. SI. With A = Θ + λI (per output, n×n), r = f₀(X) − Y, g_t(a) = (1 − e^{−ηta})/a, the trained head is
   α = −g_t(A) r, w − w₀ = Jᵀα, f(x) = Θ(x, X)α. Leaving row i out gives α₋ᵢ; Δαᵢ = α − pad(α₋ᵢ) and

       si_weights(i)  = ‖w − w₋ᵢ‖² / (2σ²) = Δαᵢᵀ Θ Δαᵢ / (2σ²)                        [nats]
       si_function(i) = mean over held-out x of ‖f(x) − f₋ᵢ(x)‖² / (2σ²)               [nats]

   (KL divergences between the smoothed weight/output distributions N(·, σ²I), the paper's eqs. 4–5).

Exact closed-form leave-one-out at finite t, O(n³) once per problem: the matrix exponential has no
block-inverse identity, but resolvents do. A Talbot-contour quadrature (Weideman & Trefethen, Math. Comp.
2007, parabolic contour, N = 32 nodes, error < 1e-13 uniformly on a ≥ 0) writes

    e^{−sa} = Σ_q ω_q / (a + p_q)     so     g_t(a) = β₀/a + Σ_q β_q / (a + p_q),

and for each shift p the block-inverse (Schur complement) identity gives, with B_p = (A + pI)⁻¹,
pad((A₋ᵢ + pI)⁻¹ r₋ᵢ) = B_p r − B_p[:, i] (B_p r)ᵢ / (B_p)ᵢᵢ. In the eigenbasis A = V diag(a) Vᵀ every
B_p is diagonal, so all n leave-one-out solutions cost O(Q·n²) per output after one eigendecomposition.
``tests/test_si_head.py`` checks every quantity against removing the row and re-solving by
eigendecomposition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import ScoreError

_TALBOT_N = 32  # trapezoid nodes on the parabolic contour (16 conjugate pairs)


# --------------------------------------------------------------------------------------------------------
# the head's kernel
# --------------------------------------------------------------------------------------------------------


def prepare_features(train: np.ndarray, *others: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Standardise every column on ``train`` rows, scale by 1/√d and append a constant 1 (float64 tensors)."""
    x = torch.as_tensor(np.asarray(train), dtype=torch.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ScoreError(f"features must be a non-empty (n, d) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ScoreError("features contain NaN or infinite values")
    mu, sd = x.mean(0), x.std(0, unbiased=False)
    sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    d = x.shape[1]

    def tf(a: torch.Tensor) -> torch.Tensor:
        z = (a - mu) / sd / math.sqrt(d)
        return torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)

    outs = [tf(x)]
    for o in others:
        o = torch.as_tensor(np.asarray(o), dtype=torch.float64).reshape(-1, d)
        if not torch.isfinite(o).all():
            raise ScoreError("features contain NaN or infinite values")
        outs.append(tf(o))
    return tuple(outs)


def relu_ntk(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """θ(a, b) of an infinitely wide two-layer ReLU network (both layers trained), (len(a), len(b)).

    θ = aᵀb·κ₀(u) + ‖a‖‖b‖·κ₁(u) with the arc-cosine kernels κ₀, κ₁ (Cho & Saul 2009; Jacot et al. 2018).
    """
    na, nb = a.norm(dim=1), b.norm(dim=1)
    dot = a @ b.T
    u = (dot / (na[:, None] * nb[None, :]).clamp_min(1e-300)).clamp(-1.0, 1.0)
    ang = torch.arccos(u)
    k0 = (math.pi - ang) / (2 * math.pi)
    k1 = (u * (math.pi - ang) + torch.sqrt((1 - u * u).clamp_min(0))) / (2 * math.pi)
    return dot * k0 + na[:, None] * nb[None, :] * k1


def head_kernels(x: np.ndarray, xv: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """θ(X, X) and θ(X_val, X) of the head, with features standardised over the problem's rows and held-out
    rows together (fixed preprocessing, so leaving a row out of training does not change the features)."""
    xt, xvt = prepare_features(np.concatenate([x, xv]), x, xv)[1:]
    return relu_ntk(xt, xt), relu_ntk(xvt, xt)


def solve_alpha(kernel: torch.Tensor, targets: torch.Tensor, *, lam: float, eta_t: float | None,
                eig: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The trained head's α = −g_t(Θ + λI) r with r = −Y (f₀ = 0): (n, k), by eigendecomposition."""
    ev, vec = eig if eig is not None else torch.linalg.eigh(kernel.double())
    g = torch.as_tensor(flow_filter((ev.clamp_min(0.0) + lam).numpy(), eta_t), dtype=torch.float64)
    return vec @ (g[:, None] * (vec.T @ targets.double()))


# --------------------------------------------------------------------------------------------------------
# g_t as a sum of resolvents
# --------------------------------------------------------------------------------------------------------


def flow_poles(eta_t: float | None, n_nodes: int = _TALBOT_N) -> tuple[np.ndarray, np.ndarray]:
    """Shifts p and weights β with g_t(a) = (1 − e^{−ηta})/a ≈ Σ β/(a + p) for a > 0 (t = None: 1/a).

    Only one shift of each conjugate pair is returned (its weight counts twice: take 2·Re of its term);
    the real shift p = 0 comes first with its weight β₀.
    """
    if eta_t is None:
        return np.zeros(1, complex), np.ones(1, complex)
    if not (eta_t > 0 and math.isfinite(eta_t)):
        raise ScoreError(f"η·t must be > 0 and finite, got {eta_t}")
    h = 2 * math.pi / n_nodes
    theta = -math.pi + (np.arange(n_nodes) + 0.5) * h
    theta = theta[theta > 0]
    z = n_nodes * (0.1309 - 0.1194 * theta**2 + 0.2500j * theta)
    dz = n_nodes * (-2 * 0.1194 * theta + 0.2500j)
    c = h / (2j * math.pi) * np.exp(z) * dz  # e^{λ} ≈ Σ_all c/(z − λ); here λ = −ηt·a
    beta_q = c / z  # (c/ηt)/(p) with p = z/ηt
    beta0 = 1.0 - 2.0 * np.real(beta_q.sum())
    return np.concatenate([[0.0], z / eta_t]), np.concatenate([[beta0], beta_q])


def flow_filter(a: np.ndarray, eta_t: float | None) -> np.ndarray:
    """g_t(a) = (1 − e^{−ηta})/a (limit ηt at a = 0); 1/a for t = None."""
    a = np.asarray(a, dtype=np.float64)
    if eta_t is None:
        return 1.0 / a
    small = np.abs(a * eta_t) < 1e-12
    safe = np.where(small, 1.0, a)
    return np.where(small, eta_t, -np.expm1(-eta_t * safe) / safe)


# --------------------------------------------------------------------------------------------------------
# exact leave-one-out
# --------------------------------------------------------------------------------------------------------


@dataclass
class HeadLOO:
    """Leave-one-out results for one problem (float64 numpy): dw2 = ‖w − w₋ᵢ‖², df2 = mean held-out
    ‖f − f₋ᵢ‖² (NaN without held-out rows), resid = f(xᵢ) − yᵢ, loo_resid = f₋ᵢ(xᵢ) − yᵢ, val_pred (m, k)."""

    dw2: np.ndarray
    df2: np.ndarray
    resid: np.ndarray
    loo_resid: np.ndarray
    val_pred: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def head_loo(kernel: torch.Tensor, kernel_val: torch.Tensor | None, targets: torch.Tensor, *, lam: float,
             eta_t: float | None, eig: tuple[torch.Tensor, torch.Tensor] | None = None) -> HeadLOO:
    """Every row's leave-one-out change of a kernel head trained by gradient flow for ηt (None = ∞).

    Args:
        kernel: θ(X, X) (n, n) float64, shared by the k outputs (the head's NTK is kron(θ, I_k)).
        kernel_val: θ(X_val, X) (m, n) or None.
        targets: Y (n, k) float64 (f₀ = 0, so r = −Y).
        lam: weight decay λ ≥ 0 (> 0 when t = ∞); eta_t: η·t or None.
        eig: ``torch.linalg.eigh(kernel)`` when already computed.
    """
    n, k = targets.shape
    if n < 2:
        raise ScoreError(f"leave-one-out needs at least 2 training rows, got {n}")
    if not (lam >= 0 and math.isfinite(lam)) or (eta_t is None and lam <= 0):
        raise ScoreError(f"λ must be ≥ 0 (and > 0 when t = ∞), got {lam}")
    theta = kernel.double()
    ev, vec = eig if eig is not None else torch.linalg.eigh(theta)
    ev = ev.clamp_min(0.0)
    a = ev + lam  # eigenvalues of A = Θ + λI
    shifts, betas = flow_poles(eta_t)
    p = torch.as_tensor(shifts, dtype=torch.complex128)
    beta = torch.as_tensor(betas, dtype=torch.complex128)
    weight = torch.ones(len(shifts), dtype=torch.float64)
    weight[1:] = 2.0  # conjugate pairs: 2·Re
    d = 1.0 / (a.to(torch.complex128)[None, :] + p[:, None])  # (P, n): eigenvalues of B_p
    v2 = (vec * vec).to(torch.complex128)
    b_ii = v2 @ d.T  # (n, P): (B_p)ᵢᵢ
    r = -targets.double()
    vt_r = vec.T @ r  # (n, k)
    alpha = solve_alpha(theta, targets, lam=lam, eta_t=eta_t, eig=(ev, vec))
    resid = r + theta @ alpha
    dw2 = torch.zeros(n, dtype=torch.float64)
    df2 = torch.zeros(n, dtype=torch.float64)
    loo_resid = torch.empty(n, k, dtype=torch.float64)
    val_proj = kernel_val.double() @ vec if kernel_val is not None else None  # θ(X_val, X) V, (m, n)
    vec_c = vec.to(torch.complex128)
    for j in range(k):
        br = vec_c @ (d.T * vt_r[:, j:j + 1].to(torch.complex128))  # (n, P): (B_p r)ᵢ
        gamma = (br / b_ii) * (beta * weight)[None, :]  # (n, P)
        # E[i, :] = Vᵀ Δαᵢ = −(Σ_p β_p γ_p,i d_p) ∘ V[i, :]
        e = -torch.real(gamma @ d) * vec  # (n_i, n_eig)
        dw2 += (e * e * ev[None, :]).sum(1)
        loo_resid[:, j] = resid[:, j] - (vec * ev[None, :] * e).sum(1)  # rᵢ + Θᵢ pad(α₋ᵢ)
        if val_proj is not None:
            df2 += (e @ val_proj.T).pow(2).sum(1) / val_proj.shape[0]
    val_pred = (kernel_val.double() @ alpha).numpy() if kernel_val is not None else None
    return HeadLOO(dw2=dw2.clamp_min(0).numpy(),
                   df2=df2.clamp_min(0).numpy() if val_proj is not None else np.full(n, np.nan),
                   resid=resid.numpy(), loo_resid=loo_resid.numpy(), val_pred=val_pred)


def choose_time(kernel: torch.Tensor, kernel_val: torch.Tensor, targets: torch.Tensor, val_targets: torch.Tensor,
                *, lam: float, grid: np.ndarray | None = None,
                eig: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[float, list[tuple[float, float]]]:
    """Early stopping in closed form: the ηt on a log grid that minimises the held-out MSE of the head.

    Returns (ηt, [(ηt, held-out MSE), ...]).
    """
    grid = np.logspace(-1, 5, 25) if grid is None else np.asarray(grid, dtype=np.float64)
    ev, vec = eig if eig is not None else torch.linalg.eigh(kernel.double())
    a = (ev.clamp_min(0.0) + lam).numpy()
    vt_y = (vec.T @ targets.double()).numpy()
    kv = (kernel_val.double() @ vec).numpy()
    yv = val_targets.double().numpy()
    path = []
    for s in grid:
        pred = kv @ (flow_filter(a, float(s))[:, None] * vt_y)
        path.append((float(s), float(((pred - yv) ** 2).sum(1).mean())))
    best = min(path, key=lambda x: x[1])[0]
    return best, path


def head_set_loo(kernel: torch.Tensor, kernel_val: torch.Tensor | None, targets: torch.Tensor,
                 sets: list[np.ndarray], *, lam: float, eta_t: float | None,
                 eig: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[tuple[float, float]]:
    """Unique information of whole *sets* of rows: (‖w − w₋S‖², mean held-out ‖f − f₋S‖²) for each S.

    The paper's SI of a subset S (Harutyunyan et al. 2021, sec. 3) leaves the whole set out at once; it is
    not the sum of its rows' scores (two copies of an image each have little unique information, the pair a
    lot). Same resolvent form as ``head_loo`` with |S|×|S| blocks:
    pad((A₋S + pI)⁻¹ r₋S) = B_p r − B_p[:, S] (B_p)_SS⁻¹ (B_p r)_S, so Δα_S = −Σ_p β_p B_p[:, S] c_p with
    c_p = (B_p)_SS⁻¹ (B_p r)_S; cost O(Q·(|S|²n + |S|³)) per set. S = every row gives ‖w − w₀‖².
    """
    n, k = targets.shape
    theta = kernel.double()
    ev, vec = eig if eig is not None else torch.linalg.eigh(theta)
    ev = ev.clamp_min(0.0)
    a = ev + lam
    shifts, betas = flow_poles(eta_t)
    p = torch.as_tensor(shifts, dtype=torch.complex128)
    beta = torch.as_tensor(betas, dtype=torch.complex128)
    weight = torch.ones(len(shifts), dtype=torch.complex128)
    weight[1:] = 2.0
    d = 1.0 / (a.to(torch.complex128)[None, :] + p[:, None])  # (P, n)
    vec_c = vec.to(torch.complex128)
    r = (-targets.double()).to(torch.complex128)
    vt_r = vec_c.T @ r  # (n, k)
    val_proj = kernel_val.double() @ vec if kernel_val is not None else None
    alpha = solve_alpha(theta, targets, lam=lam, eta_t=eta_t, eig=(ev, vec))

    def change(e: torch.Tensor) -> tuple[float, float]:
        """(‖Δw‖², mean held-out ‖Δf‖²) from e = Vᵀ Δα_S."""
        dw2 = float((e * e * ev[:, None]).sum())
        df2 = float((val_proj @ e).pow(2).sum(1).mean()) if val_proj is not None else float("nan")
        return max(dw2, 0.0), max(df2, 0.0)

    out = []
    for s in sets:
        s = torch.as_tensor(np.asarray(s, dtype=np.int64))
        m_s = len(s)
        if m_s == 0:
            out.append((0.0, 0.0))
        elif m_s == n:  # everything left out: w₋S = w₀, f₋S = f₀
            out.append(change(vec.T @ alpha))
        elif 10.0 * (n - m_s) ** 3 < 4.0 * len(shifts) * m_s * m_s * n:  # cheaper: re-solve the rows that stay
            keep = torch.as_tensor(np.setdiff1d(np.arange(n), s.numpy()))
            alpha_s = torch.zeros_like(alpha)
            alpha_s[keep] = solve_alpha(theta[keep][:, keep], targets[keep], lam=lam, eta_t=eta_t)
            out.append(change(vec.T @ (alpha - alpha_s)))
        else:
            vs = vec_c[s]  # (|S|, n)
            vs_re = vec[s]  # real: (B_p)_SS = V_S D_p V_Sᵀ as two real products (half the work of a complex one)
            e = torch.zeros(n, k, dtype=torch.complex128)  # Vᵀ Δα_S
            for q in range(len(shifts)):
                b_ss = torch.complex((vs_re * d[q].real[None, :]) @ vs_re.T, (vs_re * d[q].imag[None, :]) @ vs_re.T)
                br_s = vs @ (d[q][:, None] * vt_r)  # (B_p r)_S, (|S|, k)
                c = torch.linalg.solve(b_ss, br_s)
                e -= beta[q] * weight[q] * (d[q][:, None] * (vs.T @ c))  # Vᵀ B_p[:, S] c = D_p V_Sᵀ c
            out.append(change(torch.real(e)))
    return out
