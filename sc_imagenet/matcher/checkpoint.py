"""`matcher.pt`: one file that is both the resumable training state and the trained matcher.

    {"format": "sc-imagenet-matcher", "version": 1,
     "config": MatcherConfig as JSON-able dict,     # rebuilds the network
     "model": trainable state dict,                 # a frozen registry backbone's weights are not in it
     "optimizer": AdamW state dict, "step": int, "epoch": int, "steps_per_epoch": int, "total_steps": int,
     "complete": bool, "run": {data, init, config, settings}, "rng": RNG states, "rows": training-log rows}

Written atomically (`sc_imagenet.io.atomic`), read with `torch.load(weights_only=True)`
(`sc_imagenet.io.checkpoints.load_checkpoint`): tensors and plain values only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sc_imagenet.io.atomic import atomic_path
from sc_imagenet.io.checkpoints import CheckpointError, load_checkpoint
from sc_imagenet.matcher.model import MatcherNet
from sc_imagenet.matcher.settings import MatcherConfig

FORMAT = "sc-imagenet-matcher"
VERSION = 1
CHECKPOINT_NAME = "matcher.pt"
LOG_NAME = "train_log.parquet"
REQUIRED = ("config", "model", "step")


class MatcherCheckpointError(CheckpointError):
    """A file that is not a matcher checkpoint this version can read; the message names it."""


def save_matcher(path: Path, payload: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    return path


def read_matcher(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, checked: FileNotFoundError for a missing file, MatcherCheckpointError naming it
    for anything else that is not a matcher checkpoint (a generator.pt, a torn file, a newer format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matcher checkpoint {path} does not exist")
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MatcherCheckpointError(f"{path} is not a matcher checkpoint (written by `sc-imagenet pretrain`)")
    if state.get("version") != VERSION:
        raise MatcherCheckpointError(f"{path} has matcher format version {state.get('version')}; this code reads "
                                     f"version {VERSION}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise MatcherCheckpointError(f"{path} lacks {', '.join(missing)}")
    return state


def resolve_backbone_checkpoint(cfg: MatcherConfig, override: Path | None = None) -> Path | None:
    """The weights file of a registry backbone: `override`, else the config's registry entry or path."""
    if override is not None:
        return Path(override)
    if cfg.backbone_checkpoint is None:
        return None
    from sc_imagenet.io.weights import resolve_weights

    path, _ = resolve_weights("backbones", cfg.backbone_checkpoint, "matcher backbone_checkpoint")
    return path


def build_matcher(cfg: MatcherConfig, backbone_checkpoint: Path | None = None) -> MatcherNet:
    return MatcherNet(cfg, resolve_backbone_checkpoint(cfg, backbone_checkpoint))


def load_matcher(path: Path, device: str = "cpu", backbone_checkpoint: Path | None = None) -> MatcherNet:
    """A trained matcher from its checkpoint, on `device`, in eval mode."""
    state = read_matcher(path)
    try:
        cfg = MatcherConfig.model_validate(state["config"])
    except ValueError as exc:
        raise MatcherCheckpointError(f"{path}: its matcher config does not validate: {exc}") from None
    net = build_matcher(cfg, backbone_checkpoint)
    try:
        net.load_trainable_state(state["model"])
    except (ValueError, RuntimeError) as exc:
        raise MatcherCheckpointError(f"{path}: {exc}") from None
    return net.to(device).eval()
