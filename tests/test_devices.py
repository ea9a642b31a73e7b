"""Shared device helpers (sc_imagenet/devices.py)."""

from __future__ import annotations

import pytest
import torch

from sc_imagenet.devices import use_amp


@pytest.mark.parametrize(("setting", "device", "on"), [
    ("auto", "cuda:0", True), (True, "cuda:0", True), (False, "cuda:0", False),
    ("auto", "cuda", True), ("auto", "cuda:3", True),
    ("auto", "cpu", False), (False, "cpu", False),
    (True, "cpu", False),  # reduced precision exists only on CUDA here: an explicit true is off on a CPU
    ("auto", torch.device("cuda", 1), True), (True, torch.device("cpu"), False),
])
def test_use_amp_is_on_only_on_cuda(setting: bool | str, device: str | torch.device, on: bool) -> None:
    assert use_amp(setting, device) is on


def test_use_amp_rejects_other_settings() -> None:
    for bad in ("on", "true", None):
        with pytest.raises(ValueError, match="true, false or 'auto'"):
            use_amp(bad, "cuda:0")  # type: ignore[arg-type]
