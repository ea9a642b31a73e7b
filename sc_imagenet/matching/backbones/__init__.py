"""Backbone registry: `create_backbone(name, **kwargs)` → a frozen `Backbone` (docs/backbones.md).

Importing this package imports every backbone module, which registers its factories.
"""

from sc_imagenet.matching.backbones import dense_sift, vit
from sc_imagenet.matching.backbones.base import (
    BACKBONES,
    Backbone,
    Features,
    create_backbone,
    list_backbones,
    register_backbone,
)
from sc_imagenet.matching.backbones.checkpoints import CheckpointError

__all__ = [
    "BACKBONES",
    "Backbone",
    "CheckpointError",
    "Features",
    "create_backbone",
    "dense_sift",
    "list_backbones",
    "register_backbone",
    "vit",
]
