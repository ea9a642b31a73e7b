"""Device selection shared by every torch-using stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def use_amp(setting: bool | str, device: str | torch.device) -> bool:
    """Whether reduced-precision inference/training (`train.amp`, `label.amp`: bf16 autocast; `detect.half`:
    fp16) is on for `device`: `auto` and `true` turn it on on a CUDA device only, `false` never.

    An explicit `true` on a CPU is off rather than an error: the project's reduced-precision paths exist only
    on CUDA (torch's CUDA autocast and ultralytics' fp16 leave CPU tensors in float32 anyway), and a profile
    written for a GPU machine should still run on a CPU one."""
    if setting is True or setting is False:
        on = setting
    elif setting == "auto":
        on = True
    else:
        raise ValueError(f"amp setting must be true, false or 'auto', got {setting!r}")
    return on and torch.device(device).type == "cuda"


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run a block that may change torch's global CPU thread count (ultralytics' predictor drops it to 1)
    and put it back afterwards, so later stages in the same process run as fast as in a fresh one
    (measured: `label` 0.023 s per edge on 2 threads, 0.035 s after a detector had run)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with torch on `count` CPU threads, then put the previous count back. A Dask worker
    process starts with OMP_NUM_THREADS=1 (torch: 1 thread) while the flow's process has one per core, and
    CPU kernels (convolutions, reductions) split their sums by thread count: the last bits of a detection's
    confidence differed. A shard task runs with the flow process's count, so both paths compute alike."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
