"""Deterministic mini-batch training that records every row's logits after each epoch.

The recorded ``epoch_logits`` (E, n, k) feed the training-dynamics baselines of the same run (EL2N,
forgetting, Data Maps) without a second pass over training.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.models.nets import StagedNet, build_model, load_weights


@dataclass
class TrainConfig:
    """The training recipe (recorded in the manifest)."""

    model: str = "cnn"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    weights: str | None = None
    model_kwargs: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    """A trained network and what was observed while training it."""

    model: StagedNet
    init_state: dict[str, torch.Tensor]
    epoch_logits: np.ndarray  # float32 (E, n, k), every row of x_all after each epoch
    train_acc: float
    test_acc: float | None
    wall_time_s: float
    n_params: int


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and return a generator for data order (numpy users pass their own ``default_rng``)."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                   batch_size: int = 512) -> np.ndarray:
    """Logits of ``model`` (eval mode) for every row of ``x``, as float32 numpy (n, k)."""
    device = resolve_device(device)
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size], dtype=torch.float32, device=device)
        out.append(model(xb).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def embed(model: StagedNet, x: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 512) -> np.ndarray:
    """Penultimate features (``model.embed``) for every row of ``x``, float32 (n, d)."""
    device = resolve_device(device)
    model.eval()
    out = [model.embed(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32, device=device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def train_model(x_all: np.ndarray, y_all: np.ndarray, train_idx: np.ndarray, n_classes: int,
                config: TrainConfig, *, seed: int = 0, device: str | torch.device = "auto",
                test_idx: np.ndarray | None = None,
                progress: Callable[[str, float | None], None] | None = None) -> TrainResult:
    """Train ``config.model`` on rows ``train_idx`` of ``x_all`` with labels ``y_all`` (Adam, cross-entropy).

    Deterministic for a given seed on a given device: the initialisation and the batch order come from
    ``seed``. After every epoch the logits of *all* rows are recorded (eval mode).
    """
    dev = resolve_device(device)
    gen = seed_everything(seed)
    model = build_model(config.model, tuple(x_all.shape[1:]), n_classes, **config.model_kwargs)
    if config.weights:
        load_weights(model, config.weights)
    init_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.as_tensor(x_all[train_idx], dtype=torch.float32)
    yt = torch.as_tensor(y_all[train_idx], dtype=torch.long)
    if len(train_idx) == 0:
        raise ValueError("no training rows")
    t0 = time.perf_counter()
    epoch_logits = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order), config.batch_size):
            b = order[i:i + config.batch_size]
            if len(b) < 2 and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
                continue  # a single-row batch has no batch statistics
            xb, yb = xt[b].to(dev), yt[b].to(dev)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        epoch_logits.append(predict_logits(model, x_all, dev))
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}", (epoch + 1) / config.epochs)
    model.eval()
    logits = epoch_logits[-1] if epoch_logits else predict_logits(model, x_all, dev)
    pred = logits.argmax(1)
    train_acc = float((pred[train_idx] == y_all[train_idx]).mean())
    test_acc = float((pred[test_idx] == y_all[test_idx]).mean()) if test_idx is not None and len(test_idx) else None
    n_params = sum(p.numel() for p in model.parameters())
    return TrainResult(model=model, init_state=init_state,
                       epoch_logits=np.stack(epoch_logits) if epoch_logits else logits[None],
                       train_acc=train_acc, test_acc=test_acc, wall_time_s=time.perf_counter() - t0,
                       n_params=n_params)


def clone_at(model: StagedNet, state: dict[str, torch.Tensor]) -> StagedNet:
    """A copy of ``model`` with ``state`` loaded (e.g. the network at initialisation)."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    return m.eval()
