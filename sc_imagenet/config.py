"""Typed build configuration.

Defaults live here, in code; YAML profiles in `profiles/` hold only overrides. Every model forbids
unknown keys, so a typo fails before any work starts with the offending field named.

Resolution order (later wins): code defaults → profile YAML → `--set key.path=value` overrides →
explicit CLI arguments (`--data-root`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sc_imagenet import __version__
from sc_imagenet.io.atomic import atomic_write_text
from sc_imagenet.matching.settings import NEUTRAL_DEFAULT, GeneratorConfig, MVAMConfig  # noqa: F401  (MVAMConfig: re-exported)
from sc_imagenet.paths import PROFILES_DIR, REPO_ROOT
from sc_imagenet.synth.config import SynthConfig


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    source: Literal["folder", "synthetic"] = Field(
        "folder",
        description="`folder`: an existing `<root>/<category>/<image>` tree (ImageNet train). "
        "`synthetic`: the demo dataset, generated into `root` (default `<out>/data`) when missing.",
    )
    root: Path | None = Field(None, description="Data root; required for source=folder.")
    synthetic: SynthConfig = Field(default_factory=SynthConfig)


class CategoriesConfig(StrictModel):
    list: str | None = Field(
        "imagenet1k",
        description="Curated keep-list: a name in manifests/categories/ (imagenet1k, demo) or a CSV path. "
        "null keeps every category folder found under the data root.",
    )
    overrides: Path | None = Field(
        None, description="CSV `wnid,keep,reason,note` merged on top of the curated list."
    )
    unlisted: Literal["drop", "keep"] = Field(
        "drop", description="What to do with folders under the data root that the list does not name."
    )


class IndexConfig(StrictModel):
    workers: int = Field(0, ge=0, le=512, description="Threads scanning categories; 0 = one per CPU core.")
    verify: Literal["header", "draft", "full"] = Field(
        "draft",
        description="How hard to check each file: `header` (dimensions only), `draft` (decode the whole "
        "JPEG stream at 1/8 scale: catches truncation at a fraction of the cost), `full` (full decode).",
    )
    max_pixels: int = Field(
        89_478_485, ge=1, description="Images with more pixels are rows with status too_large (bomb guard)."
    )
    row_group_size: int = Field(4096, ge=16, le=1_000_000, description="Rows buffered per Parquet row group.")


class DetectConfig(StrictModel):
    backend: str = Field("ultralytics", description="Detector registry name (sc_imagenet/detect/backends.py).")
    weights: str = Field(
        "yolo11x-seg",
        description="Entry of models/registry.yaml (detectors) or a path to a local .pt file. Never downloaded.",
    )
    imgsz: int = Field(640, ge=32, le=4096, description="Inference size (longest side, letterboxed).")
    batch: int = Field(32, ge=1, le=4096, description="Images per forward pass.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto, cpu, cuda or cuda:N.")
    half: bool | Literal["auto"] = Field(
        "auto", description="fp16 inference on a CUDA device: auto and true turn it on there, false off; never on "
        "a CPU (`devices.use_amp`).")
    conf_floor: float = Field(
        0.05, ge=0.0, le=1.0, description="Detections below this confidence are not stored at all."
    )
    iou: float = Field(0.6, gt=0.0, le=1.0, description="NMS IoU threshold.")
    max_det: int = Field(50, ge=1, le=1000, description="Detections kept per image.")
    decode_workers: int = Field(4, ge=1, le=256, description="Threads decoding images ahead of the model.")
    prefetch_batches: int = Field(2, ge=1, le=64, description="Decoded batches waiting for the model.")
    max_pixels: int = Field(89_478_485, ge=1, description="Refuse to decode larger images (bomb guard).")


class SingleInstanceConfig(StrictModel):
    threshold: float = Field(
        0.9, ge=0.0, le=1.0, description="Keep an image iff exactly one detection has confidence > threshold."
    )
    classes: list[str] | None = Field(
        None, description="Only these detector classes count (class-filtered); null = class-agnostic."
    )
    min_box_area_frac: float = Field(
        0.0, ge=0.0, le=1.0, description="Drop the image if the one confident box covers less of it than this."
    )


class TrainConfig(GeneratorConfig):
    """The cascaded pseudo-label generator (paper §3.1–3.3). Ablation switches map to Tables 4–5.

    The generator's own fields (backbone, input sizes, levels, foreground, RHM, window, pairs, losses,
    `mvam`, ...) are defined once, in `sc_imagenet.matching.settings` (`GeneratorConfig`); this section
    adds how to train it. Keys stay flat: `train.window`, `train.mvam.dim`.
    """

    adapter_lr: float | None = Field(
        None, gt=0, le=10, description="SGD learning rate of the token adapters (default: lr)."
    )
    lr: float = Field(3e-5, gt=0, le=10, description="Learning rate (paper: SGD, 3e-5).")
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", json_schema_extra=NEUTRAL_DEFAULT,
        description="sgd (paper, with `momentum`) or adamw (ours: attention modules usually train better "
        "with per-parameter step sizes).")
    label_teacher: Literal["self", "ema"] = Field(
        "self", json_schema_extra=NEUTRAL_DEFAULT,
        description="Who picks the labels each level passes down: the model itself (paper) or an "
        "exponential moving average of it (ours, `teacher_decay`), against confirmation bias.")
    teacher_decay: float = Field(0.99, ge=0, lt=1, json_schema_extra=NEUTRAL_DEFAULT,
        description="EMA teacher: weight of the old teacher per step.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (paper 0.9).")
    weight_decay: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(4, ge=2, le=1024, description="Pairs per step and GPU (≥ 2: batch shifting).")
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    processes: int = Field(
        1, ge=1, le=1024,
        description="DistributedDataParallel processes (one per GPU; gloo on CPU). >1 launches torchrun.",
    )
    amp: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast on a CUDA device: auto and true turn it on there, false off; never on "
        "a CPU (`devices.use_amp`).")
    cache_features: bool = Field(True, description="Keep image-level features in memory across epochs.")
    feature_cache_gb: float = Field(
        4.0, ge=0, le=4096,
        description="Memory the feature cache may hold (CPU RAM, per process); images beyond it are encoded "
        "again each epoch. ViT-B/16 at 512 px takes 3 MiB per image: all of ImageNet's 379 k would need 1.2 TB.")
    eval_pairs: int = Field(100, ge=0, le=100000, description="Held-out synthetic pairs for PCK (synthetic data only).")
    val_pairs: int = Field(
        50, ge=0, le=100000, description="Held-out synthetic pairs scored during training for the learning "
        "curves (synthetic data only; 0 = off).")
    val_every: int = Field(
        0, ge=0, description="Steps between two scorings of `val_pairs` (0 = at the end of every epoch).")


class LabelConfig(StrictModel):
    """Pseudo-label inference (paper §3.4): a pair graph per category, the generator on every edge."""

    group_size: int = Field(
        20, ge=3, le=512,
        description="Images per clique of the pair graph: every ordered pair inside a group is an edge, so an "
        "image gets g−1 edges and (g−1)(g−2) possible consistency loops. A category splits into groups of "
        "near-equal size (never smaller than 3).",
    )
    candidates: int = Field(
        64, ge=1, le=4096,
        description="Pseudo-label candidates per edge (one-to-one, foreground-constrained "
        "`PseudoLabelGenerator.match`); `select` keeps `select.keypoints` of them.",
    )
    nms_cells: float = Field(1.0, ge=0, le=16, description="NMS radius between candidates, in grid cells.")
    pixel_foreground: bool = Field(
        True,
        description="Drop candidates whose source or target point lies off its image's foreground mask at the "
        "point's own pixel. The generator's constraint works on grid cells, so a cell that merely touches the "
        "object lets a background point through (measured on the demo: ~30 % of candidates off the object).",
    )
    foreground: str | None = Field(
        None,
        description="Foreground source constraining the candidates (none = off). Unset (null) takes "
        "`train.foreground` when the config is loaded, so a loaded config always holds the source in use.",
    )
    batch_pairs: int = Field(16, ge=1, le=4096, description="Edges per pair-head forward.")
    batch_images: int = Field(32, ge=1, le=4096, description="Images per backbone forward.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    amp: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast on a CUDA device: auto and true turn it on there, false off; never on "
        "a CPU (`devices.use_amp`).")


class ConsistencyConfig(StrictModel):
    """The closed-loop check I_s → I_m → I_t → I_s over the stored flows (paper §3.4)."""

    loops: int = Field(
        100, ge=1, le=100_000,
        description="Distinct (I_m, I_t) draws per image (paper: 100); fewer run where the group has fewer.",
    )
    workers: int = Field(0, ge=0, le=512, description="Threads scoring categories at once (numpy releases the "
                         "GIL in the loop arithmetic); 0 = one per CPU core.")
    threshold: float = Field(
        0.1, gt=0, le=10,
        description="A loop offset (in units of the object's size, see docs/dataset.md) at or below which a "
        "point counts as consistent.",
    )


class SelectConfig(StrictModel):
    """Top images by consistency, final pairs and their keypoints (paper §3.4–3.5)."""

    fraction: float = Field(0.30, gt=0, le=1, description="Fraction of images kept (paper: top 30 %).")
    scope: Literal["category", "global"] = Field(
        "category", description="Rank images within their category (default) or over the whole build."
    )
    rank_by: Literal["loop3", "loop2", "score", "random"] = Field(
        "loop3",
        description="Image ranking: the paper's 3-image loop (default), 2-image forward-backward, the "
        "generator's match score, or random (a baseline).",
    )
    pairs_per_image: int = Field(7, ge=1, le=1000, description="Final pairs per source image, at most (paper: 7).")
    keypoints: int = Field(32, ge=1, le=1024, description="Pseudo keypoint pairs per final pair (paper: 32).")
    point_threshold: float | None = Field(
        None, gt=0, le=10,
        description="A candidate is consistent if its median loop offset is at or below this. Unset (null) "
        "takes `consistency.threshold` when the config is loaded, so a loaded config always holds the value in use.",
    )
    point_order: Literal["score", "consistency", "balanced"] = Field(
        "score",
        description="Which consistent candidates become the keypoints: the generator's most confident ones "
        "(`score`), the most consistent ones (`consistency`), or both signals (`balanced`: offset/threshold + "
        "rank/keypoints). Only candidates that pass `point_threshold` qualify.",
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the kept pairs in the val split (whole groups, so no image is in both)."
    )


class PairsConfig(StrictModel):
    """The release's pairs (paper §3.5: 794,612 pairs of 113,516 images, 7.0 per image): the selected images
    of each category are grouped again into cliques of `group_size`, and every unordered pair inside a clique
    is a candidate pair. Only edges the first graph (`label`) did not already hold are labelled; loops are
    drawn inside the new cliques; one direction of each unordered pair is kept (docs/dataset.md)."""

    group_size: int = Field(
        15, ge=0, le=512,
        description="Selected images per clique: each image is paired with the other group_size − 1, so a clique "
        "gives (group_size − 1) / 2 unordered pairs per image (15 → 7.0, the paper's ratio). 0 = off: the "
        "release takes `select`'s pairs as they are (both directions of a pair when both pass).",
    )

    @field_validator("group_size")
    @classmethod
    def _loops_close(cls, v: int) -> int:
        if 0 < v < 3:
            raise ValueError("a clique needs at least 3 images for a loop I_s → I_m → I_t to close (or 0 = off)")
        return v


class ExportConfig(StrictModel):
    """The SC-ImageNet release in the layout of the public CATs/DHPF loaders."""

    dir: Path | None = Field(
        None, description="Export root (default `<out>/export`); the dataset goes in `<dir>/<name>`."
    )
    name: str = Field("SC-ImageNet", pattern=r"^[A-Za-z0-9._-]+$", description="Dataset folder name.")
    images: Literal["hardlink", "symlink", "copy"] = Field(
        "hardlink", description="How images enter JPEGImages/ (hardlink falls back to copy across file systems)."
    )
    reencode_quality: int = Field(
        95, ge=1, le=100,
        description="JPEG quality of the images written anew: every file that is not a baseline RGB JPEG (a PNG, "
        "CMYK, grayscale or progressive file under a .JPEG name) is re-encoded as one, same size; the rest are "
        "placed as `images` says.",
    )


class ReportConfig(StrictModel):
    """The build report: one HTML page with the funnel, pair galleries and plots (`docs/report.md`)."""

    categories: int = Field(4, ge=0, le=100, description="Categories in the pair gallery (spread over the "
                            "categories that have pseudo-labelled pairs, in wnid order).")
    wnids: list[str] | None = Field(None, description="Show exactly these categories in the pair gallery "
                                    "(overrides `categories`).")
    pairs_per_tier: int = Field(2, ge=1, le=20, description="Pairs per category for each of the most "
                                "consistent, the median and the least consistent tiers.")
    dropped_per_reason: int = Field(3, ge=0, le=100, description="Images shown per reason the single-instance "
                                    "step dropped them for.")
    image_height: int = Field(200, ge=64, le=1024, description="Height of each image in a drawing, in pixels "
                              "of the page (images are resized down, never up).")
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of the drawings.")


class BuildConfig(StrictModel):
    """The whole build. One section per stage; each stage's fingerprint covers only its own section
    (plus the shared fields it declares), so changing one stage's settings never reruns upstream work."""

    seed: int = Field(0, ge=0, description="Seed for every random choice in the build.")
    data: DataConfig = Field(default_factory=DataConfig)
    categories: CategoriesConfig = Field(default_factory=CategoriesConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    single_instance: SingleInstanceConfig = Field(default_factory=SingleInstanceConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _resolve_fallbacks(self) -> BuildConfig:
        """Settings that default to another section's value get it here, once, so every reader (stages,
        fingerprints, `config.resolved.yaml`) sees the value in use. A config read back is already
        resolved and stays as it is. The sections are replaced by updated copies, never changed in
        place: a section object passed in may belong to another config too."""
        if self.label.foreground is None:
            self.label = self.label.model_copy(update={"foreground": self.train.foreground})
        if self.select.point_threshold is None:
            self.select = self.select.model_copy(update={"point_threshold": self.consistency.threshold})
        return self


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {field}: {e['msg']}{got_s}")
    return "\n".join(lines)


def profile_path(name_or_path: str) -> Path:
    """A profile name (`demo`) resolves to `profiles/<name>.yaml`; anything else is a file path."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    candidate = PROFILES_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(q.stem for q in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown profile {name_or_path!r}; known profiles: {', '.join(known)} (or a path)")
    return candidate


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {key!r} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`["index.workers=4", "seed=1"]` → nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key.path=value")
        key, raw = pair.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    profile: str = "demo",
    overrides: dict[str, Any] | None = None,
    data_root: str | Path | None = None,
) -> BuildConfig:
    """Resolve a profile (+ overrides) into a validated `BuildConfig`; raises `ConfigError`."""
    path = profile_path(profile)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(raw).__name__}")
    tree = _merge(raw, overrides or {})
    if data_root is not None:
        _set_dotted(tree, "data.root", str(data_root))
    try:
        return BuildConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def git_sha() -> str | None:
    """The checkout's commit; None for an installed wheel (whose folder may sit inside some other repository)."""
    from sc_imagenet.paths import in_checkout

    if not in_checkout():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def write_resolved_config(cfg: BuildConfig, out_dir: Path, profile: str) -> Path:
    """Save the resolved config and provenance beside the build's outputs (`<out>/config.resolved.yaml`)."""
    doc = {
        "sc_imagenet_version": __version__,
        "git_sha": git_sha(),
        "profile": profile,
        "config": json.loads(cfg.model_dump_json()),
    }
    path = out_dir / "config.resolved.yaml"
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def read_resolved_config(out_dir: Path) -> BuildConfig | None:
    """The config a build was last run with; None if it has none. ConfigError (naming the file and the
    fields) when it no longer validates, e.g. written by a version whose settings were since renamed."""
    path = out_dir / "config.resolved.yaml"
    if not path.exists():
        return None
    doc = yaml.safe_load(path.read_text())
    try:
        return BuildConfig.model_validate(doc["config"])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{path} (sc-imagenet {doc.get('sc_imagenet_version')}, "
                                                       "another version's settings: rebuild to refresh it)")) from None
