"""The matcher's settings, defined once: fields, defaults, validation and descriptions (docs/matcher.md).

Pydantic only (no torch), so the command line validates them before any network code loads:

    MatcherConfig      the architecture: everything needed to rebuild a trained matcher from `matcher.pt`
    PretrainSettings   how it is trained (optimiser, batches, augmentation, checkpoints)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

CNN = "cnn"  # the feature extractor trained from scratch inside the matcher (the default)
INPUT_SIZE = 256  # CATs' `imside`: every image is resized to 256 × 256 before it is matched


class _Settings(BaseModel):
    """Unknown keys are errors, values are validated on assignment (as every settings model here)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MatcherConfig(_Settings):
    """The network (CATs family). The defaults are sized for a CPU: a 16 × 16 cost volume from 256 × 256 input."""

    features: str = Field(
        CNN, description="`cnn` (a small CNN trained from scratch with the matcher) or a backbone registry name "
        "(sc_imagenet.matching.backbones), used frozen under the learned projection.")
    backbone_checkpoint: str | None = Field(
        None, description="weights of a registry backbone (ViTs): models/registry.yaml entry or a local path.")
    backbone_input_size: int | None = Field(
        None, ge=16, le=2048, description="input side of a registry backbone (default: its own).")
    input_size: int = Field(INPUT_SIZE, ge=64, le=1024, description="square side images are resized to (CATs: 256).")
    grid: int = Field(16, ge=4, le=64, description="cost-volume side: every level resampled to grid × grid.")
    cnn_channels: list[int] = Field(
        default_factory=lambda: [32, 64, 96, 128], min_length=4, max_length=4,
        description="channels of the CNN's stem (stride 4) and three stride-2 stages: the levels (strides 8, 16, 32).")
    proj_dim: int = Field(64, ge=8, le=1024, description="learned projection width of every level (correlated, "
                          "and the appearance embedding of the aggregator's tokens).")
    mutual_filter: bool = Field(True, description="mutual nearest-neighbour re-weighting of the raw cost (CATs).")
    smoothing: int = Field(0, ge=0, le=4, description="centre-pivot 4-D convolution blocks before the transformer "
                           "(VAT-style; off by default: one block costs about as much as the rest of a CPU step)")
    smoothing_channels: int = Field(4, ge=1, le=128)
    dim: int = Field(128, ge=16, le=2048, description="transformer width (tokens are projected in and out).")
    depth: int = Field(1, ge=0, le=12, description="transformer blocks, shared by both swapping passes.")
    heads: int = Field(4, ge=1, le=32)
    mlp_ratio: float = Field(4.0, gt=0, le=8)
    temperature: float = Field(0.02, gt=0, le=1, description="soft-argmax temperature β (CATs, after SFNet: 0.02).")

    @model_validator(mode="after")
    def _check(self) -> MatcherConfig:
        if self.input_size % 32:
            raise ValueError(f"input_size {self.input_size} must be a multiple of 32 (the CNN's deepest stride)")
        if self.dim % self.heads or self.dim % 2:
            raise ValueError(f"dim {self.dim} must be even and divisible by heads {self.heads}")
        return self

    @property
    def uses_cnn(self) -> bool:
        return self.features == CNN

    @property
    def levels(self) -> int:
        """Cost-volume levels: 3 CNN stages, or the backbone's one token map."""
        return 3 if self.uses_cnn else 1


class PretrainSettings(_Settings):
    """Training settings. `epochs` and `max_steps` may grow between runs of one `--out` (the run continues);
    any other change is a different run."""

    epochs: int = Field(10, ge=1, le=100_000)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (all epochs: None)")
    batch_size: int = Field(8, ge=1, le=1024)
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW learning rate of the projection, aggregator and CNN")
    weight_decay: float = Field(0.05, ge=0, le=1)
    warmup_steps: int = Field(50, ge=0, description="linear warm-up; the rate is constant afterwards")
    augment: bool = Field(True, description="CATs' training augmentation: box-keeping random crop (p 0.5) and "
                          "seven photometric transforms (p 0.2 each)")
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (and at each epoch's end)")
    val_pairs: int = Field(200, ge=0, description="validation pairs scored after every epoch (0: none)")
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: load in the main process)")

    def run_identity(self) -> dict[str, Any]:
        """What makes two runs the same run: everything but the budget and the number of loader processes."""
        return self.model_dump(mode="json", exclude={"epochs", "max_steps", "workers", "checkpoint_every",
                                                     "val_pairs"})
