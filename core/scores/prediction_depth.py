"""Prediction depth: how deep into the network an example's prediction is settled.

Source: Baldock, Maennel, Neyshabur, "Deep Learning Through the Lens of Example Difficulty", NeurIPS 2021.

k-NN probes. At every probed layer l (the input, the output of each block of the network, and the output
logits) the representation h_l(x) (flattened) of a point x is classified by a k-NN majority vote (k = 30 in
the paper) among the *training* points' representations h_l(x_j), each with its given label y_j; a training
point is never its own neighbour. Neighbours are the *nearest* ones in Euclidean distance (exact search,
``core.knn``). Vote ties go to the tied class whose nearest member is closest.

Depth. With probes l = 0 (input), 1, ..., L (logits) and f(x) the network's final prediction (argmax of the
logits),

    depth(x) = min { l ∈ {0, ..., L+1} : knn_l'(x) = f(x) for every l' with l ≤ l' ≤ L },

i.e. the earliest probe from which every later probe agrees with the network: 0 when all probes agree,
L+1 when even the probe on the logits disagrees. It is computed for training points and held-out points
(the support is always the training set). The *effective* prediction depth averages depth(x) over M
independently trained models (paper, Sec. 2).

Memory: for a ``StagedNet`` the activations are pushed through one stage at a time (only the current layer's
activations of all rows are held), and each layer's kNN is searched before the next stage runs. Named
``layers`` (module names of any ``nn.Module``) are captured one at a time with a forward hook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.errors import ScoreError
from core.knn import knn, knn_vote

Layers = Sequence[int] | Sequence[str] | None


@dataclass
class DepthResult:
    """Depth of each training row (``train``) and query row (``query``, None without queries).

    ``n_probes`` = L+1 probes, so depths lie in [0, n_probes]; ``layers`` names the probes in order;
    ``probe_pred`` (n_probes, n_train + n_query) is each probe's k-NN vote and ``final`` (n_train + n_query)
    the network's prediction (training rows first).
    """

    train: np.ndarray
    query: np.ndarray | None
    n_probes: int
    layers: list[str]
    probe_pred: np.ndarray
    final: np.ndarray


def depth_from_agreement(agree: np.ndarray) -> np.ndarray:
    """depth = n_probes − (number of trailing probes that agree with the final prediction).

    ``agree`` is bool (n_probes, n); the result is the earliest probe index from which all later probes agree
    (0 when all agree, n_probes when the last probe disagrees).
    """
    agree = np.asarray(agree, dtype=bool)
    n_probes = agree.shape[0]
    trailing = np.cumprod(agree[::-1], axis=0).sum(axis=0)
    return (n_probes - trailing).astype(np.int64)


def _batches(x: torch.Tensor | np.ndarray, batch: int) -> Iterator[slice]:
    for s in range(0, len(x), batch):
        yield slice(s, s + batch)


@torch.no_grad()
def _apply(module: nn.Module, x: torch.Tensor, dev: torch.device, batch: int) -> torch.Tensor:
    """``module`` applied to CPU tensor ``x`` in batches on ``dev``; result on CPU."""
    return torch.cat([module(x[s].to(dev)).cpu() for s in _batches(x, batch)])


def _staged_layers(model: nn.Module, x: torch.Tensor, layers: Sequence[int] | None, dev: torch.device,
                   batch: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, representation of all rows) for probe indices of a StagedNet, one stage at a time.

    Probe 0 is the input, probe s is the output of stage s (the last stage's output is the logits).
    """
    n_stages = len(model.stages)
    wanted = list(range(n_stages + 1)) if layers is None else sorted(set(int(i) for i in layers))
    if wanted and (wanted[0] < 0 or wanted[-1] > n_stages):
        raise ValueError(f"probe indices must lie in [0, {n_stages}] for this network, got {list(layers or [])}")
    h = x
    if 0 in wanted:
        yield "input", h
    for s, stage in enumerate(model.stages, start=1):
        if s > wanted[-1]:
            break
        h = _apply(stage, h, dev, batch)
        if s in wanted:
            yield ("logits" if s == n_stages else f"stage{s}"), h


def _hooked_layers(model: nn.Module, x: torch.Tensor, names: Sequence[str], dev: torch.device,
                   batch: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, output of module ``name`` for all rows), one forward pass per layer."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ValueError(f"no module named {name!r} in the model; known: {', '.join(list(modules)[1:12])}...")
        captured: list[torch.Tensor] = []
        handle = modules[name].register_forward_hook(
            lambda _m, _i, out, store=captured: store.append(out.detach().cpu())
        )
        try:
            _apply(model, x, dev, batch)
        finally:
            handle.remove()
        yield name, torch.cat(captured)


def _probe_votes(rep: torch.Tensor, n_train: int, y_train: np.ndarray, k: int, n_classes: int,
                 device: str) -> np.ndarray:
    """k-NN vote of every row (train rows first, self excluded) against the training rows."""
    feats = rep.reshape(len(rep), -1).float().numpy()
    self_index = np.concatenate([np.arange(n_train), np.full(len(feats) - n_train, -1)])
    _, idx = knn(feats, feats[:n_train], k, self_index=self_index, device=device)
    pred, _ = knn_vote(y_train[idx], n_classes)
    return pred


def prediction_depth(
    model: nn.Module,
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray,
    x_query: np.ndarray | torch.Tensor | None = None,
    *,
    layers: Layers = None,
    k: int = 30,
    device: str | torch.device = "auto",
    batch: int = 512,
) -> DepthResult:
    """Prediction depth of every training row and (optionally) every query row for one trained model.

    Args:
        model: a trained network; a ``StagedNet`` is probed after the input, each stage and the logits.
        x_train, y_train: the support set (training images and their given labels).
        x_query: held-out images, depth against the same training support.
        layers: probe indices of a StagedNet (0 = input, s = after stage s, the last = logits) or module names
            (any network; the logits probe is appended when missing).
        k: neighbours per probe (paper: 30).
    """
    dev = resolve_device(device)
    y_train = np.asarray(y_train, dtype=np.int64)
    xs = [torch.as_tensor(np.asarray(x_train), dtype=torch.float32)]
    if x_query is not None:
        xs.append(torch.as_tensor(np.asarray(x_query), dtype=torch.float32))
    x = torch.cat(xs)
    n_train = len(xs[0])
    if n_train != len(y_train):
        raise ValueError(f"prediction_depth: {n_train} training images but {len(y_train)} labels")
    if n_train <= k:
        raise ScoreError(f"prediction_depth needs more than k={k} training rows, got {n_train}")
    was_training = model.training
    model.eval().to(dev)
    try:
        logits = _apply(model, x, dev, batch)
        final = logits.argmax(1).numpy()
        n_classes = int(max(y_train.max() + 1, logits.shape[1]))
        knn_device = "cpu" if dev.type == "cpu" else "auto"
        named = layers is not None and len(layers) > 0 and isinstance(layers[0], str)
        if named:
            reps: Iterator[tuple[str, torch.Tensor]] = _hooked_layers(model, x, list(layers), dev, batch)
        else:
            if not hasattr(model, "stages"):
                raise ValueError("integer probe layers need a StagedNet; pass module names for other networks")
            reps = _staged_layers(model, x, layers, dev, batch)
        names, votes = [], []
        for name, rep in reps:
            names.append(name)
            votes.append(_probe_votes(rep, n_train, y_train, k, n_classes, knn_device))
        if named:  # the paper's last probe is always the network's output
            names.append("logits")
            votes.append(_probe_votes(logits, n_train, y_train, k, n_classes, knn_device))
    finally:
        model.train(was_training)
    probe_pred = np.stack(votes)
    depth = depth_from_agreement(probe_pred == final[None, :])
    has_q = x_query is not None
    return DepthResult(train=depth[:n_train], query=depth[n_train:] if has_q else None, n_probes=len(names),
                       layers=names, probe_pred=probe_pred, final=final)


# ------------------------------------------------------------------------------------------- adapter

DEFAULT_PARAMS: dict[str, Any] = {"k": 30, "models": 1, "layers": None}


def adapter(ctx) -> Any:
    """Pipeline adapter: effective prediction depth (mean over ``models`` networks) for all rows.

    Support = training rows with their given labels; test rows are queries. Model 0 is ``ctx.model``; model
    m ≥ 1 is ``ctx.train_model(ctx.seed + m)`` (same recipe, another seed).
    """
    from core.scores.registry import ScoreResult

    t0 = time.perf_counter()
    params = {**DEFAULT_PARAMS, **(ctx.params or {})}
    m_models = int(params["models"])
    if m_models < 1:
        raise ValueError(f"prediction_depth models must be ≥ 1, got {m_models}")
    tr, te = ctx.train_idx, ctx.test_idx
    images, labels = ctx.data.images, ctx.data.labels
    total = np.full(len(labels), np.nan)
    total[tr] = 0.0
    total[te] = 0.0
    n_probes, names = 0, []
    for m in range(m_models):
        ctx.progress(f"prediction_depth: model {m + 1}/{m_models}", m / m_models)
        model = ctx.model if m == 0 else ctx.train_model(int(ctx.seed) + m)
        res = prediction_depth(model, images[tr], labels[tr], images[te] if len(te) else None,
                               layers=params["layers"], k=int(params["k"]), device=ctx.device)
        total[tr] += res.train
        if len(te):
            total[te] += res.query
        n_probes, names = res.n_probes, res.layers
    col = total / m_models
    info = {"n_probes": n_probes, "probes": names, "max_depth": n_probes, "support_rows": int(len(tr)),
            "seconds": round(time.perf_counter() - t0, 3)}
    return ScoreResult(columns={"prediction_depth": col}, params={**params, "models": m_models}, info=info)
