"""Stages, registered in pipeline order (each stage's inputs are registered before it)."""

import importlib

from sc_imagenet.stages.base import (
    STAGES,
    Stage,
    StageContext,
    StageOutput,
    downstream_of,
    pipeline_order,
    register_stage,
)

# Pipeline order: importing a stage module registers it, and `register_stage` insists that its
# inputs are already registered, so this tuple is the DAG's topological order.
STAGE_MODULES = ("categories", "index", "detect", "single_instance", "train", "label", "consistency", "select",
                 "pairs", "export", "report")
for _module in STAGE_MODULES:
    importlib.import_module(f"sc_imagenet.stages.{_module}")

__all__ = ["STAGES", "STAGE_MODULES", "Stage", "StageContext", "StageOutput", "downstream_of", "pipeline_order",
           "register_stage"]
