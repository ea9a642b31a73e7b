"""What the build report shows, as plain data: gathered from a build folder by the `report` stage
(`sc_imagenet.stages.report.gather_report`), rendered here without touching manifests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# stage states (`sc_imagenet.build.stage_states`) whose manifest the report reads; a stale stage is
# shown with a warning, a partial (interrupted) or missing one counts as not built
USABLE_STATES = ("complete", "stale")

# what each section of the page needs; a section whose stages are not built says so instead
SECTION_NEEDS: dict[str, tuple[str, ...]] = {
    "gallery": ("single_instance", "label", "consistency"),
    "dropped": ("single_instance",),
    "scores": ("consistency",),
    "quality": ("select",),
    "truth": ("label", "consistency"),
    "training": ("train",),
}

# the funnel, top to bottom: (key, label, stage that provides the number)
FUNNEL = (
    ("categories", "categories listed", "categories"),
    ("categories_kept", "categories kept", "categories"),
    ("images_indexed", "images indexed", "index"),
    ("images_readable", "images readable", "index"),
    ("images_single_instance", "single-instance images", "single_instance"),
    ("images_labelled", "images labelled (with pair-graph edges)", "label"),
    ("images_selected", "images selected (top by consistency)", "select"),
    ("images_exported", "images exported", "export"),
    ("pairs_labelled", "pairs labelled (pair-graph edges)", "label"),
    ("pairs_selected", "pairs selected", "select"),
    ("pairs_exported", "pairs exported", "export"),
    ("keypoints", "keypoint pairs (in the selected pairs)", "select"),
)
FUNNEL_KEYS = tuple(k for k, _, _ in FUNNEL)


@dataclass
class StageView:
    """One stage's line on the page: state, rows, rows per status, time, where its manifest is."""

    name: str
    state: str  # complete | stale | partial | missing | (the report itself) this page
    description: str
    manifest_dir: Path
    record: Path | None = None  # its _stage.json, if it exists
    rows: int | None = None
    rows_by_status: dict[str, int] = field(default_factory=dict)
    wall_s: float | None = None


@dataclass
class PairView:
    """A pseudo-labelled pair to draw: points in original-image pixels (x, y), pixel centres at
    integers; `offsets`: each point's 3-image loop offset (units of the object's size, NaN = none)."""

    wnid: str
    tier: str  # most | median | least (consistent)
    src_id: str
    trg_id: str
    src_path: Path
    trg_path: Path
    src_kps: np.ndarray  # (K, 2)
    trg_kps: np.ndarray  # (K, 2)
    offsets: np.ndarray  # (K,)
    pair_score: float  # fraction of the pair's candidate loops that are consistent
    points: str  # what the points are, e.g. "final keypoints" or "top 16 candidates"
    decision: str | None = None  # the `select` reason (`kept`, `src_not_selected`, …); None before select
    true_pck: float | None = None  # synthetic data: strict PCK@0.1 of the drawn points


@dataclass
class CategoryGallery:
    wnid: str
    name: str
    edges: int
    pairs: list[PairView]


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, original-image pixels
    conf: float
    class_name: str
    above: bool  # confidence above the single-instance threshold


@dataclass
class DroppedView:
    """An image the single-instance step did not keep, with its reason and the detector's boxes."""

    wnid: str
    image_id: str
    reason: str
    path: Path | None  # None: not drawable (unreadable)
    detections: list[Detection] = field(default_factory=list)
    note: str = ""  # e.g. the index's error for an unreadable file


@dataclass
class TruthData:
    """Synthetic data only: every candidate's loop offset and true error (target-object sizes, inf off
    the object), and every source image's consistency score, true accuracy and selection."""

    point_offset: np.ndarray
    point_error: np.ndarray
    image_score: np.ndarray
    image_accuracy: np.ndarray  # strict PCK@0.1 of all the image's candidates
    image_selected: np.ndarray | None
    spearman: float


@dataclass
class TrainScores:
    """The `train` figures the page quotes, taken from `stages.train.TrainFigures` by the report stage (this
    package sits below the stages and cannot import them)."""

    steps: int | None = None
    eval_pairs: float | None = None
    pck: dict[str, tuple[float, float]] = field(default_factory=dict)  # generator / mnn / nn → PCK@0.05, @0.1


@dataclass
class ReportData:
    out_dir: Path
    stages: list[StageView]
    funnel: dict[str, int | None]  # FUNNEL_KEYS → count (None: its stage is not built)
    per_category: pd.DataFrame | None = None  # one row per category: wnid, name, keep, and the funnel's counts
    threshold: float = 0.1  # consistency threshold (colours of the drawings)
    galleries: list[CategoryGallery] | None = None
    no_pairs: list[tuple[str, str]] = field(default_factory=list)  # (wnid, why) of kept categories without edges
    dropped: list[DroppedView] | None = None
    dropped_counts: dict[str, int] = field(default_factory=dict)  # reason → images
    single_instance_threshold: float | None = None
    image_scores: pd.DataFrame | None = None  # wnid, src_id, score (+ selected when `select` is built)
    score_label: str = "image consistency score"
    selection_note: str = ""
    quality: dict[str, Any] | None = None  # `select`'s extra.quality (synthetic data)
    truth: TruthData | None = None
    train_log: pd.DataFrame | None = None
    train_scores: TrainScores = field(default_factory=TrainScores)
    release: Path | None = None
    config_path: Path | None = None
    config_text: str | None = None
    synthetic: bool = False
    notes: dict[str, str] = field(default_factory=dict)  # section → why it shows less than usual
    problems: list[str] = field(default_factory=list)  # what could not be read (shown at the top of the page)

    def state(self, stage: str) -> str:
        for s in self.stages:
            if s.name == stage:
                return s.state
        return "missing"

    def missing_for(self, section: str) -> list[str]:
        """Stages a section needs that are not built (empty: the section can be shown)."""
        return [s for s in SECTION_NEEDS[section] if self.state(s) not in USABLE_STATES]
