"""L∞ adversarial examples against the run's model, to inject with ground truth (``is_adversarial``).

- FGSM (Goodfellow, Shlens, Szegedy, ICLR 2015): x' = clip₍₀,₁₎(x + ε · sign ∇ₓ CE(f(x), y)).
- PGD (Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018): start at x + U(−ε, ε) (seeded), then ``steps``
  iterations of x ← Π(x + α · sign ∇ₓ CE(f(x), y)), where Π projects onto the ε-ball around the original x
  (elementwise clamp to [x − ε, x + ε]) and onto the image box [0, 1]; α defaults to 2.5·ε/steps (Madry et al.).

Both run in the model's eval mode (BatchNorm statistics frozen), never change the model's parameters or its
train/eval state, and work on arrays or tensors of images in [0, 1] with shape (n, C, H, W).

``make_adversarial_copies`` turns chosen rows of a ``Samples`` into *new* attacked rows to append. When given
a fraction, it draws (seeded) ``round(fraction · n)`` rows among those the model classifies correctly and whose
given label is their true label: attacking a row that is already misclassified or mislabeled would mix two
corruptions and inflate the attack's success rate.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.dataset import Samples
from core.device import resolve_device

Attack = Literal["fgsm", "pgd"]
DEFAULT_EPS = 0.15
DEFAULT_STEPS = 10


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=dtype).to(dev)


def _input_grad_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign ∇ₓ Σ CE(f(x), y) (the sum keeps each row's gradient independent of the batch size)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def _run_batched(fn, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[s : s + batch], y[s : s + batch], s) for s in range(0, len(x), batch)])


class EvalFrozen:
    """Context: model in eval mode with frozen parameters; restores both on exit."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for p, f in zip(self.model.parameters(), self.flags, strict=True):
            p.requires_grad_(f)
        self.model.train(self.training)


def fgsm(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, eps: float,
         device: str | torch.device = "auto", batch: int = 512) -> torch.Tensor:
    """FGSM: x' = clip₍₀,₁₎(x + ε·sign ∇ₓ CE(f(x), y)). Returns a CPU float32 tensor like ``x``."""
    dev = resolve_device(device)
    model.to(dev)
    xt, yt = _as_tensor(x, torch.float32, dev), _as_tensor(y, torch.long, dev)

    def step(xb: torch.Tensor, yb: torch.Tensor, _start: int) -> torch.Tensor:
        return (xb + eps * _input_grad_sign(model, xb, yb)).clamp_(0.0, 1.0).detach()

    with EvalFrozen(model), torch.enable_grad():
        return _run_batched(step, xt, yt, batch).cpu()


def pgd(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, eps: float,
        steps: int = DEFAULT_STEPS, step_size: float | None = None, seed: int = 0,
        device: str | torch.device = "auto", batch: int = 512) -> torch.Tensor:
    """PGD-L∞ with a seeded uniform random start; α = ``step_size`` or 2.5·ε/steps. CPU float32 tensor."""
    dev = resolve_device(device)
    model.to(dev)
    alpha = float(step_size) if step_size is not None else 2.5 * eps / max(steps, 1)
    xt, yt = _as_tensor(x, torch.float32, dev), _as_tensor(y, torch.long, dev)
    gen = torch.Generator().manual_seed(int(seed))
    noise = (torch.rand(xt.shape, generator=gen) * 2.0 - 1.0).mul_(eps).to(dev)  # drawn once: batch-invariant

    def attack(xb: torch.Tensor, yb: torch.Tensor, start: int) -> torch.Tensor:
        lo, hi = (xb - eps).clamp(min=0.0), (xb + eps).clamp(max=1.0)
        adv = torch.maximum(torch.minimum(xb + noise[start : start + len(xb)], hi), lo)
        for _ in range(steps):
            adv = adv + alpha * _input_grad_sign(model, adv, yb)
            adv = torch.maximum(torch.minimum(adv, hi), lo).detach()
        return adv

    with EvalFrozen(model), torch.enable_grad():
        return _run_batched(attack, xt, yt, batch).cpu()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor, device: str | torch.device = "auto",
            batch: int = 1024) -> np.ndarray:
    """argmax of the model's logits (eval mode), as int64 numpy."""
    dev = resolve_device(device)
    with EvalFrozen(model):
        model.to(dev)
        return torch.cat([model(torch.as_tensor(np.asarray(x[s : s + batch]), dtype=torch.float32).to(dev))
                          .argmax(1).cpu() for s in range(0, len(x), batch)]).numpy()


def choose_rows(model: nn.Module, samples: Samples, fraction: float, seed: int = 0,
                device: str | torch.device = "auto") -> np.ndarray:
    """Seeded choice of ``round(fraction · n)`` rows that are correctly classified and correctly labelled.

    Eligible rows: not already adversarial, given label = true label, model prediction = given label.
    Returns sorted row indices (fewer when not enough rows are eligible).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"adversarial fraction must lie in [0, 1], got {fraction}")
    n_want = int(round(fraction * len(samples)))
    pred = predict(model, samples.images, device)
    ok = (pred == samples.labels) & (samples.labels == samples.true_label) & ~samples.is_adversarial
    eligible = np.flatnonzero(ok)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(n_want, len(eligible)), replace=False))


def make_adversarial_copies(
    model: nn.Module,
    samples: Samples,
    rows: np.ndarray | float,
    *,
    attack: Attack = "fgsm",
    eps: float = DEFAULT_EPS,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> tuple[Samples, dict[str, Any]]:
    """Attacked copies of ``rows`` (indices, or a fraction of all rows chosen by ``choose_rows``).

    Returns ``(new_rows, record)``: new ``Samples`` rows to append (``is_adversarial=True``,
    ``sample_id="adv:<original id>"``, same source, label and true label, ``image_path=""``), and a JSON-able
    record: attack, eps, steps, step_size, fraction, seed, n, success_rate (share of copies whose predicted
    class differs from the original's), selection rule.
    """
    if attack not in ("fgsm", "pgd"):
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    fraction = float(rows) if np.isscalar(rows) else None
    idx = choose_rows(model, samples, fraction, seed, device) if fraction is not None \
        else np.asarray(rows, dtype=np.int64)
    x, y = samples.images[idx], samples.labels[idx]
    if attack == "fgsm":
        adv = fgsm(model, x, y, eps, device)
    else:
        adv = pgd(model, x, y, eps, steps=steps, step_size=step_size, seed=seed, device=device)
    adv_np = adv.numpy().astype(np.float32)
    changed = predict(model, adv_np, device) != predict(model, x, device) if len(idx) else np.zeros(0, bool)
    new = Samples(
        images=adv_np,
        labels=samples.labels[idx].copy(),
        class_names=list(samples.class_names),
        source=samples.source[idx].copy(),
        sample_id=np.array([f"adv:{s}" for s in samples.sample_id[idx]], dtype=object),
        image_path=np.array([""] * len(idx), dtype=object),
        true_label=samples.true_label[idx].copy(),
        is_mislabeled=samples.is_mislabeled[idx].copy(),
        is_adversarial=np.ones(len(idx), dtype=bool),
    )
    record = {
        "attack": attack, "eps": float(eps), "steps": int(steps) if attack == "pgd" else 1,
        "step_size": (float(step_size) if step_size is not None else 2.5 * eps / max(steps, 1)) if attack == "pgd"
        else float(eps),
        "fraction": fraction, "seed": int(seed), "n": int(len(idx)),
        "success_rate": float(changed.mean()) if len(idx) else 0.0,
        "rows": "seeded among correctly classified, correctly labelled rows" if fraction is not None else "given",
        "source_rows": [int(i) for i in idx],
    }
    return new, record
