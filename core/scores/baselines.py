"""Well-known per-sample baselines computed from the logits recorded while training the run's network.

Pure functions take logits ``(n, k)`` or per-epoch logits ``(E, n, k)`` and integer labels ``(n,)``:
- ``loss``: cross-entropy −log softmax(z)_y of the final network.
- ``margin``: z_y − max_{j≠y} z_j on the final logits (the single-epoch form of AUM, Pleiss et al., NeurIPS 2020).
- ``el2n``: ‖softmax(z_e) − onehot(y)‖₂ at an early epoch e, averaged over independently trained networks
  (Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021).
- ``forgetting``: number of epochs e with correct_{e−1} and not correct_e; never-learned rows get E, more
  than any learned row can have (Toneva et al., "An Empirical Study of Example Forgetting", ICLR 2019).
- ``confidence`` / ``variability``: mean / standard deviation over epochs of softmax(z_e)_y
  (Swayamdipta et al., "Dataset Cartography", EMNLP 2020).
Training-dynamics scores are defined for training rows only (NaN for held-out rows).
"""

from __future__ import annotations

import numpy as np

from core.scores.registry import ScoreContext, ScoreResult


def _check(logits: np.ndarray, labels: np.ndarray, ndim: int) -> None:
    if logits.ndim != ndim:
        raise ValueError(f"logits must have {ndim} dimensions, got shape {logits.shape}")
    if logits.shape[-2] != len(labels):
        raise ValueError(f"{logits.shape[-2]} rows of logits but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[-1]):
        raise ValueError("labels out of range of the logits' classes")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _take(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p[..., i, labels[i]] for every row i."""
    return np.take_along_axis(p, np.broadcast_to(labels[:, None], p.shape[:-1] + (1,)), axis=-1)[..., 0]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−log softmax(z)_y per row, computed stably (log-sum-exp)."""
    _check(logits, labels, 2)
    z = logits.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return lse - _take(z, labels)


def margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """z_y − max_{j≠y} z_j per row (negative = the network prefers another class)."""
    _check(logits, labels, 2)
    z = logits.astype(np.float64)
    zy = _take(z, labels)
    other = z.copy()
    np.put_along_axis(other, labels[:, None], -np.inf, axis=1)
    return zy - other.max(1)


def el2n(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """‖softmax(z) − onehot(y)‖₂ per row; ``logits`` (n, k), or (M, n, k) to average over M networks."""
    z = logits if logits.ndim == 3 else logits[None]
    _check(z, labels, 3)
    p = softmax(z.astype(np.float64))
    onehot = np.eye(z.shape[-1])[labels]
    return np.linalg.norm(p - onehot[None], axis=-1).mean(0)


def forgetting_events(epoch_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Count of learned→forgotten transitions over epochs; rows never classified correctly get E."""
    _check(epoch_logits, labels, 3)
    correct = epoch_logits.argmax(-1) == labels[None]
    events = (correct[:-1] & ~correct[1:]).sum(0).astype(np.float64)
    events[~correct.any(0)] = epoch_logits.shape[0]
    return events


def datamaps(epoch_logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, variability): mean and population std over epochs of softmax(z_e)_y."""
    _check(epoch_logits, labels, 3)
    py = _take(softmax(epoch_logits.astype(np.float64)), labels)
    return py.mean(0), py.std(0)


def early_epoch(n_epochs: int, fraction: float = 0.25) -> int:
    """Index of the 'early' epoch used by EL2N: ceil(fraction·E)−1, at least the first epoch."""
    return max(0, int(np.ceil(fraction * n_epochs)) - 1)


# ---- adapters -------------------------------------------------------------------------------------
def _train_only(ctx: ScoreContext, fn) -> dict[str, np.ndarray]:
    """Apply ``fn(epoch_logits[:, train], labels[train])`` (returning one array or a tuple of arrays) to the
    training rows only; held-out rows (never trained on, e.g. injected adversarial copies) get NaN."""
    idx = ctx.train_idx
    values = fn(ctx.epoch_logits[:, idx], ctx.data.labels[idx])
    values = values if isinstance(values, tuple) else (values,)
    outs = []
    for v in values:
        out = np.full(len(ctx.split), np.nan)
        out[idx] = v
        outs.append(out)
    return outs


def loss_adapter(ctx: ScoreContext) -> ScoreResult:
    return ScoreResult({"loss": cross_entropy(ctx.logits, ctx.data.labels)}, {"on": "final network, all rows"})


def margin_adapter(ctx: ScoreContext) -> ScoreResult:
    return ScoreResult({"margin": margin(ctx.logits, ctx.data.labels)}, {"on": "final logits, all rows"})


def el2n_adapter(ctx: ScoreContext) -> ScoreResult:
    """EL2N at the early epoch, averaged over ``seeds`` networks (the run's own plus seeds−1 more)."""
    frac = float(ctx.params.get("epoch_fraction", 0.25))
    seeds = int(ctx.params.get("seeds", 1))
    e = early_epoch(ctx.epoch_logits.shape[0], frac)
    stack = [ctx.epoch_logits[e]]
    for s in range(1, seeds):
        ctx.progress(f"el2n: extra network {s}/{seeds - 1}", s / seeds)
        stack.append(ctx.extra["train_run"](ctx.seed + 1000 + s).epoch_logits[e])
    (values,) = _train_only(ctx, lambda _, y: el2n(np.stack(stack)[:, ctx.train_idx], y))
    return ScoreResult({"el2n": values}, {"epoch": e + 1, "epoch_fraction": frac, "seeds": seeds})


def forgetting_adapter(ctx: ScoreContext) -> ScoreResult:
    (values,) = _train_only(ctx, forgetting_events)
    return ScoreResult({"forgetting": values},
                       {"epochs": int(ctx.epoch_logits.shape[0]), "never_learned_value": int(ctx.epoch_logits.shape[0])})


def datamaps_adapter(ctx: ScoreContext) -> ScoreResult:
    conf, var = _train_only(ctx, datamaps)
    return ScoreResult({"confidence": conf, "variability": var}, {"epochs": int(ctx.epoch_logits.shape[0])})
