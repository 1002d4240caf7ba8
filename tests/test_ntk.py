"""The empirical NTK engine against J Jᵀ from an explicit float64 Jacobian (one autograd call per sample and
output, independent of core.ntk), in both modes, on small MLP and CNN models (with BatchNorm)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ScoreError
from core.models.nets import MLP, SmallCNN
from core.ntk import empirical_ntk, jacobian_features, ntk_matrix, select_parameters

RTOL = 1e-5


def _explicit_jacobian(model: nn.Module, x: torch.Tensor, names: list[str] | None = None) -> torch.Tensor:
    """(n, k, p) float64 Jacobian: a float64 copy of the model, one backward per (sample, output)."""
    m = copy.deepcopy(model).double().eval()
    params = [p for n, p in m.named_parameters() if names is None or n in names]
    out = []
    for xi in x.double():
        f = m(xi[None])[0]
        rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(f[j], params, retain_graph=True)])
                for j in range(len(f))]
        out.append(torch.stack(rows))
    return torch.stack(out)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _bn_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial BatchNorm running statistics and affine parameters, then eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    with torch.no_grad():
        model(x)
    return model.eval()


def _models(mnist_small):
    x, _ = mnist_small
    xs = torch.tensor(x[:64:3])  # 22 real digits
    torch.manual_seed(0)
    cnn = _bn_stats(SmallCNN(widths=(4, 6, 8), hidden=12), torch.tensor(x[:200]))
    mlp = MLP(784, 10, hidden=(24, 16)).eval()
    return {"cnn": cnn, "mlp": mlp}, xs


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("mode", ["full", "trace"])
def test_ntk_equals_explicit_jacobian(mnist_small, name, mode):
    models, xs = _models(mnist_small)
    model = models[name]
    x1, x2 = xs[:6], xs[6:11]
    j1, j2 = _explicit_jacobian(model, x1), _explicit_jacobian(model, x2)
    ref12 = torch.einsum("aip,bjp->abij", j1, j2)
    ref11 = torch.einsum("aip,bjp->abij", j1, j1)
    if mode == "trace":
        ref12, ref11 = (torch.einsum("abii->ab", r) / r.shape[-1] for r in (ref12, ref11))
    got12 = empirical_ntk(model, x1, x2, mode=mode, chunk_size=4, device="cpu")
    got11 = empirical_ntk(model, x1, mode=mode, chunk_size=4, device="cpu")  # symmetric path, 2 chunks
    assert got12.shape == ref12.shape and got12.dtype == torch.float64
    assert _rel(got12, ref12) < RTOL
    assert _rel(got11, ref11) < RTOL
    fn = empirical_ntk(model, x1, x2, mode=mode, method="functorch", chunk_size=3, device="cpu")
    assert _rel(fn, ref12) < RTOL


def test_parameter_subset_and_last_layer_block(mnist_small):
    """params='last:1' is the classifier only: its block is kron(AAᵀ + 1, I_k) with A the penultimate
    features; a module-prefix list selects the same parameters as the explicit Jacobian on them."""
    models, xs = _models(mnist_small)
    model = models["cnn"]
    x = xs[:8]
    got = empirical_ntk(model, x, params="last:1", device="cpu")
    with torch.no_grad():
        a = model.embed(x).double()
    gram = a @ a.T + 1
    expect = gram[:, :, None, None] * torch.eye(10, dtype=torch.float64)
    assert _rel(got, expect) < RTOL
    names = select_parameters(model, ["stages.1", "stages.3"])
    assert names and all(n.startswith(("stages.1.", "stages.3.")) for n in names)
    j = _explicit_jacobian(model, x, names)
    sub = empirical_ntk(model, x, params=["stages.1", "stages.3"], device="cpu")
    assert _rel(sub, torch.einsum("aip,bjp->abij", j, j)) < RTOL


def test_jacobian_features_exact_and_flat_layout(mnist_small):
    models, xs = _models(mnist_small)
    model = models["cnn"]
    x = xs[:6]
    g = jacobian_features(model, x, chunk_size=4, device="cpu")
    j = _explicit_jacobian(model, x)
    assert g.shape == j.shape
    assert _rel(g, j) < RTOL
    flat = ntk_matrix(model, x, device="cpu")
    assert _rel(flat, j.reshape(-1, j.shape[-1]) @ j.reshape(-1, j.shape[-1]).T) < RTOL


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sparse"])
def test_projected_kernel_error_shrinks_with_d(mnist_small, kind):
    models, xs = _models(mnist_small)
    model = models["cnn"]
    x = xs[:8]
    exact = empirical_ntk(model, x, device="cpu")
    errs = [np.mean([_rel(empirical_ntk(model, x, projection_dim=d, projection=kind, seed=s, device="cpu"), exact)
                     for s in range(2)]) for d in (16, 128, 1024)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.12, errs
    # seeded: the same seed gives the same features, another seed different ones
    g0 = jacobian_features(model, x, projection_dim=64, projection=kind, seed=1, device="cpu")
    assert torch.equal(g0, jacobian_features(model, x, projection_dim=64, projection=kind, seed=1, device="cpu"))
    assert not torch.equal(g0, jacobian_features(model, x, projection_dim=64, projection=kind, seed=2,
                                                 device="cpu"))


def test_exact_params_keep_their_block_exact(mnist_small):
    """Parameters in exact_params are appended unprojected: with all of them exact, G Gᵀ is Θ itself."""
    models, xs = _models(mnist_small)
    model = models["cnn"]
    x = xs[:5]
    j = _explicit_jacobian(model, x)
    names = select_parameters(model)
    g = jacobian_features(model, x, projection_dim=8, exact_params=names, device="cpu")
    assert g.shape == (5, 10, 8 + j.shape[-1]) and not g[..., :8].any()
    gg = g.reshape(50, -1).double()
    assert _rel(gg @ gg.T, j.reshape(50, -1) @ j.reshape(50, -1).T) < RTOL
    head = select_parameters(model, "last:1")
    gh = jacobian_features(model, x, projection_dim=16, exact_params="last:1", device="cpu")
    jh = _explicit_jacobian(model, x, head)
    assert gh.shape[-1] == 16 + jh.shape[-1] and _rel(gh[..., 16:], jh) < RTOL


def test_inplace_relu_and_unsupported_layers_fall_back(mnist_small):
    """ReLU(inplace=True) after BatchNorm (ResNet style) is handled; a LayerNorm model uses torch.func."""
    _, xs = _models(mnist_small)
    x = xs[:5, :, ::2, ::2]
    torch.manual_seed(1)
    inplace = _bn_stats(nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True), nn.Flatten(),
                                      nn.Linear(3 * 12 * 12, 4)), xs[:40, :, ::2, ::2])
    j = _explicit_jacobian(inplace, x)
    assert _rel(empirical_ntk(inplace, x, device="cpu"), torch.einsum("aip,bjp->abij", j, j)) < RTOL
    ln = nn.Sequential(nn.Flatten(), nn.Linear(196, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).eval()
    j = _explicit_jacobian(ln, x)
    assert _rel(empirical_ntk(ln, x, device="cpu"), torch.einsum("aip,bjp->abij", j, j)) < RTOL
    with pytest.raises(ScoreError, match="structured"):
        empirical_ntk(ln, x, method="structured", device="cpu")


def test_bad_inputs(mnist_small):
    models, xs = _models(mnist_small)
    bad = xs[:4].clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ScoreError, match="NaN"):
        empirical_ntk(models["mlp"], bad, device="cpu")
    with pytest.raises(ScoreError, match="match no"):
        empirical_ntk(models["mlp"], xs[:4], params=["nope"], device="cpu")
    with pytest.raises(ValueError, match="mode"):
        empirical_ntk(models["mlp"], xs[:4], mode="diag", device="cpu")
