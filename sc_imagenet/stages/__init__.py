"""Stages, registered in pipeline order (each stage's inputs are registered before it)."""

from sc_imagenet.stages import categories as _categories  # noqa: F401  (registers `categories`)
from sc_imagenet.stages import index as _index  # noqa: F401  (registers `index`)
from sc_imagenet.stages.base import (
    STAGES,
    Stage,
    StageContext,
    StageOutput,
    downstream_of,
    pipeline_order,
    register_stage,
)

__all__ = ["STAGES", "Stage", "StageContext", "StageOutput", "downstream_of", "pipeline_order",
           "register_stage"]
