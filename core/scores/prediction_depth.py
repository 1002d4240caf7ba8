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

Memory: rows are read in batches (arrays or image stores alike, ``core.device.rows_per_batch`` rows at a
time) and pushed once through the whole network; each probe's representation of the batch is appended to its
own temporary file, so neither the images nor any full-size activation map of all rows is ever held. Then the
probes are searched one at a time: only one probe's representations of all rows are in memory.

Large probes are average-pooled (an approximation, recorded by the adapter): a representation with more than
``max_dim`` values per row (default ``min(4096, budget ÷ (4 bytes · rows))`` with a 1 GiB budget, at least 64)
is pooled over space to the largest s × s grid with C·s² ≤ ``max_dim`` (a 1×1 grid at least: global average
pooling), a token sequence (B, T, D) is averaged over tokens, other shapes are kept. Probes of the small networks
(28×28 or 32×32 inputs) fit whole and are not pooled below 65,000 rows; a 224×224 backbone's early maps are.
Named ``layers`` (module names of any ``nn.Module``) are captured with forward hooks in the same single pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import resolve_device, rows_per_batch
from core.errors import ScoreError
from core.knn import index_for, knn, knn_vote
from core.pooling import pool_spatial
from core.scratch import ScratchDir

Layers = Sequence[int] | Sequence[str] | None
PROBE_BUDGET_BYTES = 1 << 30  # one probe's representations of all rows stay under this (see the docstring)


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
    pooled: dict[str, list[int]] = field(default_factory=dict)  # probe -> [values per row, kept after pooling]
    max_dim: int | None = None
    knn_index: str = "flat"  # the faiss index the probes searched (core.knn: exact "flat" below 100,000 rows)


def depth_from_agreement(agree: np.ndarray) -> np.ndarray:
    """depth = n_probes − (number of trailing probes that agree with the final prediction).

    ``agree`` is bool (n_probes, n); the result is the earliest probe index from which all later probes agree
    (0 when all agree, n_probes when the last probe disagrees).
    """
    agree = np.asarray(agree, dtype=bool)
    n_probes = agree.shape[0]
    trailing = np.cumprod(agree[::-1], axis=0).sum(axis=0)
    return (n_probes - trailing).astype(np.int64)


def pool_probe(t: torch.Tensor, max_dim: int) -> torch.Tensor:
    """A probe's batch (b, ...) as (b, d) float32 with d ≤ ``max_dim`` where pooling can reach it (see the
    module docstring): spatial average pooling of (b, C, H, W) maps, the token mean of (b, T, D) sequences."""
    if t.dim() == 4:
        t = pool_spatial(t, max_dim)
    elif t.dim() == 3 and t[0].numel() > max_dim:
        t = t.mean(1)
    return t.reshape(len(t), -1).float()


def probe_dim_cap(n_rows: int, max_dim: int | None = None, budget_bytes: int = PROBE_BUDGET_BYTES) -> int:
    """Values per row a probe may keep: ``max_dim`` if given, else min(4096, budget ÷ (4 · rows)), ≥ 64."""
    if max_dim is not None:
        if int(max_dim) < 1:
            raise ValueError(f"max_dim must be ≥ 1, got {max_dim}")
        return int(max_dim)
    return max(64, min(4096, int(budget_bytes) // (4 * max(int(n_rows), 1))))


class _ProbeFiles:
    """One append-only float32 file per probe in a temporary folder (page cache, not process memory)."""

    def __init__(self) -> None:
        self._scratch = ScratchDir("infoscope-depth-")  # under INFOSCOPE_CACHE when set, like the image shards
        self.path = self._scratch.path
        self.names: list[str] = []
        self.dims: dict[str, int] = {}
        self.raw_dims: dict[str, int] = {}

    def add(self, name: str, raw: torch.Tensor, max_dim: int) -> None:
        rep = pool_probe(raw, max_dim)
        if name not in self.dims:
            self.names.append(name)
            self.dims[name] = rep.shape[1]
            self.raw_dims[name] = int(raw[0].numel())
        with open(self.path / f"{self.names.index(name)}.f32", "ab") as fh:
            fh.write(np.ascontiguousarray(rep.cpu().numpy(), dtype=np.float32).tobytes())

    def read(self, name: str) -> np.ndarray:
        path = self.path / f"{self.names.index(name)}.f32"
        return np.fromfile(path, dtype=np.float32).reshape(-1, self.dims[name])

    def close(self) -> None:
        self._scratch.remove()


def _probe_votes(rep: np.ndarray, n_train: int, y_train: np.ndarray, k: int, n_classes: int,
                 device: str) -> np.ndarray:
    """k-NN vote of every row (train rows first, self excluded) against the training rows."""
    feats = np.asarray(rep, dtype=np.float32).reshape(len(rep), -1)
    self_index = np.concatenate([np.arange(n_train), np.full(len(feats) - n_train, -1)])
    _, idx = knn(feats, feats[:n_train], k, self_index=self_index, device=device)
    pred, _ = knn_vote(y_train[idx], n_classes)
    return pred


def _rows(x: Any, s: int, e: int) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x[s:e]), dtype=torch.float32)


@torch.no_grad()
def _stream_probes(model: nn.Module, parts: list[Any], layers: Layers, dev: torch.device, batch: int,
                   max_dim: int) -> tuple[_ProbeFiles, np.ndarray, int]:
    """One pass over the rows of ``parts`` (training rows first): every probe's pooled representation to a
    file, and the logits. Returns (files, logits (n, classes), number of probes before the logits probe)."""
    files = _ProbeFiles()
    logits: list[torch.Tensor] = []
    named = layers is not None and len(layers) > 0 and isinstance(layers[0], str)
    if named:
        modules = dict(model.named_modules())
        missing = [nm for nm in layers if nm not in modules]  # type: ignore[union-attr]
        if missing:
            raise ValueError(f"no module named {missing[0]!r} in the model; known: {', '.join(list(modules)[1:12])}...")
    else:
        if not hasattr(model, "stages"):
            raise ValueError("integer probe layers need a StagedNet; pass module names for other networks")
        n_stages = len(model.stages)
        wanted = list(range(n_stages + 1)) if layers is None else sorted(set(int(i) for i in layers))
        if wanted and (wanted[0] < 0 or wanted[-1] > n_stages):
            raise ValueError(f"probe indices must lie in [0, {n_stages}] for this network, got {list(layers or [])}")
    try:
        for x in parts:
            for s in range(0, len(x), batch):
                xb = _rows(x, s, s + batch).to(dev)
                if named:
                    captured: dict[str, torch.Tensor] = {}
                    handles = [modules[nm].register_forward_hook(
                        lambda _m, _i, out, nm=nm, store=captured: store.__setitem__(nm, out.detach()))
                        for nm in layers]  # type: ignore[union-attr]
                    try:
                        out = model(xb)
                    finally:
                        for h in handles:
                            h.remove()
                    for nm in layers:  # type: ignore[union-attr]
                        files.add(str(nm), captured[nm], max_dim)
                else:
                    h = xb
                    if 0 in wanted:
                        files.add("input", h, max_dim)
                    for i, stage in enumerate(model.stages, start=1):
                        h = stage(h)
                        if i in wanted and i < n_stages:
                            files.add(f"stage{i}", h, max_dim)
                    out = h
                    if n_stages in wanted:
                        files.add("logits", out, max_dim)
                logits.append(out.float().cpu())
    except BaseException:
        files.close()
        raise
    return files, torch.cat(logits).numpy(), len(files.names)


def prediction_depth(
    model: nn.Module,
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray,
    x_query: np.ndarray | torch.Tensor | None = None,
    *,
    layers: Layers = None,
    k: int = 30,
    device: str | torch.device = "auto",
    batch: int | None = None,
    max_dim: int | None = None,
) -> DepthResult:
    """Prediction depth of every training row and (optionally) every query row for one trained model.

    Args:
        model: a trained network; a ``StagedNet`` is probed after the input, each stage and the logits.
        x_train, y_train: the support set (training images and their given labels).
        x_query: held-out images, depth against the same training support.
        layers: probe indices of a StagedNet (0 = input, s = after stage s, the last = logits) or module names
            (any network; the logits probe is appended when missing).
        k: neighbours per probe (paper: 30).
        batch: rows per network pass (default ``rows_per_batch`` of the image shape).
        max_dim: values per row a probe keeps before it is pooled (default: ``probe_dim_cap``).
    """
    dev = resolve_device(device)
    y_train = np.asarray(y_train, dtype=np.int64)
    parts = [x_train] + ([x_query] if x_query is not None else [])
    n_train = len(x_train)
    if n_train != len(y_train):
        raise ValueError(f"prediction_depth: {n_train} training images but {len(y_train)} labels")
    if n_train <= k:
        raise ScoreError(f"prediction_depth needs more than k={k} training rows, got {n_train}")
    n_all = sum(len(p) for p in parts)
    cap = probe_dim_cap(n_all, max_dim)
    batch = batch or rows_per_batch(tuple(np.asarray(x_train[:1]).shape[1:]))
    was_training = model.training
    model.eval().to(dev)
    try:
        files, logits, _ = _stream_probes(model, parts, layers, dev, batch, cap)
        named = layers is not None and len(layers) > 0 and isinstance(layers[0], str)
    finally:
        model.train(was_training)
    try:
        final = logits.argmax(1)
        n_classes = int(max(y_train.max() + 1, logits.shape[1]))
        knn_device = "cpu" if dev.type == "cpu" else "auto"
        names = list(files.names)
        votes = [_probe_votes(files.read(nm), n_train, y_train, k, n_classes, knn_device) for nm in names]
        if named:  # the paper's last probe is always the network's output
            names.append("logits")
            votes.append(_probe_votes(logits, n_train, y_train, k, n_classes, knn_device))
        pooled = {nm: [files.raw_dims[nm], files.dims[nm]] for nm in files.names
                  if files.dims[nm] != files.raw_dims[nm]}
    finally:
        files.close()
    probe_pred = np.stack(votes)
    depth = depth_from_agreement(probe_pred == final[None, :])
    has_q = x_query is not None
    return DepthResult(train=depth[:n_train], query=depth[n_train:] if has_q else None, n_probes=len(names),
                       layers=names, probe_pred=probe_pred, final=final, pooled=pooled, max_dim=cap,
                       knn_index=index_for(n_train, knn_device))


# ------------------------------------------------------------------------------------------- adapter

DEFAULT_PARAMS: dict[str, Any] = {"k": 30, "models": 1, "layers": None, "max_dim": None}


def adapter(ctx) -> Any:
    """Pipeline adapter: effective prediction depth (mean over ``models`` networks) for all rows.

    Support = training rows with their given labels; test rows are queries. Model 0 is ``ctx.model``; model
    m ≥ 1 is ``ctx.train_model(ctx.seed + m)`` (same recipe, another seed).
    """
    from core.data.image_store import take_rows
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
    n_probes, names, pooled, cap, index = 0, [], {}, None, None
    for m in range(m_models):
        ctx.progress(f"prediction_depth: model {m + 1}/{m_models}", m / m_models)
        model = ctx.model if m == 0 else ctx.train_model(int(ctx.seed) + m)
        res = prediction_depth(model, take_rows(images, tr), labels[tr], take_rows(images, te) if len(te) else None,
                               layers=params["layers"], k=int(params["k"]), device=ctx.device,
                               max_dim=params.get("max_dim"))
        total[tr] += res.train
        if len(te):
            total[te] += res.query
        n_probes, names, pooled, cap, index = res.n_probes, res.layers, res.pooled, res.max_dim, res.knn_index
    col = total / m_models
    info = {"n_probes": n_probes, "probes": names, "max_depth": n_probes, "support_rows": int(len(tr)),
            "knn_index": index,
            "probe_max_values": cap, "pooled_probes": pooled,
            "seconds": round(time.perf_counter() - t0, 3)}
    return ScoreResult(columns={"prediction_depth": col}, params={**params, "models": m_models}, info=info)
