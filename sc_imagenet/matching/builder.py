"""Build the generator's parts from its settings, and a trained generator from its checkpoint.

    gen = load_generator(Path("<out>/artifacts/train/generator.pt"))   # → predictor.PseudoLabelGenerator
    image_backbone, region_backbone = make_backbones(cfg, checkpoint=None, device="cpu")

A checkpoint (`generator.pt`, written by `sc_imagenet.train.loop`) stores the model's state dict and
the training settings as a JSON-able dict (`TrainConfig.model_dump(mode="json")`); the generator is
rebuilt from its `GeneratorConfig` part (backbone + cascade fields), so keys that only concern
training never stop a checkpoint from loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sc_imagenet.io.checkpoints import load_checkpoint
from sc_imagenet.matching.backbones import Backbone, create_backbone
from sc_imagenet.matching.cascade import CascadeGenerator
from sc_imagenet.matching.predictor import PseudoLabelGenerator
from sc_imagenet.matching.settings import BackboneConfig, GeneratorConfig


def make_backbones(cfg: BackboneConfig, checkpoint: Path | None, device: str) -> tuple[Backbone, Backbone]:
    """The image-level backbone and the region-level one (same weights, region input size)."""
    kw: dict[str, Any] = {} if checkpoint is None else {"checkpoint": checkpoint}
    image = create_backbone(cfg.backbone, input_size=cfg.input_size, **kw).to(device)
    region = create_backbone(cfg.backbone, input_size=cfg.region_input_size, **kw).to(device)
    return image, region


def load_generator(path: Path, device: str = "cpu", backbone_checkpoint: Path | None = None) -> PseudoLabelGenerator:
    """A trained checkpoint → `PseudoLabelGenerator` predictor (pixel level)."""
    state = load_checkpoint(path, map_location=device)
    cfg = GeneratorConfig.from_settings(state["settings"])
    backbone, _ = make_backbones(cfg, backbone_checkpoint, device)
    model = CascadeGenerator(backbone.out_dim, cfg).to(device)
    model.load_state_dict(state["model"])
    return PseudoLabelGenerator(backbone, model)
