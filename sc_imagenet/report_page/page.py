"""The report's HTML: one static page, no script, no network; images are files beside it (`assets`),
links to manifests are relative, so the folder opens from disk in any browser.

Python prepares what the page shows (numbers formatted, rows computed, links made relative) as the
plain view objects below; the Jinja2 templates in `templates/` only lay them out. Autoescape is on, so
every value that comes from a build (category names, image ids, paths, notes, the config's text) is
escaped by Jinja, and a missing variable is an error (`StrictUndefined`), not an empty string.

Numbers a test (or a person) may want to check carry data attributes: `data-funnel="<key>"` with
`data-value` on every funnel count, `data-stage`/`data-state` on every stage row, `data-missing` on a
section that is not built yet.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import jinja2
import numpy as np

from sc_imagenet.report_page.draw import legend_stops
from sc_imagenet.report_page.model import FUNNEL, ReportData, TrainScores
from sc_imagenet.report_page.plots import QUALITY_ROWS

TEMPLATES = Path(__file__).parent / "templates"
TIER_TITLES = {"most": "most consistent", "median": "median", "least": "least consistent"}
FUNNEL_GROUPS = (("categories", "categories_kept"),
                 ("images_indexed", "images_readable", "images_single_instance", "images_labelled",
                  "images_selected", "images_exported"),
                 ("pairs_labelled", "pairs_selected", "pairs_exported"),
                 ("keypoints",))
PER_CATEGORY_COLUMNS = ("images_indexed", "images_readable", "images_single_instance", "images_labelled",
                        "images_selected", "pairs_labelled", "pairs_selected", "pairs_exported")
TRUTH_CAPTION = ("Left: each candidate's loop offset against its true error (both in object sizes); labels whose "
                 "source point is off the object sit on the top edge. Right: each image's consistency score "
                 "against the true strict PCK@0.1 of its candidates.")


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment: every template here is HTML, so autoescape is on for all of them."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def href(target: Path, dest: Path, is_dir: bool = False) -> str:
    """A relative, URL-quoted link from the page's folder to `target`."""
    rel = Path(os.path.relpath(target, dest)).as_posix()
    return quote(rel) + ("/" if is_dir and not rel.endswith("/") else "")


def fmt(n: int | None) -> str:
    return "not built yet" if n is None else f"{n:,}"


def pair_key(gallery: int, pair: int) -> str:
    return f"pair:{gallery}:{pair}"


def dropped_key(i: int) -> str:
    return f"dropped:{i}"


# ------------------------------------------------------------------------------------------ view objects


@dataclass(frozen=True)
class Img:
    src: str  # URL-quoted, relative to the page
    width: object
    height: object
    alt: str


@dataclass(frozen=True)
class Missing:
    """Why a section shows nothing: the stages it needs that are not built, as (stage, state); when
    every stage is built, `note` says what went wrong instead."""

    section: str
    what: str
    stages: list[tuple[str, str]]
    note: str


@dataclass(frozen=True)
class FunnelRow:
    key: str
    label: str
    stage: str
    value: str  # data-value: the count, "" when its stage is not built
    built: bool
    count: str
    share: str  # of the step above, "" for a group's first step
    bar: str  # width of the bar, percent of the group's largest count
    group_start: bool


@dataclass(frozen=True)
class CategoryRow:
    wnid: str
    name: str
    status: str  # kept | removed: <reason>
    cells: list[str]


@dataclass(frozen=True)
class CategoryTable:
    columns: list[str]
    rows: list[CategoryRow]
    open: bool  # a short table starts unfolded


@dataclass(frozen=True)
class Funnel:
    rows: list[FunnelRow]
    categories: CategoryTable | None


@dataclass(frozen=True)
class StageRow:
    name: str
    state: str
    css: str
    rows: str
    by_status: list[tuple[str, str]]
    wall: str
    links: list[tuple[str, str]]  # (text, href)
    description: str


@dataclass(frozen=True)
class Stages:
    rows: list[StageRow]
    total: str
    stale: bool


@dataclass(frozen=True)
class Legend:
    gradient: str  # the CSS gradient's colour stops
    labels: list[str]


@dataclass(frozen=True)
class PairFigure:
    img: Img | None
    src_id: str
    trg_id: str
    score: str
    points: str
    decision: str | None
    truth: str


@dataclass(frozen=True)
class Tier:
    title: str
    figures: list[PairFigure]


@dataclass(frozen=True)
class GalleryCategory:
    wnid: str
    name: str
    edges: str
    has_pairs: bool
    tiers: list[Tier]


@dataclass(frozen=True)
class Gallery:
    missing: Missing | None
    legend: Legend | None = None
    note: str = ""
    categories: list[GalleryCategory] = field(default_factory=list)
    no_pairs: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class DroppedFigure:
    img: Img | None
    reason: str
    image_id: str
    detections: str
    note: str


@dataclass(frozen=True)
class Undrawable:
    wnid: str
    image_id: str
    reason: str
    note: str


@dataclass(frozen=True)
class Dropped:
    missing: Missing | None
    counts: str = ""
    threshold: str = ""
    figures: list[DroppedFigure] = field(default_factory=list)
    undrawable: list[Undrawable] = field(default_factory=list)


@dataclass(frozen=True)
class Plot:
    """A plot with its caption, or why it is missing: the stages not built (`missing`), or, when they are
    built but recorded nothing to plot, `unavailable`."""

    img: Img | None
    caption: str = ""
    missing: Missing | None = None
    unavailable: str = ""


@dataclass(frozen=True)
class Plots:
    scores: Plot
    training: Plot
    quality: Plot | None  # synthetic data only
    truth: Plot | None


@dataclass(frozen=True)
class Outputs:
    links: list[tuple[str, str, str]]  # (what, href, path)
    config_text: str | None


# ------------------------------------------------------------------------------------------ preparing them


def _missing(data: ReportData, section: str, what: str) -> Missing:
    return Missing(section, what, [(s, data.state(s)) for s in data.missing_for(section)],
                   data.notes.get(section, "nothing to show"))


def _img(asset: Mapping[str, object] | None, alt: str) -> Img | None:
    if asset is None:
        return None
    return Img(quote(str(asset["path"])), asset["width"], asset["height"], alt)


def _isna(v: object) -> bool:
    return v is None or (isinstance(v, float) and not np.isfinite(v))


def funnel_view(data: ReportData) -> Funnel:
    labels = {k: (label, stage) for k, label, stage in FUNNEL}
    rows = []
    for group in FUNNEL_GROUPS:
        top = max([data.funnel.get(k) or 0 for k in group] + [1])
        prev: int | None = None
        for i, key in enumerate(group):
            label, stage = labels[key]
            value = data.funnel.get(key)
            rows.append(FunnelRow(
                key=key, label=label, stage=stage, value="" if value is None else str(value),
                built=value is not None, count=fmt(value),
                share=f"{100.0 * value / prev:.1f} %" if value is not None and prev else "",
                bar=f"{100.0 * (value or 0) / top:.1f}", group_start=i == 0))
            prev = value if i == 0 or value is not None else prev
    return Funnel(rows, per_category_table(data))


def per_category_table(data: ReportData) -> CategoryTable | None:
    df = data.per_category
    if df is None or df.empty:
        return None
    cols = [c for c in PER_CATEGORY_COLUMNS if c in df]
    rows = [CategoryRow(r.wnid, r.name, "kept" if r.keep else f"removed: {r.reason}",
                        ["—" if _isna(getattr(r, c)) else f"{int(getattr(r, c)):,}" for c in cols])
            for r in df.itertuples(index=False)]
    return CategoryTable([c.replace("_", " ") for c in cols], rows, open=len(df) <= 12)


def stages_view(data: ReportData, dest: Path) -> Stages:
    rows = []
    total = 0.0
    for s in data.stages:
        links = []
        if s.manifest_dir.exists():
            links.append(("manifest", href(s.manifest_dir, dest, True)))
        if s.record is not None:
            links.append(("_stage.json", href(s.record, dest)))
        total += s.wall_s or 0.0
        rows.append(StageRow(
            name=s.name, state=s.state,
            css={"complete": "complete", "stale": "stale", "partial": "partial", "this page": ""}.get(s.state,
                                                                                                     "absent"),
            rows="" if s.rows is None else fmt(s.rows),
            by_status=[(k, f"{v:,}") for k, v in s.rows_by_status.items()],
            wall="" if s.wall_s is None else f"{s.wall_s:,.1f}", links=links, description=s.description))
    return Stages(rows, f"{total:,.1f}", stale=any(s.state == "stale" for s in data.stages))


def legend(threshold: float) -> Legend:
    stops = legend_stops(threshold)
    gradient = ", ".join(f"rgb{c} {100 * i / (len(stops) - 1):.0f}%" for i, (_, _, c) in enumerate(stops))
    return Legend(gradient, [label for _, label, _ in stops[::2]])


def gallery_view(data: ReportData, assets: Mapping[str, Mapping[str, object]]) -> Gallery:
    if data.missing_for("gallery") or data.galleries is None:
        return Gallery(_missing(data, "gallery", "Pair gallery"))
    categories = []
    for g_i, g in enumerate(data.galleries):
        tiers = []
        for tier in ("most", "median", "least") if g.pairs else ():
            figures = [PairFigure(
                img=_img(assets.get(pair_key(g_i, p_i)), f"{p.src_id} to {p.trg_id}"),
                src_id=p.src_id, trg_id=p.trg_id, score=f"{p.pair_score:.2f}", points=p.points,
                decision=p.decision, truth="" if p.true_pck is None else f"{p.true_pck:.2f}")
                for p_i, p in enumerate(g.pairs) if p.tier == tier]
            if figures:
                tiers.append(Tier(TIER_TITLES[tier], figures))
        categories.append(GalleryCategory(g.wnid, g.name, f"{g.edges:,}", bool(g.pairs), tiers))
    return Gallery(None, legend(data.threshold), data.notes.get("gallery", ""), categories, list(data.no_pairs))


def dropped_view(data: ReportData, assets: Mapping[str, Mapping[str, object]]) -> Dropped:
    if data.missing_for("dropped") or data.dropped is None:
        return Dropped(_missing(data, "dropped", "Dropped images"))
    figures, undrawable = [], []
    for i, d in enumerate(data.dropped):
        asset = assets.get(dropped_key(i))
        if asset is None:
            undrawable.append(Undrawable(d.wnid, d.image_id, d.reason, d.note))
            continue
        n = len(d.detections)
        figures.append(DroppedFigure(_img(asset, d.image_id), d.reason, d.image_id,
                                     f"{n} detection{'' if n == 1 else 's'}", d.note))
    return Dropped(
        None, counts=", ".join(f"{k} {v:,}" for k, v in sorted(data.dropped_counts.items())) or "none",
        threshold="" if data.single_instance_threshold is None else f"{data.single_instance_threshold:g}",
        figures=figures, undrawable=undrawable)


def _plot(data: ReportData, assets: Mapping[str, Mapping[str, object]], section: str, title: str, alt: str,
          caption: str, unavailable: str | None = None) -> Plot:
    """`unavailable`: what to say when the stages are built but recorded nothing to plot (default: the
    section's note, as for stages not built)."""
    if data.missing_for(section) or f"fig:{section}" not in assets:
        if data.missing_for(section) or unavailable is None:
            return Plot(None, missing=_missing(data, section, title))
        return Plot(None, unavailable=unavailable)
    return Plot(_img(assets[f"fig:{section}"], alt), caption)


def plots_view(data: ReportData, assets: Mapping[str, Mapping[str, object]]) -> Plots:
    quality = truth = None
    if data.synthetic:
        quality = _plot(data, assets, "quality", "PCK of selected vs. rejected", "strict PCK",
                        quality_caption(data.quality or {}), "select recorded no quality figures.")
        truth = _plot(data, assets, "truth", "Consistency vs. true error", "consistency vs true error",
                      TRUTH_CAPTION, data.notes.get("truth", "no ground truth"))
    return Plots(
        scores=_plot(data, assets, "scores", "Score distribution", "score histogram", data.selection_note),
        training=_plot(data, assets, "training", "Training curves", "training losses",
                       train_caption(data.train_scores), "The train manifest has no logged step."),
        quality=quality, truth=truth)


def quality_caption(q: Mapping[str, object]) -> str:
    bits = []
    for key, label in QUALITY_ROWS:
        part = q.get(key)
        if isinstance(part, dict) and "strict_pck@0.1" in part:
            bits.append(f"{label} {part['strict_pck@0.1']:.3f}")
    sp = q.get("spearman")
    if isinstance(sp, int | float):
        bits.append(f"Spearman(image score, true accuracy) {sp:.2f}")
    return "Strict PCK@0.1: " + " · ".join(bits) if bits else ""


PCK_LABELS = {"generator": "generator", "mnn": "MNN baseline", "nn": "NN, same read-out"}


def train_caption(scores: TrainScores) -> str:
    parts = [f"{label} {scores.pck[k][0]:.3f}/{scores.pck[k][1]:.3f}" for k, label in PCK_LABELS.items()
             if k in scores.pck]
    if parts:
        n = f"{int(scores.eval_pairs)}" if scores.eval_pairs is not None else "?"
        return f"Held-out PCK@0.05/0.1 ({n} synthetic pairs): " + " · ".join(parts)
    return f"{scores.steps if scores.steps is not None else '?'} steps."


def outputs_view(data: ReportData, dest: Path) -> Outputs:
    rows = [("build folder", data.out_dir, True), ("manifests", data.out_dir / "manifests", True)]
    if data.release is not None:
        rows.append(("SC-ImageNet release", data.release, True))
    if data.config_path is not None:
        rows.append(("resolved config", data.config_path, False))
    return Outputs([(k, href(p, dest, d), str(p)) for k, p, d in rows], data.config_text or None)


def render_page(data: ReportData, dest: Path, assets: Mapping[str, Mapping[str, object]]) -> str:
    """The whole page; `assets` maps the keys of the drawings and plots to {path, width, height}."""
    stages = [s for s in data.stages if s.state != "this page"]
    return environment().get_template("page.html.j2").render(
        title=data.out_dir.name, out_dir=str(data.out_dir), synthetic=data.synthetic, problems=data.problems,
        built=sum(s.state in ("complete", "stale") for s in stages), total=len(stages),
        funnel=funnel_view(data), stages=stages_view(data, dest), gallery=gallery_view(data, assets),
        dropped=dropped_view(data, assets), plots=plots_view(data, assets), outputs=outputs_view(data, dest))
