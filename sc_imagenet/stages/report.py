"""Stage `report`: the page a person looks at after a build — the funnel from categories to exported
keypoints, every stage's time and rows per status, pseudo-labelled pairs drawn with their matches,
the images the single-instance step dropped, plots (on synthetic data against the ground truth) and
the resolved config — written to `<out>/artifacts/report/index.html` with its images beside it.

`gather_report` reads whatever a build folder holds (a stage that is not built leaves its sections
saying so), so `sc-imagenet report` renders partial builds too; the stage runs it on a complete one.
Rendering lives in `sc_imagenet.report_page`. The manifest lists every file written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sc_imagenet.config import BuildConfig
from sc_imagenet.io.integrity import build_relative
from sc_imagenet.io.manifest import (
    STAGE_RECORD,
    ShardWriter,
    category_shards,
    list_shards,
    open_manifest,
    read_manifest,
    read_shard,
    read_stage_record,
    shard_path,
    table_dir,
)
from sc_imagenet.report_page import (
    CURVE_COLUMNS,
    PAGE,
    USABLE_STATES,
    CategoryGallery,
    Detection,
    DroppedView,
    PairView,
    ReportData,
    ReportFile,
    StageView,
    TrainScores,
    TruthData,
    write_report,
)
from sc_imagenet.stages.base import (
    STAGES,
    Stage,
    StageContext,
    StageFigures,
    StageOutput,
    pipeline_order,
    register_stage,
)
from sc_imagenet.stages.categories import CategoriesStage
from sc_imagenet.stages.consistency import IMAGES, ConsistencyFigures, ConsistencyStage
from sc_imagenet.stages.detect import DetectStage
from sc_imagenet.stages.export import ExportFigures, ExportStage
from sc_imagenet.stages.index import IndexStage
from sc_imagenet.stages.label import LabelStage
from sc_imagenet.stages.schema import column, manifest_schema
from sc_imagenet.stages.select import SelectFigures, SelectStage
from sc_imagenet.stages.single_instance import SingleInstanceFigures, SingleInstanceStage
from sc_imagenet.stages.train import TrainFigures, TrainStage

SCHEMA = manifest_schema(
    column("path", pa.string(), "the file, relative to the report folder (`<out>/artifacts/report/`), "
           "`/`-separated: `index.html` or `img/<name>`"),
    column("kind", pa.string(), "`page` (index.html, open it in a browser), `figure` (a plot, PNG), `pair` (a "
           "pseudo-labelled pair with its matches, JPEG) or `dropped` (an image the single-instance step dropped, "
           "with the detector's boxes, JPEG)"),
    column("section", pa.string(), "section of the page the file belongs to: `page`, `gallery`, `dropped`, `plots`"),
    column("caption", pa.string(), "what the file shows"),
    column("bytes", pa.int64(), "file size (the page's and the timing plot's vary with the durations they show)",
           "bytes", volatile=True),
    column("width", pa.int32(), "image width (null for the page)", "pixels"),
    column("height", pa.int32(), "image height (null for the page)", "pixels"),
)


class ReportFigures(StageFigures):
    """`report`'s record: where the page is (`sc-imagenet status`, the demo and the Prefect flow link it)."""

    page: str  # index.html, relative to the build folder
    files: int
    bytes: int
    bytes_by_kind: dict[str, int]

    def page_path(self, out_dir: Path) -> Path | None:
        return self.build_path(self.page, out_dir)


@register_stage
class ReportStage(Stage):
    name = "report"
    schema_version = 1
    schema = SCHEMA
    figures_model = ReportFigures
    partitioned = False
    status_column = "kind"
    # every stage registered before it: the report reads them all and must run after them, and
    # stages/__init__.py imports this module last (tests/test_stage_contract.py checks both)
    inputs = tuple(pipeline_order())
    description = "the build report: one HTML page (funnel, stages, pair galleries, plots)"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        return {"data_root": str(data_root), "synthetic": cfg.data.source == "synthetic",
                **cfg.report.model_dump(mode="json")}

    def run(self, ctx: StageContext) -> StageOutput:
        page, files = write_build_report(ctx.out_dir, ctx.cfg, ctx.data_root, ctx.artifacts(), log=ctx.log)
        path = ctx.shard()
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            writer.write_many(f.as_row() for f in files)
        kinds = Counter(f.kind for f in files)
        size: Counter[str] = Counter()
        for f in files:
            size[f.kind] += f.bytes
        total = sum(size.values())
        ctx.log(f"[report] {page} ({total / 1e6:.2f} MB in {len(files)} files)")
        extra = {"page": build_relative(page, ctx.out_dir), "files": len(files), "bytes": total,
                 "bytes_by_kind": dict(sorted(size.items()))}
        summary = [{"kind": k, "files": n, "bytes": size[k]} for k, n in sorted(kinds.items())]
        summary.append({"kind": "total", "files": len(files), "bytes": total})
        artifacts = [ctx.artifacts() / f.path for f in files]
        return StageOutput(len(files), dict(kinds), [path], 0, ReportFigures.check(extra), summary, artifacts)


def write_build_report(out_dir: Path, cfg: BuildConfig, data_root: Path, dest: Path,
                       states: dict[str, str] | None = None,
                       log: Callable[[str], None] = print) -> tuple[Path, list[ReportFile]]:
    """Gather what `out_dir` holds and write the page into `dest`; returns the page and every file written."""
    data = gather_report(out_dir, cfg, data_root, states, log)
    files = write_report(data, dest, cfg.report.image_height, cfg.report.jpeg_quality, log=log)
    return Path(dest) / PAGE, files


# ---------------------------------------------------------------------------------------------- gather

CATEGORY_COLUMNS = CategoriesStage.columns("wnid", "name", "keep", "reason")
INDEX_COLUMNS = IndexStage.columns("wnid", "image_id", "status", "error")
SINGLE_COLUMNS = SingleInstanceStage.columns("wnid", "image_id", "rel_path", "keep", "reason", "n_above",
                                             "n_detections")
DETECT_COLUMNS = DetectStage.columns("image_id", "status", "conf", "box", "class_name")
LABEL_COUNT_COLUMNS = LabelStage.columns("wnid", "src_id", "trg_id", "status", "error")
LABEL_POINT_COLUMNS = LabelStage.columns("src_id", "trg_id", "status", "src_kps", "trg_kps")
CONSISTENCY_EDGE_COLUMNS = ConsistencyStage.columns("src_id", "trg_id", "status", "pair_consistent",
                                                    "pair_offset_median", "point_offset")
CONSISTENCY_IMAGE_COLUMNS = ConsistencyStage.table_columns(IMAGES, "wnid", "image_id", "consistent")
SELECT_COLUMNS = SelectStage.columns("wnid", "src_id", "trg_id", "src_selected", "src_score", "keep", "reason",
                                     "src_kps")
SELECT_POINT_COLUMNS = SelectStage.columns("src_id", "trg_id", "keep", "reason", "src_kps", "trg_kps",
                                           "candidates")
EXPORT_COLUMNS = ExportStage.columns("wnid", "src_id", "trg_id")
TRAIN_COLUMNS = TrainStage.columns("step", "L_I", "L_R", "L_P", "total")
EDGE = ("ok", "no_loops")  # consistency statuses of an edge
SCORE_LABELS = {"loop3": "image consistency: fraction of its 3-image loop offsets ≤ {thr}",
                "loop2": "image score: fraction of its candidates with forward-backward offset ≤ {thr}",
                "score": "image score: mean match confidence of its candidates",
                "random": "image score: a seeded random draw (baseline)"}


def manifest_dir(out_dir: Path, name: str) -> Path:
    """`<out>/manifests/<stage>` (the layout `sc_imagenet.build.stage_dir` defines)."""
    return Path(out_dir) / "manifests" / name


def record_states(out_dir: Path) -> dict[str, str]:
    """Per stage, from the folder alone: `complete` (a record), `partial` (shards only) or `missing`.
    `sc_imagenet.build.stage_states` also tells `stale` ones apart (it knows the config)."""
    states = {}
    for name in pipeline_order():
        d = manifest_dir(out_dir, name)
        states[name] = "complete" if (d / STAGE_RECORD).exists() else "partial" if list_shards(d) else "missing"
    return states


F = TypeVar("F", bound=StageFigures)


class BuildReader:
    """Reads one build folder's manifests, each stage only if it is usable."""

    def __init__(self, out_dir: Path, states: dict[str, str]) -> None:
        self.out_dir = Path(out_dir)
        self.states = states
        self._records: dict[str, Any] = {}
        self.problems: list[str] = [
            f"the {name} manifest could not be read: it is {state} (`sc-imagenet status` names the files; the next "
            "build rebuilds them)" for name, state in states.items() if state.startswith("damaged")]

    def usable(self, *stages: str) -> bool:
        return all(self.states.get(s) in USABLE_STATES for s in stages)

    def dir(self, name: str) -> Path:
        return manifest_dir(self.out_dir, name)

    def figures(self, name: str, model: type[F]) -> F | None:
        """The stage's record figures; None without a record, or (a problem on the page) when they do not fit
        the stage's model: a record of an incompatible version."""
        if name not in self._records:
            self._records[name] = read_stage_record(self.dir(name))
        try:
            return model.of(self._records[name])
        except ValueError as exc:
            self.problems.append(f"the {name} record's figures could not be read: {str(exc)[:200]}")
            return None

    def table(self, name: str, columns: list[str]) -> pd.DataFrame | None:
        if not self.usable(name):
            return None
        try:
            return read_manifest(self.dir(name), columns=columns).to_pandas()
        except Exception as exc:  # e.g. a stale manifest of an older schema: its numbers stay empty
            self.problems.append(f"the {name} manifest could not be read: {type(exc).__name__}: {exc}")
            return None

    def images_table(self, name: str, columns: list[str],
                     per_image: Callable[[pa.Table], pd.DataFrame]) -> pd.DataFrame | None:
        """A per-edge manifest reduced to one row per source image, one category shard at a time: memory
        holds images, never every edge (7 M of them on ImageNet)."""
        if not self.usable(name):
            return None
        try:
            stored = [c for c in columns if c != "wnid"]
            parts = [per_image(read_shard(shard_path(self.dir(name), w), columns=stored)).assign(wnid=w)
                     for w in category_shards(self.dir(name))]
            empty = per_image(pa.table({c: pa.array([], STAGES[name].schema.field(c).type) for c in stored}))
            return pd.concat([empty.assign(wnid=pd.Series(dtype=object)), *parts], ignore_index=True)
        except Exception as exc:  # e.g. a stale manifest of an older schema: its numbers stay empty
            self.problems.append(f"the {name} manifest could not be read: {type(exc).__name__}: {exc}")
            return None

    def shard(self, name: str, wnid: str, columns: list[str]) -> pd.DataFrame:
        path = shard_path(self.dir(name), wnid)
        return read_shard(path, columns=columns).to_pandas() if path.exists() else pd.DataFrame(columns=columns)


def gather_report(out_dir: Path, cfg: BuildConfig, data_root: Path, states: dict[str, str] | None = None,
                  log: Callable[[str], None] = print) -> ReportData:
    """Everything the page shows, read from the build folder. `states`: stage → state (default: from
    the records in the folder); a stage not `complete`/`stale` is not read and its sections say so."""
    out_dir = Path(out_dir).resolve()
    states = {**record_states(out_dir), **(states or {})}
    build = BuildReader(out_dir, states)
    data = ReportData(out_dir=out_dir, stages=stage_views(out_dir, states), funnel={},
                      synthetic=cfg.data.source == "synthetic")
    consistency = build.figures("consistency", ConsistencyFigures)
    data.threshold = consistency.threshold if consistency is not None else cfg.consistency.threshold
    config = out_dir / "config.resolved.yaml"
    if config.exists():
        data.config_path, data.config_text = config, config.read_text()
    export = build.figures("export", ExportFigures)
    data.release = export.release_path(out_dir) if export is not None else None

    tables = {
        "categories": build.table("categories", CATEGORY_COLUMNS),
        "index": build.table("index", INDEX_COLUMNS),
        "single_instance": build.table("single_instance", SINGLE_COLUMNS),
        "label": build.images_table("label", LABEL_COUNT_COLUMNS, label_images),
        "select": build.images_table("select", SELECT_COLUMNS, select_images),
        "export": build.table("export", EXPORT_COLUMNS),
    }
    data.funnel, data.per_category = funnel_counts(tables)
    for section, fill in (("gallery", _gallery), ("dropped", _dropped), ("scores", _scores), ("truth", _truth),
                          ("training", _training)):
        try:
            fill(data, build, cfg, Path(data_root), tables)
        except Exception as exc:  # a stale manifest of another schema, a file gone: say so, show the rest
            data.notes[section] = f"could not be read: {type(exc).__name__}: {exc}"
            log(f"[report] section {section}: {data.notes[section]}")
    if build.usable("select"):
        select = build.figures("select", SelectFigures)
        data.quality = select.quality if select is not None else None
    data.problems = build.problems + [f"{k}: {v}" for k, v in data.notes.items() if v.startswith("could not be read")]
    for problem in build.problems:
        log(f"[report] {problem}")
    return data


def stage_views(out_dir: Path, states: dict[str, str]) -> list[StageView]:
    """Every stage's line. The report's own line only says "this page" (its record, if any, describes the
    previous page), so the stage and `sc-imagenet report` write the same page from the same build."""
    views = []
    for name in pipeline_order():
        d = manifest_dir(out_dir, name)
        if name == ReportStage.name:
            views.append(StageView(name=name, state="this page", description=STAGES[name].description,
                                   manifest_dir=d))
            continue
        record = read_stage_record(d)
        views.append(StageView(
            name=name, state=states.get(name, "missing"), description=STAGES[name].description, manifest_dir=d,
            record=d / STAGE_RECORD if (d / STAGE_RECORD).exists() else None,
            rows=record.rows if record else None, rows_by_status=record.rows_by_status if record else {},
            wall_s=record.wall_s if record else None))
    return views


def funnel_counts(tables: dict[str, pd.DataFrame | None]) -> tuple[dict[str, int | None], pd.DataFrame | None]:
    """The funnel's numbers (None where the stage is not built) and the same counts per category.
    Images are counted as distinct (wnid, image id); every number is a count of manifest rows."""
    cats, index, single, label, select, export = (tables[k] for k in ("categories", "index", "single_instance", "label",
                                                                 "select", "export"))
    parts: dict[str, pd.Series] = {}

    def per_wnid(key: str, frame: pd.DataFrame, ids: list[str] | None = None, total: str | None = None) -> int:
        if total is not None:  # rows that stand for several (an image's edges): their count column
            parts[key] = frame.groupby("wnid")[total].sum().astype(int)
            return int(frame[total].sum())
        if ids is None:
            parts[key] = frame.groupby("wnid").size()
            return len(frame)
        unique = frame[["wnid", *ids]].drop_duplicates()
        parts[key] = unique.groupby("wnid").size()
        return len(unique)

    funnel: dict[str, int | None] = {}
    funnel["categories"] = None if cats is None else len(cats)
    funnel["categories_kept"] = None if cats is None else int(cats["keep"].sum())
    funnel["images_indexed"] = None if index is None else per_wnid("images_indexed", index, ["image_id"])
    funnel["images_readable"] = None if index is None else per_wnid("images_readable", index[index["status"] == "ok"],
                                                               ["image_id"])
    funnel["images_single_instance"] = None if single is None else per_wnid(
        "images_single_instance", single[single["keep"].astype(bool)], ["image_id"])
    edges = None if label is None else label[label["status"] == "ok"]
    funnel["images_labelled"] = None if edges is None else per_wnid("images_labelled", edges, ["src_id"])
    funnel["pairs_labelled"] = None if edges is None else per_wnid("pairs_labelled", edges, total="edges")
    funnel["images_selected"] = None if select is None else per_wnid(
        "images_selected", select[select["src_selected"].astype(bool)], ["src_id"])
    funnel["pairs_selected"] = None if select is None else per_wnid("pairs_selected", select, total="kept_pairs")
    funnel["keypoints"] = None if select is None else int(select["keypoints"].sum())
    if export is None:
        funnel["images_exported"] = funnel["pairs_exported"] = None
    else:
        ids = pd.concat([export[["wnid", "src_id"]].rename(columns={"src_id": "id"}),
                         export[["wnid", "trg_id"]].rename(columns={"trg_id": "id"})])
        funnel["images_exported"] = per_wnid("images_exported", ids, ["id"])
        funnel["pairs_exported"] = per_wnid("pairs_exported", export)

    wnids = sorted(set(cats["wnid"]) if cats is not None else set().union(*(set(s.index) for s in parts.values())))
    if not wnids:
        return funnel, None
    per = pd.DataFrame({"wnid": wnids})
    if cats is not None:
        per = per.merge(cats[["wnid", "name", "keep", "reason"]], on="wnid", how="left")
    else:
        per["name"], per["keep"], per["reason"] = per["wnid"], True, ""
    for key, counts in parts.items():
        per[key] = per["wnid"].map(counts).fillna(0).astype(int)
    # a kept category whose stage is built but holds no row gets 0; a removed one stays empty
    per = per.astype({c: "object" for c in parts})
    for key in parts:
        per.loc[~per["keep"].astype(bool), key] = None
    return funnel, per


def label_images(shard: pa.Table) -> pd.DataFrame:
    """One `label` shard as one row per (source image, status, error), with its number of edges (`ok` rows)."""
    df = shard.select(["src_id", "status", "error"]).to_pandas()
    ok = df["status"] == "ok"
    edges = df[ok].groupby("src_id", as_index=False).size().rename(columns={"size": "edges"})
    edges["status"], edges["error"] = "ok", None
    return pd.concat([edges, df[~ok].assign(edges=0)], ignore_index=True)[["src_id", "status", "error", "edges"]]


def select_images(shard: pa.Table) -> pd.DataFrame:
    """One `select` shard as one row per source image: its score and selection, its kept pairs and their
    keypoints."""
    keep = shard["keep"].to_numpy(zero_copy_only=False).astype(bool)
    points = pc.list_value_length(shard["src_kps"]).fill_null(0).to_numpy(zero_copy_only=False) // 2
    df = shard.select(["src_id", "src_selected", "src_score"]).to_pandas()
    df["kept_pairs"], df["keypoints"] = keep.astype(np.int64), np.where(keep, points, 0).astype(np.int64)
    return df.groupby("src_id", as_index=False, sort=True).agg(
        src_selected=("src_selected", "first"), src_score=("src_score", "first"), kept_pairs=("kept_pairs", "sum"),
        keypoints=("keypoints", "sum"))


def _spread(items: list[str], n: int) -> list[str]:
    """`n` items spread evenly over `items` (all of them if there are no more)."""
    if n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.unique(np.linspace(0, len(items) - 1, n).round())]


def _points(v: Any) -> np.ndarray:
    return np.asarray(v if v is not None else [], np.float32).reshape(-1, 2)


def _oracle(data: ReportData, data_root: Path) -> Any:
    if not data.synthetic:
        return None
    if not (data_root / "_groundtruth").is_dir():
        data.notes["truth"] = f"no ground truth under {data_root / '_groundtruth'}"
        return None
    from sc_imagenet.dataset.quality import TruthOracle

    return TruthOracle(data_root)


def _tiers(n_edges: int, per_tier: int) -> list[tuple[str, int]]:
    """(tier, position in the consistency ranking) of the pairs to draw; each edge at most once."""
    mid = max(0, (n_edges - per_tier) // 2)
    wanted = [("most", range(per_tier)), ("median", range(mid, mid + per_tier)),
              ("least", range(n_edges - 1, n_edges - 1 - per_tier, -1))]
    used: set[int] = set()
    out = []
    for tier, positions in wanted:
        for pos in positions:
            if 0 <= pos < n_edges and pos not in used:
                used.add(pos)
                out.append((tier, pos))
    return out


def _gallery(data: ReportData, build: BuildReader, cfg: BuildConfig, data_root: Path, tables: dict[str, Any]) -> None:
    if data.missing_for("gallery"):
        return
    label = tables["label"]
    edges = label[label["status"] == "ok"]
    n_edges = edges.groupby("wnid")["edges"].sum()
    with_edges = sorted(n_edges.index)
    names = {}
    if tables["categories"] is not None:
        names = dict(zip(tables["categories"]["wnid"], tables["categories"]["name"], strict=True))
        kept = sorted(tables["categories"].loc[tables["categories"]["keep"].astype(bool), "wnid"])
    else:
        kept = sorted(set(tables["index"]["wnid"]) if tables["index"] is not None else set(label["wnid"]))
    for wnid in kept:
        if wnid in n_edges.index:
            continue
        rows = label[label["wnid"] == wnid]
        if len(rows):
            why = "; ".join(sorted({f"{r.status}: {r.error}" if r.error else r.status for r in rows.itertuples()}))
        else:
            n_single = 0 if tables["single_instance"] is None else int(
                (tables["single_instance"]["wnid"].eq(wnid) & tables["single_instance"]["keep"].astype(bool)).sum())
            why = f"{n_single} single-instance images" if n_single == 0 else "no label rows"
        data.no_pairs.append((wnid, why))
    r = cfg.report
    if r.wnids is not None:
        unknown = [w for w in r.wnids if w not in n_edges.index]
        if unknown:
            data.notes["gallery"] = f"report.wnids without pseudo-labelled pairs: {', '.join(unknown)}"
        chosen = [w for w in r.wnids if w in n_edges.index]
    else:
        chosen = _spread(with_edges, r.categories)
    oracle = _oracle(data, data_root)
    with_select = build.usable("select")
    galleries = []
    for wnid in chosen:
        cons = build.shard("consistency", wnid, CONSISTENCY_EDGE_COLUMNS)
        cons = cons[cons["status"].isin(EDGE) & cons["pair_consistent"].notna()]
        lab = build.shard("label", wnid, LABEL_POINT_COLUMNS)
        lab = lab[lab["status"] == "ok"].drop(columns="status")
        ranked = cons.drop(columns="status").merge(lab, on=["src_id", "trg_id"], how="inner", validate="one_to_one")
        ranked = ranked.sort_values(["pair_consistent", "pair_offset_median", "src_id", "trg_id"],
                                    ascending=[False, True, True, True], na_position="last").reset_index(drop=True)
        sel = None
        if with_select:
            sel = build.shard("select", wnid, SELECT_POINT_COLUMNS).set_index(["src_id", "trg_id"])
        si = build.shard("single_instance", wnid, SingleInstanceStage.columns("image_id", "rel_path"))
        paths = dict(zip(si["image_id"], si["rel_path"], strict=True))
        pairs = []
        for tier, pos in _tiers(len(ranked), r.pairs_per_tier):
            pairs.append(_pair_view(wnid, tier, ranked.iloc[pos], sel, paths, data_root, cfg.select.keypoints, oracle))
        galleries.append(CategoryGallery(wnid, str(names.get(wnid, wnid)), int(n_edges.get(wnid, 0)), pairs))
    data.galleries = galleries


def _pair_view(wnid: str, tier: str, edge: pd.Series, sel: pd.DataFrame | None, paths: dict[str, str],
               data_root: Path, keypoints: int, oracle: Any) -> PairView:
    cand_src, cand_trg = _points(edge["src_kps"]), _points(edge["trg_kps"])
    offsets = np.asarray(edge["point_offset"] if edge["point_offset"] is not None else [], np.float64)
    decision = None
    row = None
    if sel is not None and (edge["src_id"], edge["trg_id"]) in sel.index:
        row = sel.loc[(edge["src_id"], edge["trg_id"])]
        decision = str(row["reason"])
    if row is not None and bool(row["keep"]):
        src, trg = _points(row["src_kps"]), _points(row["trg_kps"])
        # colour the final keypoints by their candidates' loop offsets (whatever select.rank_by was)
        offs = np.array([offsets[i] if i < len(offsets) else np.nan for i in row["candidates"]], np.float64)
        what = f"final keypoints ({len(src)})"
    else:
        k = min(keypoints, len(cand_src))
        src, trg, offs = cand_src[:k], cand_trg[:k], offsets[:k]
        what = f"top {k} of {len(cand_src)} candidates"
    true_pck = None
    if oracle is not None and len(src):
        truth = oracle.truth(edge["src_id"], edge["trg_id"], src, trg)
        true_pck = float((truth.error <= 0.1).mean())
    return PairView(wnid=wnid, tier=tier, src_id=edge["src_id"], trg_id=edge["trg_id"],
                    src_path=data_root / paths.get(edge["src_id"], edge["src_id"]),
                    trg_path=data_root / paths.get(edge["trg_id"], edge["trg_id"]), src_kps=src, trg_kps=trg,
                    offsets=offs, pair_score=float(edge["pair_consistent"]), points=what, decision=decision,
                    true_pck=true_pck)


def _dropped(data: ReportData, build: BuildReader, cfg: BuildConfig, data_root: Path, tables: dict[str, Any]) -> None:
    if data.missing_for("dropped"):
        return
    single = tables["single_instance"]
    single_figures = build.figures("single_instance", SingleInstanceFigures)
    data.single_instance_threshold = single_figures.threshold if single_figures is not None \
        else cfg.single_instance.threshold
    dropped = single[~single["keep"].astype(bool)].sort_values(["wnid", "image_id"])
    data.dropped_counts = {k: int(v) for k, v in dropped["reason"].value_counts().items()}
    errors = {}
    if tables["index"] is not None:
        bad = tables["index"][tables["index"]["status"] != "ok"]
        errors = {(wnid, image_id): f"{status}: {error}" for wnid, image_id, status, error in zip(
            bad["wnid"], bad["image_id"], bad["status"], bad["error"], strict=True)}
    detections: dict[str, pd.DataFrame] = {}
    views = []
    n = cfg.report.dropped_per_reason
    for reason in sorted(data.dropped_counts):
        rows = dropped[dropped["reason"] == reason]
        picks = _spread(list(range(len(rows))), n)
        for r in rows.iloc[picks].itertuples(index=False):
            if reason == "unreadable":
                note = errors.get((r.wnid, r.image_id), "could not be decoded when detecting")
                views.append(DroppedView(r.wnid, r.image_id, reason, None, note=note))
                continue
            dets: list[Detection] = []
            if build.usable("detect"):
                if r.wnid not in detections:
                    detections[r.wnid] = build.shard("detect", r.wnid, DETECT_COLUMNS)
                d = detections[r.wnid]
                d = d[(d["image_id"] == r.image_id) & (d["status"] == "detection")].sort_values("conf", ascending=False)
                dets = [Detection(tuple(float(v) for v in x.box), float(x.conf), str(x.class_name or ""),
                                  float(x.conf) > data.single_instance_threshold) for x in d.head(8).itertuples()]
            views.append(DroppedView(r.wnid, r.image_id, reason, data_root / r.rel_path, dets,
                                     note=f"{r.n_above} above the threshold"))
    data.dropped = views


def _scores(data: ReportData, build: BuildReader, cfg: BuildConfig, data_root: Path, tables: dict[str, Any]) -> None:
    if data.missing_for("scores"):
        return
    thr = f"{data.threshold:g}"
    if tables["select"] is not None:
        sel = tables["select"].drop_duplicates(["wnid", "src_id"])
        data.image_scores = pd.DataFrame({"wnid": sel["wnid"].to_numpy(), "src_id": sel["src_id"].to_numpy(),
                                          "score": sel["src_score"].to_numpy(np.float64),
                                          "selected": sel["src_selected"].to_numpy(bool)})
        figures = build.figures("select", SelectFigures)
        s = cfg.select
        rank_by = figures.rank_by if figures is not None else s.rank_by
        data.score_label = SCORE_LABELS.get(rank_by, "image score").format(thr=thr)
        counts = (figures.images_selected, figures.images, figures.pairs) if figures is not None else ("?", "?", "?")
        data.selection_note = (f"{counts[0]} of {counts[1]} images selected (top "
                               f"{s.fraction:.0%} per {s.scope if s.scope == 'category' else 'build'}, ranked by "
                               f"{rank_by}); {counts[2]} pairs kept.")
        return
    images = _image_table(build)
    data.image_scores = pd.DataFrame({"wnid": images["wnid"].to_numpy(), "src_id": images["image_id"].to_numpy(),
                                      "score": images["consistent"].to_numpy(np.float64)})
    data.score_label = SCORE_LABELS["loop3"].format(thr=thr)
    data.selection_note = "select is not built yet: no selection cut."


def _image_table(build: BuildReader) -> pd.DataFrame:
    """`consistency`'s image table: one row per source image with an edge."""
    return read_manifest(table_dir(build.dir("consistency"), IMAGES), columns=CONSISTENCY_IMAGE_COLUMNS).to_pandas()


def _truth(data: ReportData, build: BuildReader, cfg: BuildConfig, data_root: Path, tables: dict[str, Any]) -> None:
    if not data.synthetic or data.missing_for("truth"):
        return
    oracle = _oracle(data, data_root)
    if oracle is None:
        return
    from sc_imagenet.dataset.quality import image_true_accuracy, spearman

    cols = ConsistencyStage.columns("wnid", *CONSISTENCY_EDGE_COLUMNS)
    cons = read_manifest(build.dir("consistency"), columns=cols).to_pandas()
    cons = cons[cons["status"].isin(EDGE)].drop(columns="status")
    lab = read_manifest(build.dir("label"), columns=LabelStage.columns("wnid", *LABEL_POINT_COLUMNS)).to_pandas()
    lab = lab[lab["status"] == "ok"].drop(columns="status")
    edges = cons.merge(lab, on=["wnid", "src_id", "trg_id"], how="inner", validate="one_to_one")
    truths = [oracle.truth(edge.src_id, edge.trg_id, _points(edge.src_kps), _points(edge.trg_kps))
              for edge in edges.itertuples(index=False)]
    offsets = [np.asarray(o if o is not None else [], np.float64) for o in edges["point_offset"]]
    for o, tr in zip(offsets, truths, strict=True):
        if len(o) != len(tr.error):
            raise ValueError("consistency point_offset and label candidates differ in length")
    images = _image_table(build)
    acc = image_true_accuracy(edges["src_id"], truths, images["image_id"])
    score = images["consistent"].to_numpy(np.float64)
    selected = None
    if tables["select"] is not None:
        sel = tables["select"].drop_duplicates(["wnid", "src_id"]).set_index(["wnid", "src_id"])["src_selected"]
        selected = np.array([bool(sel.get((w, s), False)) for w, s in zip(images["wnid"], images["image_id"],
                                                                           strict=True)])
    data.truth = TruthData(point_offset=np.concatenate(offsets) if offsets else np.zeros(0),
                           point_error=np.concatenate([tr.error for tr in truths]) if truths else np.zeros(0),
                           image_score=score, image_accuracy=acc, image_selected=selected,
                           spearman=spearman(score, acc))


def _training(data: ReportData, build: BuildReader, cfg: BuildConfig, data_root: Path, tables: dict[str, Any]) -> None:
    if data.missing_for("training"):
        return
    # the curve columns are optional: a generator trained before they existed has none
    present = set(open_manifest(build.dir("train")).schema.names)
    columns = TRAIN_COLUMNS + [c for c in TrainStage.columns(*CURVE_COLUMNS) if c in present]
    data.train_log = read_manifest(build.dir("train"), columns=columns).to_pandas().sort_values("step")
    train = build.figures("train", TrainFigures)
    if train is not None:
        data.train_scores = TrainScores(steps=train.steps, eval_pairs=train.eval_pairs, pck=train.pck())
