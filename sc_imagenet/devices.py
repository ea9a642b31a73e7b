"""Device selection shared by every torch-using stage."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> str:
    """`auto` → `cuda:0` when CUDA is available, else `cpu`; `cuda` → `cuda:0`; anything else as given."""
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return device
