"""Device selection shared by every heavy function: ``"auto"`` means CUDA when present, else CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a torch device for ``"auto" | "cpu" | "cuda" | "cuda:N"`` (or a device, passed through).

    ``"cuda"`` on a machine without CUDA raises a clear error instead of failing later inside torch.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available on this machine; use 'cpu' or 'auto'")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
    return torch.device(name)


def rows_per_batch(sample_shape: tuple[int, ...], cap: int = 256, budget_values: int = 1 << 22) -> int:
    """Rows per batch for a network pass over inputs of ``sample_shape``: at most ``cap``, and at most
    ``budget_values`` input values per batch (4 M values = 16 MB of float32 input; a ResNet's activations for
    backpropagation are a few dozen times that), at least 1. Small images keep ``cap`` (28×28: 256 rows),
    224×224 RGB gets 27 rows, so memory no longer grows with the image side."""
    values = 1
    for d in sample_shape:
        values *= max(int(d), 1)
    return max(1, min(int(cap), int(budget_values) // values))
