"""Local ViT checkpoints: read a file, remap its keys to timm names, fit pos_embed, load strictly.

Accepted layouts (all end up as timm `VisionTransformer` names, e.g. `blocks.0.attn.qkv.weight`):

- a plain backbone state_dict (timm / DINO / DINOv2 naming are the same for ViT-S/B);
- a full self-supervised training checkpoint, `{"teacher": {...}, "student": {...}, "args": ...}`
  (DINO, iBOT) or `{"state_dict": {...}}` / `{"model": {...}}`, with keys prefixed by `module.`
  and/or `backbone.` and projection-head keys `head.*`;
- DINOv2 checkpoints with `mask_token` and possibly chunked blocks `blocks.<chunk>.<i>.*`.

Nothing here downloads anything.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Preference order of the wrapper entries of a full checkpoint: the teacher (EMA) weights are the ones
# the iBOT/DINO papers evaluate.
WRAPPER_KEYS = ("teacher", "student", "state_dict", "model")
PREFIXES = ("module.", "backbone.")
# Training-only parameters with no counterpart in an inference ViT: the projection heads, the
# masked-image-modelling token (DINOv2 `mask_token`, iBOT student `masked_embed`).
DROP_EXACT = frozenset({"mask_token", "masked_embed"})
DROP_PREFIXES = ("head.",)
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")
_LIST_LIMIT = 10


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model (the message lists the keys)."""


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    """Load a `.safetensors` file or a torch pickle with `weights_only=True` (never executes code).

    `argparse.Namespace` is allowed because DINO/iBOT full checkpoints store their `args` that way.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types; all mean "not a loadable weights file"
        raise CheckpointError(
            f"{path}: cannot load with weights_only=True ({type(e).__name__}: {e}). Save the backbone "
            f"state_dict alone (torch.save(ckpt['teacher'], 'backbone.pth')) or convert it to .safetensors."
        ) from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def remap_state_dict(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Any accepted layout → a flat `{timm_name: tensor}` backbone state_dict.

    Unwraps `teacher` > `student` > `state_dict` > `model` (repeatedly, for nested wrappers), strips
    leading `module.` / `backbone.` (in any order), flattens DINOv2 chunked blocks, and drops heads
    and mask tokens. Non-tensor values (epoch counters, args) are ignored.
    """
    while True:
        inner = next((ckpt[k] for k in WRAPPER_KEYS if isinstance(ckpt.get(k), Mapping)), None)
        if inner is None:
            break
        ckpt = inner
    out: dict[str, torch.Tensor] = {}
    for key, value in ckpt.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = key
        while name.startswith(PREFIXES):
            name = name.split(".", 1)[1]
        name = _CHUNKED_BLOCK.sub(r"blocks.\1.", name)
        if name in DROP_EXACT or name.startswith(DROP_PREFIXES):
            continue
        if name in out:
            raise CheckpointError(f"two checkpoint keys map to {name!r} (one is {key!r})")
        out[name] = value
    return out


def resample_pos_embed(pos_embed: torch.Tensor, n_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """`(1, n_prefix + g*g, C)` → `(1, n_prefix + h*w, C)`: bicubic resampling of the square patch grid.

    The prefix (cls token) positions are kept as they are. Returns the input unchanged when the grid
    already matches, so loading at the training resolution is bit-exact.
    """
    n_old = pos_embed.shape[1] - n_prefix
    side = math.isqrt(n_old)
    if side * side != n_old:
        raise CheckpointError(f"pos_embed has {n_old} patch positions, not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    prefix, patches = pos_embed[:, :n_prefix], pos_embed[:, n_prefix:]
    c = patches.shape[-1]
    img = patches.reshape(1, side, side, c).permute(0, 3, 1, 2).float()
    # plain bicubic (as DINO/iBOT do when run above 224); antialiasing (a wider, PIL-style kernel) only
    # when shrinking, e.g. DINOv2's 37×37 grid to 16×16, where plain bicubic would alias
    shrink = grid[0] < side or grid[1] < side
    img = F.interpolate(img, size=grid, mode="bicubic", align_corners=False, antialias=shrink)
    patches = img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], c).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


def fit_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resample `state["pos_embed"]` to the grid of a timm ViT built for another input size."""
    if "pos_embed" not in state or getattr(model, "pos_embed", None) is None:
        return state
    grid = tuple(model.patch_embed.grid_size)
    n_prefix = model.pos_embed.shape[1] - grid[0] * grid[1]  # 0 for no_embed_class models
    return {**state, "pos_embed": resample_pos_embed(state["pos_embed"], n_prefix, grid)}


def _listing(label: str, keys: list[str]) -> str:
    more = f", … (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return f"{len(keys)} {label} [{', '.join(keys[:_LIST_LIMIT])}{more}]"


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(state, strict=True)`, but a mismatch raises CheckpointError listing the
    missing, unexpected and wrongly shaped keys (the first ten of each, with counts)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = [_listing(label, keys) for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
