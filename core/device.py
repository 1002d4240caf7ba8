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
