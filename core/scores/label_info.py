"""Label-noise information of the run's SI head: what its trained weights (and outputs) hold about the training
labels beyond the inputs, I(W; Y | X), in nats with σ stated.

Source: H. Harutyunyan, K. Reing, G. Ver Steeg, A. Galstyan, "Improving Generalization by Controlling
Label-Noise Information in Neural Network Weights", ICML 2020 (sec. 2): the information I(W; Y | X) that the
weights of a network trained on (X, Y) hold about the labels given the inputs measures how much label noise
was memorised. Here it is evaluated in closed form for the algorithm whose unique information the run measures
(``core.scores.si_head``: a wide ReLU head linearized at w₀, trained by gradient flow for ηt on the MSE,
f₀ = 0), with the Gaussian smoothing of the SI paper (Harutyunyan et al., ICLR 2021): W ~ N(w(Y), σ²I).

The head's weights are linear in the targets: w − w₀ = 𝒥ᵀ (G ⊗ I_k) vec(Y) with G = g_t(A), A = θ + λI,
g_t(a) = (1 − e^{−ηta})/a and 𝒥𝒥ᵀ = θ ⊗ I_k (the head's NTK). The labels are random given the inputs: rows
independent, yᵢ (one-hot) with mean pᵢ and covariance Σᵢ = diag(pᵢ) − pᵢpᵢᵀ, replaced by a Gaussian of that
covariance (for the additive Gaussian channel a Gaussian input maximises the information at a given
covariance, so the value is an upper bound for categorical labels with these pᵢ). Then, by Sylvester's
identity on the dual (kernel) side,

    I_w = I(W; Y | X) = ½ log det(I + M Σ_Y Mᵀ / σ²) = ½ log det(I_{nk} + (Q_w ⊗ I_k) Σ_Y / σ²),
    Q_w = MᵀM = G θ G,          Σ_Y = blockdiag(Σ₁, …, Σ_n)                                  [nats]

and for the outputs on the m held-out rows x_v (smoothing variance m·σ², the SI paper's mean over x):

    I_f = ½ log det(I_{nk} + (Q_f ⊗ I_k) Σ_Y / σ²),   Q_f = G θ(X, X_v) θ(X_v, X) G / m.

Neither is a sum of per-sample scores. For a set S of rows (a class, a source) the information about *its*
labels given the other labels, I(W; Y_S | X, Y_rest), is the same formula with Σ restricted to S (the other rows'
labels held fixed): each is ≤ the total, and the sets of a partition sum to ≥ the total (labels of different
rows are independent). By the data-processing inequality I_f(σ) ≤ I_w(σ√(m/λ_max(θ(X_v, X_v)))), but
I_f ≤ I_w at the same σ is not a theorem (θ(X_v, X_v) can have eigenvalues above m).

Computation (float64). With Σ_Y = D_p − PPᵀ (D_p = diag of all p_ij, P's column i = eᵢ ⊗ pᵢ), Sᵢ = diag(√p_j)
and Z_j = S_j Q S_j, the matrix determinant lemma and Woodbury's identity give (using Σ_j p_ij = 1)

    log det(I + (Q ⊗ I)Σ_Y/σ²) = Σ_j log det(I + Z_j/σ²) + log det(σ² Σ_j S_j (σ²I + Z_j)⁻¹ S_j),

k Cholesky factorisations of n×n matrices (``_logdet_gram``). When Q = FᵀF has a thin factor (F: r×n, the
functional version, r = m held-out rows) the r·k-sized side is used instead:
log det(I_{rk} + (F ⊗ I) Σ_Y (F ⊗ I)ᵀ/σ²) (``_logdet_factor``), whichever is cheaper.
``tests/test_label_info.py`` checks both against the explicit weight map M built by re-solving the head for
every unit target.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg as sla
import torch
from scipy.linalg import lapack

from core.errors import ScoreError
from core.scores.si_head import flow_filter

DEFINITION = ("I(W; Y | X) = ½ log det(I + M Σ_Y Mᵀ/σ²) for the head's linear map M from the one-hot targets to its "
              "weights (function: to its outputs on the held-out rows, smoothing variance m·σ²), labels Gaussian "
              "with per-row covariance diag(pᵢ) − pᵢpᵢᵀ (Harutyunyan, Reing, Ver Steeg, Galstyan, ICML 2020); "
              "a set's value is I(W; Y_S | X, other labels); not a sum of per-sample scores")


def label_covariance(probs: np.ndarray) -> np.ndarray:
    """Σ_Y (nk × nk, row-major (i, j)) = blockdiag(diag(pᵢ) − pᵢpᵢᵀ): the covariance of one-hot labels."""
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    out = np.zeros((n * k, n * k))
    for i in range(n):
        out[i * k:(i + 1) * k, i * k:(i + 1) * k] = np.diag(p[i]) - np.outer(p[i], p[i])
    return out


def check_probs(probs: np.ndarray) -> np.ndarray:
    """Rows of a predictive distribution (n, k): finite, ≥ 0, summing to 1 (renormalised within 1e-6)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all() or (p < 0).any():
        raise ScoreError("label probabilities must be a finite, non-negative (n, k) array")
    s = p.sum(1)
    if len(p) and np.abs(s - 1).max() > 1e-6:
        raise ScoreError(f"label probabilities must sum to 1 per row (max deviation {np.abs(s - 1).max():.3g})")
    return p / s[:, None] if len(p) else p


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto the probability simplex (Held, Wolfe, Crowder 1974; sort-based)."""
    v = np.asarray(v, dtype=np.float64)
    u = -np.sort(-v, axis=1)
    css = np.cumsum(u, 1) - 1.0
    idx = np.arange(1, v.shape[1] + 1)
    rho = (u - css / idx > 0).sum(1)
    tau = css[np.arange(len(v)), rho - 1] / rho
    return np.clip(v - tau[:, None], 0.0, None)


def _logdet_gram(q: np.ndarray, p: np.ndarray, sigma: float) -> float:
    """log det(I_{nk} + (Q ⊗ I_k) Σ_Y / σ²) on the n-side: k Cholesky factorisations (see the module doc)."""
    n, k = p.shape
    s2 = sigma * sigma
    total = 0.0
    t = np.zeros((n, n))
    for j in range(k):
        s = np.sqrt(p[:, j])
        if not s.any():
            continue  # Z_j = 0: no term, and S_j(σ² + Z_j)⁻¹S_j = 0
        z = s[:, None] * q * s[None, :]
        z[np.diag_indices(n)] += s2
        chol, info = lapack.dpotrf(z, lower=1, clean=0)
        if info != 0:
            raise ScoreError(f"label information: Cholesky failed (LAPACK info {info})")
        total += 2.0 * np.log(np.diag(chol)).sum() - n * math.log(s2)
        zinv, info = lapack.dpotri(chol, lower=1)  # (σ²I + Z_j)⁻¹, lower triangle
        zinv = np.tril(zinv) + np.tril(zinv, -1).T
        t += s2 * (s[:, None] * zinv * s[None, :])
    c = sla.cho_factor(t, lower=True, check_finite=False)
    return float(total + 2.0 * np.log(np.diag(c[0])).sum())


def _logdet_factor(f: np.ndarray, p: np.ndarray, sigma: float) -> float:
    """log det(I_{rk} + (F ⊗ I_k) Σ_Y (F ⊗ I_k)ᵀ / σ²) for a factor F (r × n) of Q = FᵀF (the r·k side)."""
    r = f.shape[0]
    n, k = p.shape
    w = np.concatenate([f * p[:, j][None, :] for j in range(k)])  # (kr, n): block j = F diag(p_j)
    h = -(w @ w.T)
    for j in range(k):
        h[j * r:(j + 1) * r, j * r:(j + 1) * r] += w[j * r:(j + 1) * r] @ f.T
    h /= sigma * sigma
    h[np.diag_indices(k * r)] += 1.0
    c = sla.cho_factor(h, lower=True, check_finite=False)
    return float(2.0 * np.log(np.diag(c[0])).sum())


def gaussian_label_information(probs: np.ndarray, sigma: float, *, gram: np.ndarray | None = None,
                               factor: np.ndarray | None = None) -> float:
    """½ log det(I_{nk} + (Q ⊗ I_k) Σ_Y / σ²) in nats, Q = ``gram`` (n × n) or FᵀF with F = ``factor`` (r × n).

    With a factor, the cheaper side is used (n-side: ≈ k·n³, factor side: ≈ (kr)²n + (kr)³/3).
    """
    p = check_probs(probs)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ScoreError(f"σ must be > 0, got {sigma}")
    n, k = p.shape
    if n == 0:
        return 0.0
    if factor is not None:
        f = np.asarray(factor, dtype=np.float64)
        kr = k * f.shape[0]
        if gram is None and kr * kr * (n + kr / 3) >= 1.4 * k * n ** 3:  # the n-side is cheaper
            gram = f.T @ f
        if gram is None:
            return 0.5 * _logdet_factor(f, p, sigma)
    if gram is None:
        raise ScoreError("give the Gram matrix Q or a factor F of it")
    return max(0.5 * _logdet_gram(np.asarray(gram, dtype=np.float64), p, sigma), 0.0)


def label_information(kernel: torch.Tensor, kernel_val: torch.Tensor | None, probs: np.ndarray, *, lam: float,
                      eta_t: float | None, sigma: float, eig: tuple[torch.Tensor, torch.Tensor] | None = None,
                      sets: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """I_w and I_f (nats) of one head problem, and of each set of rows (positions within the problem).

    Args:
        kernel: θ(X, X) (n, n); kernel_val: θ(X_v, X) (m, n) or None (no functional version).
        probs: pᵢ (n, k), the label distribution given each input (a held-out / cross-fitted prediction).
        lam, eta_t: the head's λ and ηt (None = ∞) as in ``si_head.head_loo``; sigma: the smoothing σ.
        eig: ``torch.linalg.eigh(kernel)`` when already computed.

    Returns {"weights": I_w, "function": I_f (NaN without held-out rows), "sets": {name: (I_w, I_f)}}.
    """
    p = check_probs(probs)
    ev, vec = eig if eig is not None else torch.linalg.eigh(kernel.double())
    ev_np = ev.clamp_min(0.0).numpy()
    v = vec.numpy()
    if p.shape[0] != len(ev_np):
        raise ScoreError(f"label probabilities have {p.shape[0]} rows for a problem of {len(ev_np)}")
    g = flow_filter(ev_np + lam, eta_t)
    q_w = (v * (g * g * ev_np)[None, :]) @ v.T  # G θ G
    f_fun = None
    if kernel_val is not None and kernel_val.shape[0]:
        m = kernel_val.shape[0]
        f_fun = ((kernel_val.double().numpy() @ v) * g[None, :]) @ v.T / math.sqrt(m)  # θ_v G / √m

    def both(idx: np.ndarray | None) -> tuple[float, float]:
        if idx is None:
            qw, ff, pp = q_w, f_fun, p
        else:
            qw, pp = q_w[np.ix_(idx, idx)], p[idx]
            ff = f_fun[:, idx] if f_fun is not None else None
        iw = gaussian_label_information(pp, sigma, gram=qw)
        fi = gaussian_label_information(pp, sigma, factor=ff) if ff is not None else float("nan")
        return iw, fi

    iw, fi = both(None)
    out_sets = {}
    for name, idx in (sets or {}).items():
        idx = np.asarray(idx, dtype=np.int64)
        out_sets[name] = (iw, fi) if len(idx) == len(p) else both(idx) if len(idx) else (0.0, 0.0)
    return {"weights": iw, "function": fi, "sets": out_sets}
