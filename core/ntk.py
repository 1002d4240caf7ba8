"""The empirical neural tangent kernel (NTK) and per-sample Jacobian features.

For a network ``f_w: x -> R^k`` and a chosen parameter set ``w`` (all trainable parameters, or a subset), the
empirical NTK is (Jacot, Gabriel, Hongler, NeurIPS 2018; as used by Lee et al., NeurIPS 2019 and by
Harutyunyan et al., ICLR 2021 for smooth unique information)::

    Θ(x1, x2) = J(x1) J(x2)ᵀ,       J(x) = ∂f_w(x)/∂w ∈ R^{k×p}

``mode="full"`` returns the (n1, n2, k, k) tensor Θ[a, b, i, j] = ⟨∂f_i(x1_a)/∂w, ∂f_j(x2_b)/∂w⟩;
``mode="trace"`` returns the output-averaged (n1, n2) kernel (1/k) Σ_i Θ[a, b, i, i].

How it is computed (``method="structured"``, the default whenever every selected parameter belongs to a
``Linear``, ``Conv2d`` or ``BatchNorm`` layer):

- one forward pass per chunk of samples (forward hooks record every selected layer's input ``a`` and output),
  then one backward pass per output j through the kept graph, asking autograd only for the gradients
  ``g = ∂f_j/∂(layer output)`` (never for parameter gradients, and never below the lowest selected layer);
  BatchNorm runs in eval mode (running statistics), so samples are independent;
- per-sample parameter Jacobians follow in closed form: a convolution's is ``g·unfold(a)ᵀ``, BatchNorm's
  ``Σ g·x̂`` and ``Σ g``; a ``Linear`` layer is never materialised: its kernel block is the Hadamard product
  ``(G1 G2ᵀ) ∘ (A1 A2ᵀ + 1)`` (for the classifier, whose ``g`` is one-hot, this is ``kron(A1A2ᵀ+1, I_k)``),
  which costs ``N²·out + n²·in`` instead of ``N²·out·in``;
- Jacobians stay float32 (the model's dtype); products are summed over column blocks in float64; with
  ``x2=None`` only the upper triangle of chunk pairs is computed (Θ is symmetric).

``method="functorch"`` (any architecture) computes per-sample Jacobians with ``torch.func.vmap(jacrev(...))``
as in the PyTorch NTK tutorial, then contracts them the same way.

Random projection (``projection_dim=d``): the Jacobian rows are multiplied by a seeded random matrix
Ω ∈ R^{p×d} with E[ΩΩᵀ] = I, so G = JΩ gives Θ ≈ G Gᵀ (Johnson–Lindenstrauss; Achlioptas, 2003):

- ``"gaussian"``: Ω_ij ~ N(0, 1/d); ``"rademacher"``: Ω_ij = ±1/√d;
- ``"sparse"``: CountSketch (Charikar et al., 2002; Clarkson & Woodruff, 2013): each parameter goes to one
  random column with a random sign, so G costs O(N·p) instead of O(N·p·d).

For Linear layers the Gaussian/Rademacher projection is factored (``Σ_o g_o (a·Ω_o + Ω_b,o)``), k times
cheaper than projecting the materialised Jacobian.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.errors import ScoreError

Mode = Literal["full", "trace"]
Projection = Literal["gaussian", "rademacher", "sparse"]
ParamSpec = Sequence[str] | str | int | None

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_STRUCTURED_TYPES = (nn.Linear, nn.Conv2d, *_BN_TYPES)
_DEFAULT_BUDGET_MB = 256.0
_GEMM_COLS = 8192  # column block of one float32 GEMM before float64 accumulation


# --------------------------------------------------------------------------------------------------------
# parameter selection
# --------------------------------------------------------------------------------------------------------


def select_parameters(model: nn.Module, params: ParamSpec = None) -> list[str]:
    """Names of the parameters the Jacobian is taken with respect to.

    ``params``: ``None`` = every parameter with ``requires_grad``; a list of names or module prefixes
    (``"stages.4"`` selects ``stages.4.weight`` and ``stages.4.bias``); a comma-separated string of the same;
    ``"last:N"`` or an int ``N`` = the parameters of the last N modules that own parameters.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ScoreError("the model has no trainable parameters to differentiate")
    if params is None:
        return [n for n, _ in named]
    if isinstance(params, str) and params.strip().lower().startswith("last:"):
        params = int(params.split(":", 1)[1])
    if isinstance(params, int):
        owners = [m for m, mod in model.named_modules() if any(True for _ in mod.parameters(recurse=False))]
        if params < 1:
            raise ScoreError(f"params=last:{params}: need at least one module")
        chosen = owners[-params:]
        return [n for n, _ in named if any(_under(n, m) for m in chosen)]
    items = [s.strip() for s in params.split(",")] if isinstance(params, str) else [str(s) for s in params]
    items = [s for s in items if s]
    out = [n for n, _ in named if any(_under(n, s) for s in items)]
    unknown = [s for s in items if not any(_under(n, s) for n, _ in named)]
    if unknown or not out:
        raise ScoreError(f"params {unknown or items} match no trainable parameter; names look like "
                         f"{[n for n, _ in named][:4]}...")
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# --------------------------------------------------------------------------------------------------------
# per-chunk Jacobian pieces
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Factored:
    """A Linear layer's Jacobian kept as factors: rows g (b·k, out) and inputs a (b, in)."""

    g: torch.Tensor
    a: torch.Tensor
    weight: str | None
    bias: str | None


@dataclass
class _Pieces:
    """The Jacobian of one chunk of ``b`` samples: rows are (sample, output) pairs, ``b·k`` of them."""

    b: int
    k: int
    explicit: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (param name, (b·k, numel))
    factored: list[_Factored] = field(default_factory=list)
    _flat: torch.Tensor | None = None

    def flat(self) -> torch.Tensor:
        """All explicit pieces side by side, (b·k, p_explicit)."""
        if self._flat is None:
            mats = [m for _, m in self.explicit]
            self._flat = torch.cat(mats, 1) if mats else None
        return self._flat


class _JacobianEngine:
    """Computes per-chunk Jacobian pieces of ``model`` w.r.t. the selected parameters."""

    def __init__(self, model: nn.Module, names: list[str], device: torch.device, method: str = "auto"):
        self.model = model
        self.names = names
        self.device = device
        params = dict(model.named_parameters())
        self.numel = {n: params[n].numel() for n in names}
        self.layers = self._structured_layers(names) if method in ("auto", "structured") else None
        if self.layers is None and method == "structured":
            raise ScoreError("method='structured' supports Linear, Conv2d (zero padding) and BatchNorm with "
                             "running statistics only; use method='functorch' for this model")
        if method not in ("auto", "structured", "functorch"):
            raise ValueError(f"unknown method {method!r}: use 'auto', 'structured' or 'functorch'")
        self.method = "structured" if self.layers is not None else "functorch"

    # -- which layers own the selected parameters -------------------------------------------------------
    def _structured_layers(self, names: list[str]) -> dict[nn.Module, dict[str, str]] | None:
        wanted = set(names)
        layers: dict[nn.Module, dict[str, str]] = {}
        seen: dict[int, str] = {}
        for mname, mod in self.model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                if id(p) in seen:  # a parameter shared between modules
                    return None
                seen[id(p)] = full
                if full not in wanted:
                    continue
                if not isinstance(mod, _STRUCTURED_TYPES) or pname not in ("weight", "bias"):
                    return None
                if isinstance(mod, nn.Conv2d) and (isinstance(mod.padding, str) or mod.padding_mode != "zeros"):
                    return None
                if isinstance(mod, _BN_TYPES) and mod.running_mean is None:
                    return None
                layers.setdefault(mod, {})[pname] = full
        return layers

    # -- public --------------------------------------------------------------------------------------------
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(x.to(self.device))
        return out.reshape(len(x), -1)

    def pieces(self, x: torch.Tensor) -> _Pieces:
        x = x.to(self.device)
        if self.method == "structured":
            return self._pieces_structured(x)
        return self._pieces_functorch(x)

    # -- structured: one forward, one backward per output ---------------------------------------------------
    def _pieces_structured(self, x: torch.Tensor) -> _Pieces:
        records, out = self._forward(x, clone=False)
        if any(o._version != v for recs in records.values() for _, o, v, _ in recs):
            # an in-place op (e.g. ReLU(inplace=True)) overwrote a recorded output: redo on copies
            records, out = self._forward(x, clone=True)
        if any(a._version != v for recs in records.values() for a, _, _, v in recs):
            # a recorded layer input was overwritten after use: only torch.func is safe for this model
            self.method = "functorch"
            return self._pieces_functorch(x)
        b, k = out.shape
        pieces = _Pieces(b=b, k=k)
        # what each recorded call needs: Linear -> its output gradient (b, k, out); others -> Jacobian rows
        plan = []
        bufs: dict[str, torch.Tensor] = {}
        for mod, recs in records.items():
            own = self.layers[mod]
            for a, o, _, _ in recs:
                if isinstance(mod, nn.Linear) and len(recs) == 1 and a.dim() == 2:
                    gbuf = o.new_empty(b, k, o.shape[1])
                    pieces.factored.append(_Factored(gbuf, a, own.get("weight"), own.get("bias")))
                    plan.append(("factored", gbuf))
                    continue
                prep = _prepare(mod, a)
                for full in own.values():
                    bufs.setdefault(full, o.new_zeros(b, k, self.numel[full]))
                plan.append(("explicit", (mod, prep, own)))
        outs = [o for recs in records.values() for _, o, _, _ in recs]
        with torch.enable_grad():
            for j in range(k):
                grads = torch.autograd.grad(out[:, j].sum(), outs, retain_graph=j < k - 1, allow_unused=True)
                for (kind, item), g, o in zip(plan, grads, outs, strict=True):
                    g = torch.zeros_like(o) if g is None else g
                    if kind == "factored":
                        item[:, j] = g
                        continue
                    mod, prep, own = item
                    for pname, full in own.items():
                        bufs[full][:, j] += _layer_jacobian(mod, pname, prep, g)
        for f in pieces.factored:
            f.g = f.g.reshape(b * k, -1)
        pieces.explicit = [(n, bufs[n].reshape(b * k, -1)) for n in self.names if n in bufs]
        return pieces

    def _forward(self, x: torch.Tensor, clone: bool) -> tuple[dict, torch.Tensor]:
        """One forward of the chunk recording each selected layer's (input, output) and their versions."""
        records: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor, int, int]]] = {m: [] for m in self.layers}

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor | None:
            records[mod].append((inp[0].detach(), out, out._version, inp[0]._version))
            return out.clone() if clone else None

        handles = [m.register_forward_hook(hook) for m in self.layers]
        try:
            with torch.enable_grad():
                out = self.model(x).reshape(len(x), -1)
        finally:
            for h in handles:
                h.remove()
        return records, out

    # -- functorch: vmap(jacrev) -----------------------------------------------------------------------
    def _pieces_functorch(self, x: torch.Tensor) -> _Pieces:
        from torch.func import functional_call, jacrev, vmap

        sel = {n: p.detach() for n, p in self.model.named_parameters() if n in self.numel}
        rest = {n: p.detach() for n, p in self.model.named_parameters() if n not in self.numel}
        rest.update(dict(self.model.named_buffers()))

        def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return functional_call(self.model, {**p, **rest}, (xi.unsqueeze(0),)).reshape(-1)

        jac = vmap(jacrev(f), in_dims=(None, 0))(sel, x)
        b = len(x)
        k = next(iter(jac.values())).shape[1]
        pieces = _Pieces(b=b, k=k)
        pieces.explicit = [(n, jac[n].reshape(b * k, -1)) for n in self.names]
        return pieces


def _prepare(mod: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """What a layer's per-sample Jacobian needs from its input a (b, ...): a convolution's unfolded patches
    (b, groups, Cin/groups·kh·kw, L), BatchNorm's normalised input x̂ (b, C, L), a Linear layer's input."""
    b = len(a)
    if isinstance(mod, nn.Conv2d):
        u = nn.functional.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
        return u.reshape(b, mod.groups, -1, u.shape[-1])
    if isinstance(mod, _BN_TYPES):
        shape = (1, -1) + (1,) * (a.dim() - 2)
        xhat = (a - mod.running_mean.reshape(shape)) / torch.sqrt(mod.running_var.reshape(shape) + mod.eps)
        return xhat.reshape(b, a.shape[1], -1)
    return a.reshape(b, -1, a.shape[-1])


def _layer_jacobian(mod: nn.Module, pname: str, prep: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobian of one output w.r.t. one parameter of a Linear / Conv2d / BatchNorm layer.

    prep: ``_prepare(mod, input)``; g: ∂f_j/∂(layer output) per sample (b, ...). Returns (b, numel(param)):
    conv weight Σ_l g[o, l]·patch[i, l]; conv/BN/Linear bias Σ_l g; BN weight Σ_l g·x̂; Linear weight Σ_t g⊗a.
    """
    b = len(g)
    if pname == "bias":
        ch = g.shape[-1] if isinstance(mod, nn.Linear) else g.shape[1]
        return (g.reshape(b, -1, ch).sum(1) if isinstance(mod, nn.Linear) else g.reshape(b, ch, -1).sum(-1))
    if isinstance(mod, nn.Conv2d):
        gg = g.reshape(b, mod.groups, -1, prep.shape[-1])  # (b, G, Cout/G, L)
        return torch.matmul(gg, prep.transpose(2, 3)).reshape(b, -1)
    if isinstance(mod, _BN_TYPES):
        return torch.einsum("bcl,bcl->bc", g.reshape(b, g.shape[1], -1), prep)
    if isinstance(mod, nn.Linear):
        return torch.einsum("bto,bti->boi", g.reshape(b, -1, g.shape[-1]), prep).reshape(b, -1)
    raise TypeError(f"no structured Jacobian for {type(mod).__name__}")


# --------------------------------------------------------------------------------------------------------
# kernels from pieces
# --------------------------------------------------------------------------------------------------------


def _linear_input_gram(f1: _Factored, f2: _Factored) -> torch.Tensor:
    """A1 A2ᵀ (+1 for the bias) in float64, or all-ones when only the bias is selected."""
    if f1.weight is None:
        return torch.ones(len(f1.a), len(f2.a), dtype=torch.float64, device=f1.a.device)
    gram = (f1.a @ f2.a.T).double()
    return gram + 1.0 if f1.bias is not None else gram


def _block_full(p1: _Pieces, p2: _Pieces) -> torch.Tensor:
    """Θ block between two chunks, rows (s1·k + i), columns (s2·k + j), float64."""
    k = p1.k
    e1, e2 = p1.flat(), p2.flat()
    blk = torch.zeros(p1.b * k, p2.b * k, dtype=torch.float64, device=_dev(p1))
    if e1 is not None:
        for s in range(0, e1.shape[1], _GEMM_COLS):
            blk += (e1[:, s:s + _GEMM_COLS] @ e2[:, s:s + _GEMM_COLS].T).double()
    for f1, f2 in zip(p1.factored, p2.factored, strict=True):
        gg = (f1.g @ f2.g.T).double().reshape(p1.b, k, p2.b, k)
        blk += (gg * _linear_input_gram(f1, f2)[:, None, :, None]).reshape(p1.b * k, p2.b * k)
    return blk


def _block_trace(p1: _Pieces, p2: _Pieces) -> torch.Tensor:
    """(1/k) Σ_j ⟨J_j(x1), J_j(x2)⟩ between two chunks, (b1, b2) float64."""
    k = p1.k
    e1, e2 = p1.flat(), p2.flat()
    blk = torch.zeros(p1.b, p2.b, dtype=torch.float64, device=_dev(p1))
    if e1 is not None:
        v1 = e1.reshape(p1.b, k, -1).transpose(0, 1)
        v2 = e2.reshape(p2.b, k, -1).transpose(0, 1)
        for s in range(0, v1.shape[2], _GEMM_COLS):
            blk += torch.bmm(v1[..., s:s + _GEMM_COLS], v2[..., s:s + _GEMM_COLS].transpose(1, 2)).double().sum(0)
    for f1, f2 in zip(p1.factored, p2.factored, strict=True):
        g1 = f1.g.reshape(p1.b, k, -1).transpose(0, 1)
        g2 = f2.g.reshape(p2.b, k, -1).transpose(0, 1)
        blk += torch.bmm(g1, g2.transpose(1, 2)).double().sum(0) * _linear_input_gram(f1, f2)
    return blk / k


def _dev(p: _Pieces) -> torch.device:
    t = p.flat() if p.explicit else p.factored[0].g
    return t.device


# --------------------------------------------------------------------------------------------------------
# random projections
# --------------------------------------------------------------------------------------------------------


class _Projector:
    """A seeded random matrix Ω (p × d), generated per parameter, with E[ΩΩᵀ] = I.

    Parameters named in ``exact`` are not projected: their Jacobian columns are appended unchanged after the
    d projected ones (a block-diagonal Ω with an identity block), so their part of Θ stays exact.
    """

    def __init__(self, names: list[str], numel: dict[str, int], d: int, kind: str, seed: int,
                 device: torch.device, dtype: torch.dtype, exact: Sequence[str] = ()):
        if kind not in ("gaussian", "rademacher", "sparse"):
            raise ValueError(f"unknown projection {kind!r}: use 'gaussian', 'rademacher' or 'sparse'")
        if d < 1:
            raise ValueError(f"projection_dim must be >= 1, got {d}")
        self.d, self.kind, self.device, self.dtype = d, kind, device, dtype
        self.offset: dict[str, int] = {}
        col0 = d
        for n in names:
            if n in set(exact):
                self.offset[n] = col0
                col0 += numel[n]
        self.dim = col0
        projected = [n for n in names if n not in self.offset]
        dense_gib = sum(numel[n] for n in projected) * d * 4 / 2**30
        if kind != "sparse" and dense_gib > 2:
            raise ScoreError(f"a dense {kind} projection of {sum(numel[n] for n in projected):,} parameters to "
                             f"d = {d} needs {dense_gib:.0f} GiB: use projection='sparse' (CountSketch) or fewer "
                             "parameters")
        self.mats: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}
        for i, n in enumerate(names):
            if n in self.offset:
                continue
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
            p = numel[n]
            if kind == "sparse":
                col = torch.randint(0, d, (p,), generator=gen)
                sign = torch.randint(0, 2, (p,), generator=gen).to(dtype) * 2 - 1
                self.mats[n] = (col.to(device), sign.to(device))
            elif kind == "gaussian":
                self.mats[n] = (torch.randn(p, d, generator=gen, dtype=torch.float32) / math.sqrt(d)).to(device, dtype)
            else:
                r = torch.randint(0, 2, (p, d), generator=gen).to(torch.float32) * 2 - 1
                self.mats[n] = (r / math.sqrt(d)).to(device, dtype)

    def _add(self, out: torch.Tensor, name: str, jac: torch.Tensor) -> None:
        """out[:, :d] += J Ω for a projected parameter; out[:, its columns] = J for an exact one."""
        if name in self.offset:
            out[:, self.offset[name]:self.offset[name] + jac.shape[1]] = jac
            return
        m = self.mats[name]
        if self.kind == "sparse":
            col, sign = m
            out[:, :self.d].index_add_(1, col, jac * sign)
        else:
            out[:, :self.d] += jac @ m

    def _factored(self, out: torch.Tensor, f: _Factored, k: int) -> None:
        """A Linear layer's rows g ⊗ [a, 1]: dense projections without materialising them (Σ_o g_o (a·Ω_o + Ω_b))."""
        b, out_dim = len(f.a), f.g.shape[1]
        w_dense = f.weight is not None and f.weight not in self.offset and self.kind != "sparse"
        b_dense = f.bias is not None and f.bias not in self.offset and self.kind != "sparse"
        if w_dense or b_dense:
            t = torch.zeros(b, out_dim, self.d, dtype=f.g.dtype, device=f.g.device)
            if w_dense:
                t = t + torch.einsum("bi,oid->bod", f.a, self.mats[f.weight].reshape(out_dim, -1, self.d))
            if b_dense:
                t = t + self.mats[f.bias][None]
            out[:, :self.d] += torch.bmm(f.g.reshape(b, k, out_dim), t).reshape(b * k, self.d)
        if f.weight is not None and not w_dense:
            jac = torch.einsum("bjo,bi->bjoi", f.g.reshape(b, k, out_dim), f.a).reshape(b * k, -1)
            self._add(out, f.weight, jac)
        if f.bias is not None and not b_dense:
            self._add(out, f.bias, f.g)

    def project(self, pieces: _Pieces) -> torch.Tensor:
        g = torch.zeros(pieces.b * pieces.k, self.dim, dtype=self.dtype, device=self.device)
        for name, jac in pieces.explicit:
            self._add(g, name, jac)
        for f in pieces.factored:
            self._factored(g, f, pieces.k)
        return g


# --------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------


def _check_inputs(x: torch.Tensor | object, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 2 or len(x) == 0:
        raise ScoreError(f"{what} must be a non-empty batch (n, ...), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ScoreError(f"{what} contains NaN or infinite values")
    return x


def _default_chunk(n: int, k: int, p: int, budget_mb: float) -> int:
    per_sample = max(1, k * p * 4 * 3)  # Jacobian rows + activations/unfold headroom
    return int(max(1, min(n, 128, budget_mb * 2**20 // per_sample)))  # ≤ 128: activations stay in cache


class _EvalMode:
    """Context: the model in eval mode (BatchNorm uses running statistics), restored on exit."""

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def _model_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def jacobian_features(
    model: nn.Module,
    x: torch.Tensor,
    *,
    params: ParamSpec = None,
    projection_dim: int | None = None,
    projection: Projection = "gaussian",
    seed: int = 0,
    chunk_size: int | None = None,
    device: str | torch.device = "auto",
    method: str = "auto",
    exact_params: ParamSpec = None,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Per-sample Jacobian features G (n, k, d): ``G[s, j] = Ω ᵀ ∂f_j(x_s)/∂w`` so that Θ ≈ G Gᵀ.

    With ``projection_dim=None`` the exact Jacobian is returned (d = p, parameters in ``select_parameters``
    order). ``exact_params`` (same syntax as ``params``, e.g. ``"last:1"`` for the classifier) are kept
    unprojected: their columns follow the d projected ones, so d grows by their size and their block of Θ is
    exact. The result is in the model's dtype (float32 normally), on ``device``.
    """
    dev = resolve_device(device)
    x = _check_inputs(x, "x")
    model = model.to(dev)
    names = select_parameters(model, params)
    with _EvalMode(model):
        eng = _JacobianEngine(model, names, dev, method)
        dtype = _model_dtype(model)
        p = sum(eng.numel.values())
        k = eng.outputs(x[:1]).shape[1]
        exact = [] if exact_params is None else [n for n in select_parameters(model, exact_params) if n in names]
        proj = None if projection_dim is None else _Projector(names, eng.numel, int(projection_dim), projection,
                                                               seed, dev, dtype, exact)
        size = chunk_size or _default_chunk(len(x), k, p, _DEFAULT_BUDGET_MB)
        out = []
        for sl in _chunks(len(x), size):
            pieces = eng.pieces(x[sl])
            out.append(_materialise(pieces, names, eng.numel) if proj is None else proj.project(pieces))
            if progress is not None:
                progress(sl.stop / len(x))
        g = torch.cat(out, 0)
    return g.reshape(len(x), k, -1)


def jacobian_shard(bounds: tuple[int, int], model: nn.Module, x: Any, **kw: Any) -> np.ndarray:
    """``jacobian_features`` of rows ``[lo, hi)`` of ``x`` (an array or tensor), flattened to (rows, k·d)
    float32 numpy: the unit of the Jacobian features on every executor (``core.executors``). The projection
    depends only on its seed, so a shard's rows equal the same rows of one call over all of ``x``."""
    lo, hi = bounds
    part = torch.as_tensor(np.asarray(x[lo:hi]))
    g = jacobian_features(model, part, **kw)
    return g.reshape(len(part), -1).float().cpu().numpy()


def _materialise(pieces: _Pieces, names: list[str], numel: dict[str, int]) -> torch.Tensor:
    """The exact Jacobian rows (b·k, p), parameters in ``names`` order (zeros for a parameter the forward
    pass never used)."""
    cols = dict(pieces.explicit)
    k, b = pieces.k, pieces.b
    for f in pieces.factored:
        if f.weight is not None:
            cols[f.weight] = torch.einsum("bjo,bi->bjoi", f.g.reshape(b, k, -1), f.a).reshape(b * k, -1)
        if f.bias is not None:
            cols[f.bias] = f.g
    ref = next(iter(cols.values()))
    return torch.cat([cols[n] if n in cols else ref.new_zeros(b * k, numel[n]) for n in names], 1)


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    params: ParamSpec = None,
    mode: Mode = "full",
    chunk_size: int | None = None,
    device: str | torch.device = "auto",
    projection_dim: int | None = None,
    seed: int = 0,
    projection: Projection = "gaussian",
    method: str = "auto",
    memory_budget_mb: float = 1536.0,
) -> torch.Tensor:
    """The empirical NTK Θ(x1, x2) = J(x1) J(x2)ᵀ of ``model`` w.r.t. the selected parameters.

    Args:
        model: any ``nn.Module`` mapping a batch to (batch, k) outputs; run in eval mode (restored after).
        x1, x2: input batches; ``x2=None`` means x2 = x1 (symmetric, half the work).
        params: parameter subset (see ``select_parameters``); default all trainable parameters.
        mode: ``"full"`` -> (n1, n2, k, k); ``"trace"`` -> (n1, n2), the average over outputs of the diagonal.
        chunk_size: samples per Jacobian chunk (default: from a 256 MB budget per chunk).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda[:N]"``.
        projection_dim: if set, Θ ≈ G Gᵀ with G = ``jacobian_features(..., projection_dim)``.
        seed, projection: the random projection (``"gaussian"``, ``"rademacher"``, ``"sparse"``).
        method: ``"auto"`` | ``"structured"`` | ``"functorch"`` (see module docstring).
        memory_budget_mb: Jacobian chunks of x1 and x2 are kept in memory when they fit this budget,
            otherwise they are recomputed for every block (time for memory).

    Returns:
        float64 tensor on ``device``.
    """
    if mode not in ("full", "trace"):
        raise ValueError(f"mode must be 'full' or 'trace', got {mode!r}")
    x1 = _check_inputs(x1, "x1")
    x2 = None if x2 is None else _check_inputs(x2, "x2")
    if projection_dim is not None:
        kw = dict(params=params, projection_dim=projection_dim, projection=projection, seed=seed,
                  chunk_size=chunk_size, device=device, method=method)
        g1 = jacobian_features(model, x1, **kw).double()
        g2 = g1 if x2 is None else jacobian_features(model, x2, **kw).double()
        if mode == "trace":
            return torch.einsum("ajd,bjd->ab", g1, g2) / g1.shape[1]
        return torch.einsum("aid,bjd->abij", g1, g2)
    flat = ntk_matrix(model, x1, x2, params=params, mode=mode, chunk_size=chunk_size, device=device,
                      method=method, memory_budget_mb=memory_budget_mb)
    if mode == "trace":
        return flat
    n1, n2 = len(x1), len(x1 if x2 is None else x2)
    k = flat.shape[0] // n1
    return flat.reshape(n1, k, n2, k).permute(0, 2, 1, 3)


def ntk_matrix(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    params: ParamSpec = None,
    mode: Mode = "full",
    chunk_size: int | None = None,
    device: str | torch.device = "auto",
    method: str = "auto",
    memory_budget_mb: float = 1536.0,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Exact Θ as a flat matrix: (n1·k, n2·k) with row ``a·k + i`` (``mode="full"``), or (n1, n2) (trace).

    This is the layout the linear algebra of ``core.scores.unique_info`` works in; ``empirical_ntk``
    reshapes it to (n1, n2, k, k).
    """
    dev = resolve_device(device)
    x1 = _check_inputs(x1, "x1")
    sym = x2 is None
    x2 = x1 if sym else _check_inputs(x2, "x2")
    model = model.to(dev)
    names = select_parameters(model, params)
    with _EvalMode(model):
        eng = _JacobianEngine(model, names, dev, method)
        k = eng.outputs(x1[:1]).shape[1]
        p = sum(eng.numel.values())
        size = chunk_size or _default_chunk(max(len(x1), len(x2)), k, p, _DEFAULT_BUDGET_MB)
        s1, s2 = list(_chunks(len(x1), size)), list(_chunks(len(x2), size))
        est_mb = (len(x1) + (0 if sym else len(x2))) * k * p * 4 / 2**20
        cache = est_mb <= memory_budget_mb
        c1 = [eng.pieces(x1[s]) for s in s1] if cache else None
        c2 = c1 if sym else ([eng.pieces(x2[s]) for s in s2] if cache else None)
        block = _block_full if mode == "full" else _block_trace
        rows = k if mode == "full" else 1
        out = torch.zeros(len(x1) * rows, len(x2) * rows, dtype=torch.float64, device=dev)
        total = len(s1) * (len(s1) + 1) // 2 if sym else len(s1) * len(s2)
        done = 0
        for i, sa in enumerate(s1):
            pa = c1[i] if cache else eng.pieces(x1[sa])
            for j, sb in enumerate(s2):
                if sym and j < i:
                    continue
                pb = (c2[j] if cache else (pa if (sym and i == j) else eng.pieces(x2[sb])))
                blk = block(pa, pb)
                ra, rb = slice(sa.start * rows, sa.stop * rows), slice(sb.start * rows, sb.stop * rows)
                out[ra, rb] = blk
                if sym and j != i:
                    out[rb, ra] = blk.T
                done += 1
                if progress is not None:
                    progress(done / total)
    return out


def model_outputs(model: nn.Module, x: torch.Tensor, *, device: str | torch.device = "auto",
                  chunk_size: int = 512) -> torch.Tensor:
    """f(x) in eval mode, (n, k) in the model's dtype, on ``device``."""
    dev = resolve_device(device)
    x = _check_inputs(x, "x")
    model = model.to(dev)
    with _EvalMode(model), torch.no_grad():
        return torch.cat([model(x[s].to(dev)).reshape(s.stop - s.start, -1) for s in _chunks(len(x), chunk_size)])
