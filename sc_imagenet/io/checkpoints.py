"""Training checkpoints in a safe format.

A checkpoint is a dict of tensors and plain Python values (model/optimizer/scheduler state dicts,
step, epoch, RNG states as uint8 tensors), written atomically with `torch.save` and read back with
`torch.load(..., weights_only=True)`, which refuses arbitrary pickled objects: a checkpoint is
untrusted input.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_imagenet.io.atomic import atomic_path

CKPT_RE = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """torch/numpy/python RNG states as tensors and plain values (all weights_only-loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep_last: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink()
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if CKPT_RE.match(p.name))


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, or holding more than tensors and plain values)."""


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(..., weights_only=True)`; a file that does not load raises `CheckpointError` naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors, ...
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from exc


def latest_checkpoint(directory: Path, on_skip: Callable[[Path, str], None] | None = None) -> Path | None:
    """The newest readable checkpoint. A file that does not load (a torn write from a crash, a corrupt
    disk) is reported through `on_skip(path, reason)` and the next older one is tried."""
    for path in reversed(list_checkpoints(directory)):
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            if on_skip is not None:
                on_skip(path, str(exc))
            continue
        return path
    return None
