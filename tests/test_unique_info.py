"""Smooth unique information: the closed-form leave-one-out against brute force (dropping sample i and
re-solving the linearized training), the projected path against the exact one, bad inputs, the adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ScoreError
from core.scores.unique_info import loo_features, loo_kernel, make_targets, unique_information

RTOL = 1e-6


def _mlp(d_in: int, k: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, 12), nn.Tanh(), nn.Linear(12, k)).double().eval()


def _jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Explicit (n·k, p) Jacobian, one autograd call per sample (independent of core.ntk)."""
    params = list(model.parameters())
    rows = []
    for xi in x:
        out = model(xi[None])[0]
        for j in range(len(out)):
            g = torch.autograd.grad(out[j], params, retain_graph=True)
            rows.append(torch.cat([gi.reshape(-1) for gi in g]))
    return torch.stack(rows)


def _flow_alpha(a: torch.Tensor, r: torch.Tensor, eta_t: float | None) -> torch.Tensor:
    """α = −A⁻¹(I − exp(−ηtA)) r with a matrix exponential (t=None: −A⁻¹r)."""
    if eta_t is None:
        return -torch.linalg.solve(a, r)
    e = torch.linalg.matrix_exp(-eta_t * a)
    return -torch.linalg.solve(a, (torch.eye(len(a), dtype=a.dtype) - e) @ r)


def _brute_force(j: torch.Tensor, jv: torch.Tensor, r: torch.Tensor, k: int, lam: float, eta_t: float | None):
    """Drop sample i, re-solve, and measure ‖w − w₋ᵢ‖² and mean‖f(x) − f₋ᵢ(x)‖² with explicit Jacobians."""
    n = len(r) // k
    theta = j @ j.T
    a = theta + lam * torch.eye(len(theta), dtype=theta.dtype)
    w = j.T @ _flow_alpha(a, r, eta_t)
    dw2, df2, loo = [], [], []
    for i in range(n):
        keep = torch.tensor([q for q in range(n * k) if q // k != i])
        w_i = j[keep].T @ _flow_alpha(a[keep][:, keep], r[keep], eta_t)
        dw = w - w_i
        dw2.append(dw @ dw)
        df2.append((jv @ dw).pow(2).sum() / (len(jv) // k))
        loo.append(r[i * k:(i + 1) * k] + j[i * k:(i + 1) * k] @ w_i)
    return torch.stack(dw2), torch.stack(df2), torch.stack(loo)


def _problem(mnist_small, n: int, k: int, seed: int = 0):
    x, y = mnist_small
    rng = np.random.default_rng(seed)
    if k == 1:  # binary 4 vs 9
        pool = np.flatnonzero((y == 4) | (y == 9))
        idx = rng.choice(pool, n + 6, replace=False)
        labels = (y[idx] == 9).astype(np.int64)
    else:
        pool = np.flatnonzero(y < k)
        idx = rng.choice(pool, n + 6, replace=False)
        labels = y[idx]
    xt = torch.tensor(x[idx], dtype=torch.float64)[:, :, ::4, ::4]  # 7×7 images: a small, fast problem
    return xt[:n], labels[:n], xt[n:]


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("t", [None, 0.5, 20.0])
def test_kernel_loo_equals_brute_force(mnist_small, k, t):
    x, labels, xv = _problem(mnist_small, n=10, k=k)
    model = _mlp(49, k)
    lam, lr = 1e-2, 0.5
    j, jv = _jacobian(model, x), _jacobian(model, xv)
    with torch.no_grad():
        r = (model(x) - make_targets(labels, k)).reshape(-1)
    bw, bf, bl = _brute_force(j, jv, r, k, lam, None if t is None else t * lr)
    res = unique_information(model, x, labels, xv, lam=lam, t=t, lr=lr, sigma=0.7, device="cpu")
    assert res.info["path"] == "kernel"
    np.testing.assert_allclose(res.si_weights, bw.numpy() / (2 * 0.7**2), rtol=RTOL)
    np.testing.assert_allclose(res.si_function, bf.numpy() / (2 * 0.7**2), rtol=RTOL)
    np.testing.assert_allclose(res.loo_residuals, bl.numpy(), rtol=RTOL, atol=1e-9)
    assert res.si_weights.min() > 0 and np.ptp(res.si_weights) > 0


@pytest.mark.parametrize("t", [None, 3.0])
def test_feature_loo_equals_brute_force(t):
    """Ridge regression in d dims (n·k > d): Woodbury / leverage LOO equals re-solving without sample i."""
    gen = torch.Generator().manual_seed(1)
    n, k, d = 30, 3, 16
    g = torch.randn(n, k, d, generator=gen, dtype=torch.float64)
    gv = torch.randn(5, k, d, generator=gen, dtype=torch.float64)
    resid = torch.randn(n, k, generator=gen, dtype=torch.float64)
    lam, lr = 0.3, 0.1
    out = loo_features(g, gv, resid, lam=lam, t=t, lr=lr, chunk=7)
    bw, bf, bl = _brute_force(g.reshape(n * k, d), gv.reshape(-1, d), resid.reshape(-1), k, lam,
                              None if t is None else t * lr)
    np.testing.assert_allclose(out["dw2"].numpy(), bw.numpy(), rtol=RTOL)
    np.testing.assert_allclose(out["df2"].numpy(), bf.numpy(), rtol=RTOL)
    np.testing.assert_allclose(out["loo_resid"].numpy(), bl.numpy(), rtol=RTOL, atol=1e-10)


def test_feature_path_equals_kernel_path():
    """With Θ = GGᵀ exactly, the d×d algebra and the nk×nk algebra give the same scores (u = Gᵀα)."""
    gen = torch.Generator().manual_seed(2)
    n, k, d = 12, 2, 40
    g = torch.randn(n, k, d, generator=gen, dtype=torch.float64)
    gv = torch.randn(4, k, d, generator=gen, dtype=torch.float64)
    resid = torch.randn(n, k, generator=gen, dtype=torch.float64)
    theta = g.reshape(n * k, d) @ g.reshape(n * k, d).T
    theta_v = gv.reshape(-1, d) @ g.reshape(n * k, d).T
    for t in (None, 2.0):
        a = loo_kernel(theta, theta_v, resid, lam=0.05, t=t)
        b = loo_features(g, gv, resid, lam=0.05, t=t)
        for key in ("dw2", "df2", "loo_resid", "resid"):
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-7, atol=1e-10)


def test_projected_path_approaches_exact(mnist_small):
    x, labels, xv = _problem(mnist_small, n=40, k=3, seed=3)
    model = _mlp(49, 3, seed=1).float()
    exact = unique_information(model, x.float(), labels, xv.float(), lam=1e-2, device="cpu")
    errs = []
    for d in (32, 256, 2048):
        approx = [unique_information(model, x.float(), labels, xv.float(), lam=1e-2, projection_dim=d,
                                     projection="gaussian", seed=s, device="cpu") for s in range(3)]
        err = np.mean([np.linalg.norm(a.si_weights - exact.si_weights) / np.linalg.norm(exact.si_weights)
                       for a in approx])
        errs.append(err)
        corr = np.mean([np.corrcoef(a.si_function, exact.si_function)[0, 1] for a in approx])
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.15 and corr > 0.95, (errs, corr)


def test_bad_inputs(mnist_small, monkeypatch):
    x, labels, xv = _problem(mnist_small, n=8, k=3)
    model = _mlp(49, 3)
    with pytest.raises(ScoreError, match="at least 2"):
        unique_information(model, x[:1], labels[:1], xv, device="cpu")
    bad = x.clone()
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(ScoreError, match="NaN"):
        unique_information(model, bad, labels, xv, device="cpu")
    with pytest.raises(ScoreError, match="labels"):
        unique_information(model, x, labels + 5, xv, device="cpu")
    # λ = 0 at t = ∞ with a duplicated sample: Θ is singular -> a clear error that names the fix
    dup = torch.cat([x, x[:1]])
    dlab = np.concatenate([labels, labels[:1]])
    with pytest.raises(ScoreError, match="lam > 0"):
        unique_information(model, dup, dlab, xv, lam=0.0, device="cpu")
    # ... while finite t is well defined for λ = 0 (the flow stays finite on the null space: documented)
    res = unique_information(model, dup, dlab, xv, lam=0.0, t=5.0, device="cpu")
    assert np.isfinite(res.si_weights).all() and np.isfinite(res.si_function).all()
    # finite t costs one eigendecomposition per sample: a job beyond the budget is refused up front
    import core.scores.unique_info as ui

    monkeypatch.setattr(ui, "_MAX_FINITE_T_FLOPS", 1.0)
    with pytest.raises(ScoreError, match="finite t"):
        unique_information(model, x, labels, xv, t=5.0, device="cpu")


def test_singleton_class_is_reported(mnist_small):
    x, labels, xv = _problem(mnist_small, n=12, k=3)
    labels = labels.copy()
    labels[:] = np.where(labels == 2, 1, labels)
    labels[5] = 2  # class 2 now has exactly one sample
    res = unique_information(_mlp(49, 3), x, labels, xv, lam=1e-2, device="cpu")
    assert res.info["singleton_classes"] == [2]
    assert np.isfinite(res.si_weights).all() and np.isfinite(res.si_function).all()


def test_adapter_on_small_run(mnist_small):
    from core.data.dataset import Samples
    from core.models.nets import SmallCNN
    from core.scores.registry import ScoreContext

    x, y = mnist_small
    x, y = x[:60], y[:60]
    split = np.array(["train"] * 40 + ["test"] * 20)
    adv = np.zeros(60, dtype=bool)
    adv[50:] = True
    data = Samples(images=x, labels=y, class_names=[str(i) for i in range(10)], source=np.array(["m"] * 60),
                   sample_id=np.array([f"m:{i}" for i in range(60)]), image_path=np.array([""] * 60),
                   is_adversarial=adv)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = ScoreContext(data=data, split=split, model=model, init_state=init, logits=np.zeros((60, 10)),
                       epoch_logits=np.zeros((1, 60, 10)), embeddings=np.zeros((60, 4)), device="cpu",
                       params={"method": "network", "projection_dim": 256}, seed=0, train_model=lambda s: model)
    from core.scores.unique_info import adapter

    res = adapter(ctx)
    for col in ("si_weights", "si_function"):
        v = res.columns[col]
        assert v.shape == (60,) and np.isfinite(v[:40]).all() and np.isnan(v[40:]).all()
    assert res.params["n_train"] == 40 and res.params["n_val"] == 10  # adversarial test rows excluded
    assert res.params["projection_dim"] == 256 and res.params["t"] is None
    ctx.params = {"method": "network", "projection_dim": 256, "linearize_at": "init"}
    res_init = adapter(ctx)
    assert not np.allclose(res_init.columns["si_weights"][:40], res.columns["si_weights"][:40])
