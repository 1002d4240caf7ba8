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
    patience: int = 0  # > 0: early stopping on held-out loss (needs test rows), best epoch's weights kept


AUTO_TARGET_STEPS = 400
AUTO_MIN_EPOCHS = 5
AUTO_MAX_EPOCHS = 100
AUTO_PATIENCE = 6


def auto_epochs(n_train: int, batch_size: int, *, target_steps: int = AUTO_TARGET_STEPS,
                min_epochs: int = AUTO_MIN_EPOCHS, max_epochs: int = AUTO_MAX_EPOCHS) -> int:
    """Training length from the dataset size: enough epochs for about ``target_steps`` optimiser steps,
    ceil(target_steps / ceil(n_train / batch_size)), clipped to [``min_epochs``, ``max_epochs``].

    A fixed epoch count gives a small dataset only a handful of steps (420 images, batch 128, 8 epochs = 24
    steps: an untrained network); a step budget gives every dataset a comparable amount of optimisation, and
    early stopping on held-out loss (``TrainConfig.patience``) ends it when more steps stop helping.
    """
    per_epoch = max(1, -(-int(n_train) // max(1, int(batch_size))))
    return int(min(max_epochs, max(min_epochs, -(-int(target_steps) // per_epoch))))


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
    heldout_loss: list[float] = field(default_factory=list)  # mean CE on the test rows after each epoch
    best_epoch: int | None = None  # 1-based epoch whose weights were kept (early stopping), else None


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
    ``seed``. After every epoch the logits of *all* rows are recorded (eval mode). With
    ``config.patience > 0`` and test rows, training stops once the mean cross-entropy on the test rows has not
    improved for ``patience`` epochs; the best epoch's weights are kept and ``epoch_logits`` ends at that epoch.
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
    heldout_loss: list[float] = []
    early = config.patience > 0 and test_idx is not None and len(test_idx) > 0
    best_loss, best_epoch, best_state = np.inf, -1, None
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
        if test_idx is not None and len(test_idx):
            heldout_loss.append(_mean_ce(epoch_logits[-1][test_idx], y_all[test_idx]))
        if early:
            if heldout_loss[-1] < best_loss - 1e-6:
                best_loss, best_epoch = heldout_loss[-1], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= config.patience:
                break
    if early and best_state is not None:
        model.load_state_dict(best_state)
        epoch_logits = epoch_logits[:best_epoch + 1]
    model.eval()
    logits = epoch_logits[-1] if epoch_logits else predict_logits(model, x_all, dev)
    pred = logits.argmax(1)
    train_acc = float((pred[train_idx] == y_all[train_idx]).mean())
    test_acc = float((pred[test_idx] == y_all[test_idx]).mean()) if test_idx is not None and len(test_idx) else None
    n_params = sum(p.numel() for p in model.parameters())
    return TrainResult(model=model, init_state=init_state,
                       epoch_logits=np.stack(epoch_logits) if epoch_logits else logits[None],
                       train_acc=train_acc, test_acc=test_acc, wall_time_s=time.perf_counter() - t0,
                       n_params=n_params, heldout_loss=heldout_loss,
                       best_epoch=best_epoch + 1 if early and best_state is not None else None)


def _mean_ce(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy −log softmax(logits)[y] (float64, stable)."""
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def clone_at(model: StagedNet, state: dict[str, torch.Tensor]) -> StagedNet:
    """A copy of ``model`` with ``state`` loaded (e.g. the network at initialisation)."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    return m.eval()
