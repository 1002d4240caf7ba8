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
from core.models.backbones import backbone_features
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
    freeze_backbone: bool = False
    """Train only the classifier on the backbone's features, computed once in eval mode (see ``train_model``)."""
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
    features: np.ndarray | None = None  # float32 (n, d) frozen-backbone features of x_all (freeze_backbone only)
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
@torch.no_grad()
def embed(model: StagedNet, x: np.ndarray, device: torch.device | str = "cpu", batch_size: int | None = None) -> np.ndarray:
    """Penultimate features (``model.embed``) for every row of ``x``, float32 (n, d); ``batch_size`` rows per
    pass (default ``core.device.rows_per_batch`` of the image shape, at most 512)."""
    from core.device import rows_per_batch

    device = resolve_device(device)
    model.eval()
    batch_size = batch_size or rows_per_batch(tuple(x.shape[1:]), cap=512)
    out = [model.embed(torch.as_tensor(np.asarray(x[i:i + batch_size]), dtype=torch.float32, device=device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def build_initial_model(config: TrainConfig, image_shape: tuple[int, int, int], n_classes: int) -> StagedNet:
    """The network of ``config`` at initialisation: seeded architecture, then ``config.weights``.

    ``weights`` is a local state-dict path, or ``"torchvision"`` / ``"timm"`` for the library's own
    pretrained weights of an ImageNet backbone (downloaded or read from its cache by that library).
    """
    kwargs = dict(config.model_kwargs)
    hub = config.weights in ("torchvision", "timm")
    if hub:
        from core.models.backbones import is_backbone

        if not is_backbone(config.model):
            raise ValueError(f"--weights {config.weights} needs an ImageNet backbone (e.g. --model resnet18), "
                             f"not {config.model!r}")
        kwargs["weights"] = config.weights
    model = build_model(config.model, image_shape, n_classes, **kwargs)
    if config.weights and not hub:
        load_weights(model, config.weights)
    return model


def train_model(x_all: np.ndarray, y_all: np.ndarray, train_idx: np.ndarray, n_classes: int,
                config: TrainConfig, *, seed: int = 0, device: str | torch.device = "auto",
                test_idx: np.ndarray | None = None,
                progress: Callable[[str, float | None], None] | None = None,
                features: np.ndarray | None = None,
                init_state: dict[str, torch.Tensor] | None = None,
                record_logits: bool = True) -> TrainResult:
    """Train ``config.model`` on rows ``train_idx`` of ``x_all`` with labels ``y_all`` (Adam, cross-entropy).

    Deterministic for a given seed on a given device: the initialisation and the batch order come from
    ``seed``. With ``init_state`` (e.g. another network's w₀) training starts from that state instead of the
    seed's initialisation; the seed then drives only the batch order (and dropout). After every epoch the
    logits of *all* rows are recorded (eval mode). With
    ``config.patience > 0`` and test rows, training stops once the mean cross-entropy on the test rows has not
    improved for ``patience`` epochs; the best epoch's weights are kept and ``epoch_logits`` ends at that epoch.

    With ``config.freeze_backbone`` only the classifier (last stage) is trained, on the penultimate features
    of the network at initialisation computed once in eval mode (:func:`backbone_features`); ``features``
    may pass them in (they do not depend on the seed when the weights come from a file). The result then
    carries them in ``TrainResult.features``.

    ``record_logits = False`` (for a caller that keeps only the network, e.g. a cross-fitting's fold network)
    skips the per-epoch logits of all rows unless early stopping needs them: ``epoch_logits`` is then only the
    final network's logits, computed once. The network is the same either way (evaluation neither draws random
    numbers nor updates batch-norm statistics); on 32-px RGB crops the per-epoch logits were ~¾ of a fold
    network's training time (``bench/bench_crossfit_speed.py``).
    """
    dev = resolve_device(device)
    gen = seed_everything(seed)
    model = build_initial_model(config, tuple(x_all.shape[1:]), n_classes)
    if init_state is not None:
        model.load_state_dict(init_state)
    init_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    model.to(dev)
    if len(train_idx) == 0:
        raise ValueError("no training rows")
    t0 = time.perf_counter()
    stopper = _EarlyStop(config, y_all, test_idx)
    record = record_logits or stopper.on
    if config.freeze_backbone:
        if features is None:
            if progress:
                progress("backbone features (computed once)", None)
            features = backbone_features(model, x_all, dev)
        epoch_logits = _train_head(model.classifier, features, y_all, train_idx, config, gen, dev, progress, stopper,
                                   record=record)
        epoch_logits = stopper.finish(model.classifier, epoch_logits)
    else:
        features = None
        epoch_logits = _train_full(model, x_all, y_all, train_idx, config, gen, dev, progress, stopper, record=record)
        epoch_logits = stopper.finish(model, epoch_logits)
    model.eval()
    logits = epoch_logits[-1] if epoch_logits else predict_logits(model, x_all, dev)
    pred = logits.argmax(1)
    train_acc = float((pred[train_idx] == y_all[train_idx]).mean())
    test_acc = float((pred[test_idx] == y_all[test_idx]).mean()) if test_idx is not None and len(test_idx) else None
    n_params = sum(p.numel() for p in model.parameters())
    return TrainResult(model=model, init_state=init_state,
                       epoch_logits=np.stack(epoch_logits) if epoch_logits else logits[None],
                       train_acc=train_acc, test_acc=test_acc, wall_time_s=time.perf_counter() - t0,
                       n_params=n_params, features=features, heldout_loss=stopper.losses,
                       best_epoch=stopper.kept_epoch)


def _train_full(model: StagedNet, x_all: np.ndarray, y_all: np.ndarray, train_idx: np.ndarray,
                config: TrainConfig, gen: torch.Generator, dev: torch.device,
                progress: Callable[[str, float | None], None] | None,
                stopper: _EarlyStop | None = None, record: bool = True) -> list[np.ndarray]:
    """Train every parameter; return the logits of all rows after each epoch (``stopper``: early stopping;
    ``record = False``: none, and no early stopping).

    Each batch's images are read from ``x_all`` when it is used (an array or an
    :class:`~core.data.image_store.ImageStore`): the training rows are never copied out all at once."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    train_idx = np.asarray(train_idx, dtype=np.int64)
    yt = torch.as_tensor(y_all[train_idx], dtype=torch.long)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    epoch_logits = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_idx), generator=gen)
        for i in range(0, len(order), config.batch_size):
            b = order[i:i + config.batch_size]
            if len(b) < 2 and has_bn:
                continue  # a single-row batch has no batch statistics
            xb = torch.as_tensor(np.asarray(x_all[train_idx[b.numpy()]]), dtype=torch.float32).to(dev)
            yb = yt[b].to(dev)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}", (epoch + 1) / config.epochs)
        if not record:
            continue
        epoch_logits.append(predict_logits(model, x_all, dev))
        if stopper is not None and stopper.step(epoch, epoch_logits[-1], model):
            break
    return epoch_logits


def _train_head(head: nn.Linear, features: np.ndarray, y_all: np.ndarray, train_idx: np.ndarray,
                config: TrainConfig, gen: torch.Generator, dev: torch.device,
                progress: Callable[[str, float | None], None] | None,
                stopper: _EarlyStop | None = None, record: bool = True) -> list[np.ndarray]:
    """Train only ``head`` on cached ``features`` (Adam, cross-entropy, same recipe); logits after each epoch
    (none with ``record = False``)."""
    f_all = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=dev)
    if f_all.shape != (len(y_all), head.in_features):
        raise ValueError(f"features have shape {tuple(f_all.shape)}, expected ({len(y_all)}, {head.in_features})")
    ft = f_all[torch.as_tensor(train_idx, device=dev)]
    yt = torch.as_tensor(y_all[train_idx], dtype=torch.long, device=dev)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    epoch_logits = []
    for epoch in range(config.epochs):
        head.train()
        order = torch.randperm(len(ft), generator=gen).to(dev)
        for i in range(0, len(order), config.batch_size):
            b = order[i:i + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(head(ft[b]), yt[b]).backward()
            opt.step()
        if progress:
            progress(f"head epoch {epoch + 1}/{config.epochs}", (epoch + 1) / config.epochs)
        if not record:
            continue
        head.eval()
        with torch.no_grad():
            epoch_logits.append(head(f_all).float().cpu().numpy())
        if stopper is not None and stopper.step(epoch, epoch_logits[-1], head):
            break
    if not record:  # the final head's logits only (cheap: one product with the cached features)
        head.eval()
        with torch.no_grad():
            epoch_logits.append(head(f_all).float().cpu().numpy())
    return epoch_logits


class LinearHead(StagedNet):
    """A linear classifier on given feature vectors, as a StagedNet: stages = [Flatten, Linear(d, k)]."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Flatten(), nn.Linear(in_features, n_classes)])


def train_linear_head(features: np.ndarray, y_all: np.ndarray, train_idx: np.ndarray, n_classes: int,
                      config: TrainConfig, *, seed: int = 0, device: str | torch.device = "auto",
                      test_idx: np.ndarray | None = None,
                      progress: Callable[[str, float | None], None] | None = None) -> TrainResult:
    """Train a :class:`LinearHead` on rows ``train_idx`` of given ``features`` (n, d): the frozen-backbone
    recipe when the backbone ran elsewhere (``--features``). Logits of all rows recorded after each epoch."""
    if len(train_idx) == 0:
        raise ValueError("no training rows")
    dev = resolve_device(device)
    gen = seed_everything(seed)
    model = LinearHead(features.shape[1], n_classes)
    init_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    model.to(dev)
    t0 = time.perf_counter()
    stopper = _EarlyStop(config, y_all, test_idx)
    epoch_logits = stopper.finish(model.classifier, _train_head(model.classifier, features, y_all, train_idx,
                                                                config, gen, dev, progress, stopper))
    model.eval()
    pred = epoch_logits[-1].argmax(1)
    train_acc = float((pred[train_idx] == y_all[train_idx]).mean())
    test_acc = float((pred[test_idx] == y_all[test_idx]).mean()) if test_idx is not None and len(test_idx) else None
    return TrainResult(model=model, init_state=init_state, epoch_logits=np.stack(epoch_logits), train_acc=train_acc,
                       test_acc=test_acc, wall_time_s=time.perf_counter() - t0,
                       n_params=sum(p.numel() for p in model.parameters()), features=np.asarray(features, np.float32),
                       heldout_loss=stopper.losses, best_epoch=stopper.kept_epoch)


class _EarlyStop:
    """Early stopping on held-out cross-entropy (``config.patience > 0`` and test rows): after each epoch
    ``step`` records the held-out loss and says whether to stop; ``finish`` restores the best epoch's weights and
    cuts the recorded logits there."""

    def __init__(self, config: TrainConfig, y_all: np.ndarray, test_idx: np.ndarray | None) -> None:
        self.test_idx = test_idx if test_idx is not None and len(test_idx) else None
        self.on = config.patience > 0 and self.test_idx is not None
        self.patience = config.patience
        self.y = y_all
        self.losses: list[float] = []
        self.best_loss, self.best_epoch, self.best_state = np.inf, -1, None

    def step(self, epoch: int, logits: np.ndarray, module: nn.Module) -> bool:
        if self.test_idx is not None:
            self.losses.append(_mean_ce(logits[self.test_idx], self.y[self.test_idx]))
        if not self.on:
            return False
        if self.losses[-1] < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch = self.losses[-1], epoch
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return False
        return epoch - self.best_epoch >= self.patience

    def finish(self, module: nn.Module, epoch_logits: list[np.ndarray]) -> list[np.ndarray]:
        if self.on and self.best_state is not None:
            module.load_state_dict(self.best_state)
            return epoch_logits[:self.best_epoch + 1]
        return epoch_logits

    @property
    def kept_epoch(self) -> int | None:
        """1-based epoch whose weights were kept (early stopping), else None."""
        return self.best_epoch + 1 if self.on and self.best_state is not None else None


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
