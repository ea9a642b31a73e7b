"""Named methods for the evaluation CLI: a registry from name to factory, so later stages add theirs.

    from sc_imagenet.evaluate.registry import register_method
    register_method("generator", lambda ctx: from_matcher(load_generator(ctx.options["generator"]).match))

A factory takes a `MethodContext` (the CLI's backbone choice, device and free-form options) and returns a
method `transfer(src_rgb, trg_rgb, src_points (N, 2)) -> (N, 2)` (see `sc_imagenet.evaluate.methods`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sc_imagenet.evaluate.methods import (
    Method,
    from_flow,
    hough_flow,
    hough_one_to_one_transfer,
    identity_transfer,
    mutual_nn_transfer,
    nearest_neighbour_flow,
    nearest_neighbour_transfer,
)
from sc_imagenet.matching.backbones.base import Backbone, create_backbone
from sc_imagenet.registry import Registry


def get_backbone(name: str, **kwargs: Any) -> Backbone:
    """`create_backbone(name, **kwargs)` after importing the backbones package (which registers them)."""
    importlib.import_module("sc_imagenet.matching.backbones")
    return create_backbone(name, **kwargs)


@dataclass
class MethodContext:
    """What a factory may use. `backbone()` creates the named backbone on first call and reuses it."""

    backbone_name: str = "dense-sift"
    device: str = "cpu"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    _backbone: Backbone | None = field(default=None, repr=False)

    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = get_backbone(self.backbone_name, **self.backbone_kwargs).to(self.device)
        return self._backbone


MethodFactory = Callable[[MethodContext], Method]

METHODS: Registry[MethodFactory] = Registry("evaluation method")


def register_method(name: str, factory: MethodFactory) -> None:
    """Add a named method factory; ValueError if the name is taken."""
    METHODS.register(name, factory)


register_method("nn", lambda ctx: nearest_neighbour_transfer(ctx.backbone()))
register_method("nn-refine", lambda ctx: nearest_neighbour_transfer(ctx.backbone(), refine=True))
register_method("nn-disp", lambda ctx: from_flow(nearest_neighbour_flow(ctx.backbone()), mode="displacement"))
register_method("nn-refine-disp", lambda ctx: from_flow(nearest_neighbour_flow(ctx.backbone(), refine=True),
                                                        mode="displacement"))
register_method("mnn", lambda ctx: mutual_nn_transfer(ctx.backbone()))
register_method("identity", lambda ctx: identity_transfer)

# PMPS's regularized Hough matching on the raw backbone volume, no training (docs/evaluate.md, "nn-rhm"):
# softmax appearance at T 0.01 and L 9, chosen on a validation seed (PMPS's own L 5 / T 0.05 cost 3
# points of PCK@0.1 there). Each is the RHM counterpart of the baseline it names.
RHM_L, RHM_TEMPERATURE, RHM_KEEP = 9, 0.01, 0.5
register_method("nn-rhm", lambda ctx: from_flow(hough_flow(ctx.backbone(), RHM_L, "softmax", RHM_TEMPERATURE)))
register_method("nn-rhm-refine-disp", lambda ctx: from_flow(
    hough_flow(ctx.backbone(), RHM_L, "softmax", RHM_TEMPERATURE, refine=True), mode="displacement"))
register_method("nn-rhm-1to1", lambda ctx: hough_one_to_one_transfer(ctx.backbone(), RHM_L, "softmax",
                                                                     RHM_TEMPERATURE, RHM_KEEP))
