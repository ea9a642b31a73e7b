"""The generator's settings, defined once: fields, defaults, validation and descriptions.

Pydantic only (no torch, numpy or cv2), so `sc_imagenet.config` builds `TrainConfig` on top of these
models at CLI start-up without loading the network code:

    MVAMConfig        one MVAM's width, heads, 4D aggregation (kwargs of `matching.mvam.MVAM`)
    BackboneConfig    the frozen backbone the generator reads and its two input sizes
    CascadeConfig     the three-level cascade: levels, PMPS/RHM, region and pixel pairs, losses, MVAM
    GeneratorConfig   BackboneConfig + CascadeConfig: everything needed to rebuild a trained generator
    CascadeSettings   the immutable view of a CascadeConfig that `CascadeGenerator` holds

`TrainConfig` (the `train:` section of the build config) inherits `GeneratorConfig`, so the YAML keys
stay flat (`train.window`, `train.mvam.dim`, ...) and a value given there reaches the model unchanged:
`CascadeSettings.of(cfg)` copies the cascade's fields by name, without a hand-written mapping.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LEVELS = ("image", "region", "pixel")

# A switch added after builds exist, whose default is the behaviour before it: at that default it stays out of
# the stage fingerprints (`fingerprint_fields`), so adding it does not retrain a finished generator (GPU-days
# on ImageNet). Set to anything else, it is fingerprinted like every other field.
NEUTRAL_DEFAULT = {"fingerprint": "when_set"}


def fingerprint_fields(model: BaseModel, exclude: set[str] = frozenset()) -> dict[str, Any]:
    """`model`'s fields as JSON values, without `exclude` and without NEUTRAL_DEFAULT fields at their default."""
    out = {}
    for name, value in model.model_dump(mode="json").items():
        info = type(model).model_fields[name]
        if name in exclude or (info.json_schema_extra == NEUTRAL_DEFAULT and getattr(model, name) == info.default):
            continue
        out[name] = value
    return out
Level = Literal["image", "region", "pixel"]


class _Settings(BaseModel):
    """Unknown keys are errors, values are validated on assignment (as every config section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MVAMConfig(_Settings):
    dim: int = Field(128, ge=8, le=2048, description="Gated cross-attention width.")
    heads: int = Field(4, ge=1, le=64)
    agg_channels: int = Field(16, ge=1, le=256, description="Channels of the 4D window attention.")
    window: int = Field(2, ge=1, le=8, description="4D attention window (cells per dimension).")
    depth: int = Field(1, ge=0, le=8, description="4D window attention blocks.")
    downsample: int = Field(2, ge=1, le=8, description="4D downsampling factor before aggregation.")
    use_aggregation: bool = True


class BackboneConfig(_Settings):
    """The frozen backbone whose tokens every level matches (image level and region crops)."""

    backbone: str = Field("ibot-vit-base-16", description="Backbone registry name (dense-sift needs no weights).")
    backbone_checkpoint: str | None = Field(
        None, description="models/registry.yaml backbones entry or a local checkpoint path (ViT backbones)."
    )
    input_size: int = Field(512, ge=32, le=2048, description="Square network input of the image level (paper 512).")
    region_input_size: int = Field(160, ge=16, le=1024, description="Square network input of a region crop.")


class CascadeConfig(_Settings):
    """The cascade (paper §3.2): image → region → pixel level. Ablation switches map to Tables 4–5."""

    levels: list[Level] = Field(
        default_factory=lambda: ["image", "region", "pixel"], min_length=1, description="Cascade levels (Table 5)."
    )
    foreground: str = Field(
        "detector_mask", description="Foreground source (detector_mask, box, saliency, none = off; Table 4 II)."
    )
    use_rhm: bool = Field(True, description="Regularized Hough matching in PMPS (Table 4 III).")
    rhm_L: int = Field(5, ge=1, le=31, description="RHM hyperpixel/neighbourhood length L (Table 4 IV–VI).")
    shared_attention: bool = Field(False, description="One MVAM shared by all levels (Table 4 VII).")
    window: int = Field(5, ge=1, le=15, description="Region size in image-level cells (paper 5×5).")
    region_pairs: int = Field(
        8, ge=1, le=256, description="Suspected matches (regions) per pair, chosen by PMPS at the image level."
    )
    region_select: Literal["pmps", "argmax"] = Field(
        "pmps", description="How the region level picks matches inside a region pair: pmps (paper: the same "
        "MVAM, PMPS and foreground constraint as the image level) or argmax (the best foreground cell pair).",
    )
    region_matches: int = Field(
        4, ge=1, le=64, description="Matches per region pair at the region level (pmps: one-to-one); all regions' "
        "matches of an image pair are pooled, NMS-filtered and the best `pixel_pairs` go to the pixel level.",
    )
    pixel_pairs: int = Field(16, ge=1, le=256, description="Pseudo-labels per pair for the pixel level (paper 16).")
    lambdas: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="λ1, λ2, λ3 of Eq. 3.")
    volume_mix: Literal["bounded", "residual", "mvam"] = Field(
        "bounded", description="A level's volume: mvam (paper: the MVAM output), residual (ours: cos + β·MVAM, "
        "unbounded) or bounded (ours: (cos + β·tanh MVAM) / (1 + |β|), in [-1, 1], so Eq. 2 cannot be lowered "
        "by scaling β).",
    )
    rhm_appearance: Literal["softmax", "relu"] = Field(
        "softmax", description="RHM vote weights: softmax over target cells (ours, T 0.05) or relu (paper's RHM)."
    )
    rhm_debias: bool = Field(
        True, description="Subtract from the Hough histogram the votes a structureless volume would cast (ours)."
    )
    pixel_loss: Literal["bce", "ce"] = Field(
        "bce", description="Pixel-level loss: bce (paper) or ce (cross-entropy over target cells)."
    )
    pixel_logit_scale: float = Field(
        10.0, gt=0, le=1000, description="Logit scale of the pixel-level loss (multiplies the volume); initial "
        "value when learned.",
    )
    learn_logit_scale: bool = Field(
        True, description="Learn the pixel loss's logit scale and offset (ours); false keeps them fixed."
    )
    beta_init: float = Field(
        0.0, ge=0, le=10, json_schema_extra=NEUTRAL_DEFAULT,
        description="Initial β of every level's volume mix (ours). At 0 the MVAMs get no gradient "
        "until β moves (the mix is cos + β·MVAM), which the image and region levels never do on the demo.",
    )
    label_keep: float = Field(
        1.0, gt=0, le=1, json_schema_extra=NEUTRAL_DEFAULT,
        description="Fraction of each pair's pixel-level pseudo-labels kept, most confident "
        "first (ours; 1 = all): fewer, cleaner labels.",
    )
    adapter_levels: list[Level] = Field(
        default_factory=lambda: ["pixel"],
        description="Levels whose backbone metric is learned (zero-initialised linear token adapter; [] = off).",
    )
    adapter_kind: Literal["linear", "conv3"] = Field(
        "linear", json_schema_extra=NEUTRAL_DEFAULT,
        description="The token adapter: linear (one C×C map per token) or conv3 (ours: a 3×3 convolution over the "
        "token grid, so the learned metric sees each cell's neighbours; 9·C² parameters).",
    )
    mvam: MVAMConfig = Field(default_factory=MVAMConfig)

    @field_validator("levels")
    @classmethod
    def _image_level_needed(cls, levels: list[str]) -> list[str]:
        if "image" not in levels:
            raise ValueError("the image level is needed: it is the only level supervised by image labels alone")
        return levels

    @model_validator(mode="after")
    def _enough_pseudo_labels(self) -> CascadeConfig:
        if {"region", "pixel"} <= set(self.levels) and self.region_pairs * self.region_matches < self.pixel_pairs:
            raise ValueError(
                f"region_pairs × region_matches ({self.region_pairs} × {self.region_matches}) must be at least "
                f"pixel_pairs ({self.pixel_pairs}): the region level is where the pixel level's pseudo-labels "
                "come from")
        return self

    @property
    def level_order(self) -> tuple[str, ...]:
        """The trained levels in cascade order, each once (the order the model's modules are built in)."""
        return tuple(lvl for lvl in LEVELS if lvl in self.levels)

    @property
    def use_foreground(self) -> bool:
        """Foreground-constrained pooling and PMPS (off with `foreground: none`)."""
        return self.foreground != "none"

    @property
    def dense_level(self) -> str:
        """The level whose volume the predictor uses: pixel if trained, else image."""
        return "pixel" if "pixel" in self.levels else "image"


class GeneratorConfig(CascadeConfig, BackboneConfig):
    """Everything a trained generator is rebuilt from (backbone first, then the cascade's fields)."""

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> GeneratorConfig:
        """The generator's part of a saved settings dict (e.g. a checkpoint's `TrainConfig` dump);
        the keys that only concern training (lr, epochs, device, ...) are ignored."""
        return cls.model_validate({k: v for k, v in settings.items() if k in cls.model_fields})


class CascadeSettings(CascadeConfig):
    """The immutable copy of the cascade's fields that `CascadeGenerator` keeps (`CascadeSettings.of(cfg)`
    for any `CascadeConfig`, `TrainConfig` included; or built directly, e.g. in tests)."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def of(cls, cfg: CascadeConfig) -> CascadeSettings:
        if isinstance(cfg, cls):
            return cfg
        return cls.model_validate(cfg.model_dump(include=set(CascadeConfig.model_fields)))
