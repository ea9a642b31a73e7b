"""timm Vision Transformers (iBOT, DINO, DINOv2) loaded from LOCAL checkpoints only.

    bb = create_backbone("ibot-vit-base-16", checkpoint=Path("models/ibot_vitb16_teacher.pth"), input_size=512)
    feats = bb.encode(images)   # tokens (B, 32*32, 768), grid (32, 32), global_token = cls (B, 768)

The timm model is built with `pretrained=False` (no hub access) at the configured input size; the
checkpoint's position embeddings are resampled to that grid before a strict load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from sc_imagenet.matching.backbones.base import Backbone, Features, register_backbone
from sc_imagenet.matching.backbones.checkpoints import fit_pos_embed, load_strict, read_checkpoint, remap_state_dict
from sc_imagenet.matching.backbones.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_input,
    resize_square,
    to_normalized_tensor,
)

# timm.create_model arguments the registry owns: weights only ever come from `checkpoint`
_RESERVED_KWARGS = frozenset({"pretrained", "num_classes", "img_size", "checkpoint_path", "pretrained_cfg",
                              "pretrained_cfg_overlay"})


@dataclass(frozen=True)
class ViTSpec:
    """A registered ViT: the timm architecture and the statistics its weights were trained with."""

    name: str
    arch: str  # timm architecture name, built with pretrained=False
    patch_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class TimmViT(Backbone):
    """A frozen timm ViT. `layer=None` returns the last block after the final norm; `layer=k` returns
    block k's raw output (no final norm: that norm's affine was fitted to the last block only)."""

    name = "timm-vit"  # replaced per instance by the registry name

    def __init__(self, spec: ViTSpec, model: torch.nn.Module, input_size: int, layer: int | None,
                 checkpoint: Path) -> None:
        super().__init__()
        self.name = spec.name  # type: ignore[misc]  # one class serves several registry names
        self.spec = spec
        self.model = model
        self.checkpoint = checkpoint
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.input_size = input_size
        self.out_dim = int(model.num_features)
        self.grid = (input_size // self.patch_size, input_size // self.patch_size)
        self.n_prefix = int(model.num_prefix_tokens)  # cls (+ register) tokens ahead of the patches
        self.layer = layer
        self.eval().requires_grad_(False)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 `(H_i, W_i, 3)` → `(B, 3, S, S)` float32, ImageNet-normalised."""
        return to_normalized_tensor(resize_square(images, self.input_size), self.spec.mean, self.spec.std)

    def forward(self, x: torch.Tensor) -> Features:
        """`(B, 3, S, S)` → tokens `(B, h*w, C)`, grid `(h, w) = (S/p, S/p)`, global_token = cls `(B, C)`."""
        check_input(x, self.input_size)
        if self.layer is None:
            out = self.model.forward_features(x)  # (B, n_prefix + h*w, C), final norm applied
            prefix, tokens = out[:, : self.n_prefix], out[:, self.n_prefix :]
        else:
            [(tokens, prefix)] = self.model.forward_intermediates(
                x, indices=[self.layer], return_prefix_tokens=True, norm=False, stop_early=True,
                output_fmt="NLC", intermediates_only=True,
            )
        return Features(tokens=tokens, grid=self.grid, global_token=prefix[:, 0])


def require_checkpoint(name: str, checkpoint: Path | str | None) -> Path:
    """The checkpoint as an existing Path; a clear error otherwise (nothing is ever downloaded)."""
    hint = "Nothing is downloaded: get the weights yourself (docs/backbones.md) and pass checkpoint=<path>."
    if checkpoint is None:
        raise ValueError(f"backbone {name!r} needs a local checkpoint file. {hint}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone {name!r}: checkpoint {path} does not exist. {hint}")
    return path


def build_vit(
    spec: ViTSpec,
    checkpoint: Path | str | None,
    input_size: int,
    layer: int | None = None,
    arch_overrides: dict[str, Any] | None = None,
) -> TimmViT:
    """Build `spec.arch` for `input_size` (timm kwargs `arch_overrides` win, e.g. a tiny depth for
    tests), load the remapped checkpoint with pos_embed resampled, and wrap it as a Backbone."""
    path = require_checkpoint(spec.name, checkpoint)
    overrides = dict(arch_overrides or {})
    reserved = sorted(set(overrides) & _RESERVED_KWARGS)
    if reserved:
        raise ValueError(f"backbone {spec.name!r}: arch_overrides may not set {reserved} (set by the registry)")
    patch = int(overrides.get("patch_size", spec.patch_size))
    if input_size <= 0 or input_size % patch:
        raise ValueError(f"backbone {spec.name!r}: input_size {input_size} must be a positive multiple of the "
                         f"patch size {patch} (e.g. {max(1, round(input_size / patch)) * patch})")
    model = timm.create_model(spec.arch, pretrained=False, num_classes=0, img_size=input_size, **overrides)
    state = fit_pos_embed(remap_state_dict(read_checkpoint(path)), model)
    load_strict(model, state, source=f"{path} ({spec.name}, timm {spec.arch})")
    depth = len(model.blocks)
    if layer is not None:
        if not -depth <= layer < depth:
            raise ValueError(f"backbone {spec.name!r}: layer {layer} out of range for {depth} blocks")
        layer %= depth
    return TimmViT(spec, model, input_size, layer, path)


IBOT_VIT_B16 = ViTSpec("ibot-vit-base-16", "vit_base_patch16_224", 16)
DINO_VIT_S16 = ViTSpec("dino-vit-small-16", "vit_small_patch16_224", 16)
DINO_VIT_B16 = ViTSpec("dino-vit-base-16", "vit_base_patch16_224", 16)
DINOV2_VIT_S14 = ViTSpec("dinov2-vit-small-14", "vit_small_patch14_dinov2", 14)
DINOV2_VIT_B14 = ViTSpec("dinov2-vit-base-14", "vit_base_patch14_dinov2", 14)
VIT_SPECS = {s.name: s for s in (IBOT_VIT_B16, DINO_VIT_S16, DINO_VIT_B16, DINOV2_VIT_S14, DINOV2_VIT_B14)}


def _registered_factory(spec: ViTSpec, doc: str) -> Callable[..., TimmViT]:
    """Register `create_backbone(spec.name, checkpoint=..., input_size=..., layer=..., arch_overrides=...)`."""

    def factory(checkpoint: Path | str | None = None, input_size: int = 224, layer: int | None = None,
                arch_overrides: dict[str, Any] | None = None) -> TimmViT:
        return build_vit(spec, checkpoint, input_size, layer, arch_overrides)

    factory.__name__ = factory.__qualname__ = spec.name.replace("-", "_")
    factory.__doc__ = doc
    return register_backbone(spec.name)(factory)


ibot_vit_base_16 = _registered_factory(
    IBOT_VIT_B16, "iBOT ViT-B/16 (the paper's backbone); give the teacher checkpoint or its backbone state_dict.")
dino_vit_small_16 = _registered_factory(DINO_VIT_S16, "DINO ViT-S/16.")
dino_vit_base_16 = _registered_factory(DINO_VIT_B16, "DINO ViT-B/16.")
dinov2_vit_small_14 = _registered_factory(
    DINOV2_VIT_S14, "DINOv2 ViT-S/14 (layerscale; input_size must be a multiple of 14).")
dinov2_vit_base_14 = _registered_factory(
    DINOV2_VIT_B14, "DINOv2 ViT-B/14 (layerscale; input_size must be a multiple of 14).")
