"""Stage `report` and `sc-imagenet report`: the page of a small real build opened in a real headless
browser (images load, no console error, the funnel equals the manifests' counts), a partial build and
an empty build folder, a category without pairs, and the domain pieces (funnel counting, drawing)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import NoBrowser, open_page
from pydantic import ValidationError
from test_dataset_stages import DATASET
from test_label import build_profile

from sc_imagenet.build import plan_build, run_build_locally, stage_states
from sc_imagenet.build_summary import quality_lines
from sc_imagenet.cli import main
from sc_imagenet.config import load_config
from sc_imagenet.io.manifest import STAGE_RECORD, StageRecord, read_manifest, read_stage_record
from sc_imagenet.report_page import CategoryGallery, ReportData, StageView, write_report
from sc_imagenet.report_page.draw import draw_pair, offset_colour
from sc_imagenet.report_page.page import train_caption
from sc_imagenet.stages import downstream_of
from sc_imagenet.stages.base import StageFigures
from sc_imagenet.stages.consistency import ConsistencyFigures
from sc_imagenet.stages.detect import DetectFigures
from sc_imagenet.stages.export import ExportFigures
from sc_imagenet.stages.report import ReportFigures, funnel_counts, gather_report
from sc_imagenet.stages.select import SelectFigures
from sc_imagenet.stages.single_instance import SingleInstanceFigures
from sc_imagenet.stages.train import TrainFigures

EMPTY = "n00000099"  # a category folder with no image: kept, indexed (0 rows), no pairs


@pytest.fixture(scope="module")
def report_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny synthetic build (3 categories + an empty one) through every stage, `report` included."""
    from sc_imagenet.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("report-build")
    profile = build_profile(tmp)
    cfg = load_config(str(profile), DATASET)
    generate_dataset(cfg.data.root, cfg.data.synthetic, progress=False)
    (Path(cfg.data.root) / EMPTY).mkdir()
    plan = plan_build(cfg, "tiny", tmp / "out")
    run_build_locally(plan, log=lambda m: None, progress=False)
    return {"plan": plan, "cfg": cfg, "out": plan.out_dir, "data": Path(cfg.data.root)}


def browse(page: Path, screenshot: Path | None = None):
    try:
        return open_page(page, screenshot)
    except NoBrowser as exc:
        pytest.fail(f"{exc} (the report's browser test needs it)")


def manifest_counts(out: Path) -> dict[str, int]:
    """The funnel, counted straight from the manifests (independently of the report's code)."""
    m = out / "manifests"
    cats = read_manifest(m / "categories").to_pandas()
    index = read_manifest(m / "index").to_pandas()
    single = read_manifest(m / "single_instance").to_pandas()
    label = read_manifest(m / "label").to_pandas()
    select = read_manifest(m / "select").to_pandas()
    export = read_manifest(m / "export").to_pandas()
    edges = label[label.status == "ok"]
    kept = select[select.keep]
    return {
        "categories": len(cats), "categories_kept": int(cats.keep.sum()),
        "images_indexed": len(index), "images_readable": int((index.status == "ok").sum()),
        "images_single_instance": int(single.keep.sum()), "images_labelled": edges.src_id.nunique(),
        "images_selected": select[select.src_selected].src_id.nunique(),
        "images_exported": len(set(export.src_id) | set(export.trg_id)),
        "pairs_labelled": len(edges), "pairs_selected": len(kept), "pairs_exported": len(export),
        "keypoints": int(kept.src_kps.map(len).sum() // 2),
    }


def test_stage_writes_the_page_and_lists_every_file(report_build: dict) -> None:
    out = report_build["out"]
    assert all(s["state"] == "complete" for s in stage_states(out))
    record = read_stage_record(out / "manifests" / "report")
    page = ReportFigures.of(record).page_path(out)
    assert page == out / "artifacts" / "report" / "index.html" and page.is_file()
    rows = read_manifest(out / "manifests" / "report").to_pandas()
    assert record.rows == len(rows) and record.rows_by_status == rows.kind.value_counts().to_dict()
    assert {"page", "figure", "pair", "dropped"} <= set(rows.kind) and (rows.kind == "page").sum() == 1
    for r in rows.itertuples():
        assert (page.parent / r.path).stat().st_size == r.bytes, r.path
    assert sorted(p.name for p in (page.parent / "img").iterdir()) == sorted(
        Path(p).name for p in rows.path if p != "index.html")
    assert ReportFigures.of(record).bytes == rows.bytes.sum()
    # every gallery tier of the 3 categories with pairs; the synthetic-only plots are there
    assert set(rows[rows.kind == "figure"].path) == {"img/scores.png", "img/quality.png", "img/truth.png",
                                                     "img/training.png"}
    assert (rows.kind == "pair").sum() == 3 * 3 * report_build["cfg"].report.pairs_per_tier


def test_page_in_a_real_browser(report_build: dict, tmp_path: Path) -> None:
    out = report_build["out"]
    page = out / "artifacts" / "report" / "index.html"
    shot = tmp_path / "report.png"
    view = browse(page, shot)
    assert view.console_errors == []
    assert view.images >= 10 and view.broken_images == []
    assert shot.stat().st_size > 10_000
    want = manifest_counts(out)
    assert {k: int(v) for k, v in view.funnel.items()} == want
    # the records agree with the manifests too
    assert want["pairs_exported"] == read_stage_record(out / "manifests" / "export").rows
    assert want["images_selected"] == SelectFigures.read(out / "manifests" / "select").images_selected
    assert view.missing == []
    assert view.stages["report"] == "this page" and all(
        state == "complete" for name, state in view.stages.items() if name != "report")
    assert view.no_pairs == [EMPTY]


def test_cli_regenerates_the_same_page(report_build: dict, tmp_path: Path, capsys) -> None:
    out = report_build["out"]
    stage_dir = out / "artifacts" / "report"
    dest = tmp_path / "again"
    assert main(["report", "--out", str(out), "--dest", str(dest)]) == 0
    assert str(dest / "index.html") in capsys.readouterr().out
    files = sorted(p.relative_to(stage_dir) for p in stage_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    for f in files:
        if f.name != "index.html":  # the page links the manifests relative to where it is
            assert (stage_dir / f).read_bytes() == (dest / f).read_bytes(), f
    # in place, over the stage's own files: byte for byte what the stage wrote
    before = {f: (stage_dir / f).read_bytes() for f in files}
    assert main(["report", "--out", str(out)]) == 0
    assert {f: (stage_dir / f).read_bytes() for f in files} == before


def test_empty_category_is_counted_and_named(report_build: dict) -> None:
    cfg = report_build["cfg"]
    data = gather_report(report_build["out"], cfg, report_build["data"])
    assert data.notes == {}
    per = data.per_category.set_index("wnid")
    assert per.loc[EMPTY, "images_indexed"] == 0 and per.loc[EMPTY, "pairs_selected"] == 0
    assert data.no_pairs == [(EMPTY, "0 single-instance images")]
    assert [g.wnid for g in data.galleries] == sorted(set(per.index) - {EMPTY})
    for g in data.galleries:
        assert [p.tier for p in g.pairs] == ["most"] * 2 + ["median"] * 2 + ["least"] * 2
        scores = [p.pair_score for p in g.pairs]
        assert scores[0] >= scores[2] >= scores[-1]
        for p in g.pairs:
            assert len(p.src_kps) == len(p.trg_kps) == len(p.offsets) > 0
            assert 0 <= p.true_pck <= 1 and p.src_path.is_file()
            if p.decision == "kept":
                assert p.points.startswith("final keypoints") and np.isfinite(p.offsets).all()


def test_partial_build_sections_say_not_built(report_build: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "partial"
    shutil.copytree(report_build["out"], out, ignore=shutil.ignore_patterns(*downstream_of("label")))
    assert main(["report", "--out", str(out)]) == 0
    capsys.readouterr()
    page = out / "artifacts" / "report" / "index.html"
    html = page.read_text()
    missing = set(re.findall(r'data-missing="([a-z]+)"', html))
    assert missing == {"gallery", "scores", "quality", "truth"}
    assert "Pair gallery: not built yet — needs stage(s) <code>label</code> (missing)" in html
    funnel = dict(re.findall(r'data-funnel="([a-z_]+)" data-value="(\d*)"', html))
    assert funnel["images_single_instance"] != "" and funnel["pairs_labelled"] == funnel["keypoints"] == ""
    assert 'src="img/training.png"' in html and 'src="img/dropped-' in html
    view = browse(page)
    assert view.console_errors == [] and view.broken_images == []
    assert view.stages["label"] == "missing" and view.stages["train"] == "complete"


def test_empty_build_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "nothing"
    out.mkdir()
    assert main(["report", "--out", str(out)]) == 0
    html = (out / "artifacts" / "report" / "index.html").read_text()
    assert set(re.findall(r'data-missing="([a-z]+)"', html)) == {"gallery", "dropped", "scores", "training"}
    assert "0 of 10 stages built" in html and "not built yet" in html


# ------------------------------------------------------------------------------------------ domain pieces


def test_funnel_counts_from_tables() -> None:
    cats = pd.DataFrame({"wnid": ["a", "b", "c"], "name": ["A", "B", "C"], "keep": [True, True, False],
                         "reason": ["", "", "scene"]})
    index = pd.DataFrame({"wnid": ["a", "a", "a", "b"], "image_id": ["a1", "a2", "a3", "b1"],
                          "status": ["ok", "ok", "truncated", "ok"]})
    single = pd.DataFrame({"wnid": ["a", "a", "a", "b"], "image_id": ["a1", "a2", "a3", "b1"],
                           "keep": [True, True, False, False]})
    funnel, per = funnel_counts({"categories": cats, "index": index, "single_instance": single, "label": None,
                                 "select": None, "export": None})
    assert funnel == {"categories": 3, "categories_kept": 2, "images_indexed": 4, "images_readable": 3,
                      "images_single_instance": 2, "images_labelled": None, "pairs_labelled": None,
                      "images_selected": None, "pairs_selected": None, "keypoints": None,
                      "images_exported": None, "pairs_exported": None}
    per = per.set_index("wnid")
    assert per.loc["a", "images_readable"] == 2 and per.loc["b", "images_single_instance"] == 0
    assert per.loc["c", "images_indexed"] is None  # a removed category is not counted


def test_category_without_pairs_is_said(tmp_path: Path) -> None:
    data = ReportData(out_dir=tmp_path, stages=[StageView(s, "complete", "", tmp_path) for s in
                                                ("single_instance", "label", "consistency")],
                      funnel={}, galleries=[CategoryGallery("n1", "thing", 0, [])], no_pairs=[("n2", "too_few_images")])
    files = write_report(data, tmp_path / "r")
    html = (tmp_path / "r" / "index.html").read_text()
    assert "No pseudo-labelled pairs in this category." in html and "<code>n2</code>: too_few_images" in html
    assert [f.kind for f in files] == ["page"]


def test_values_from_the_build_are_escaped(tmp_path: Path) -> None:
    """Names, notes, paths and the config come from the build: the page shows them as text, never as markup."""
    nasty = "<script>alert(1)</script> & more"
    out = tmp_path / "a & <b>"
    data = ReportData(out_dir=out, stages=[StageView(s, "complete", nasty, out / s) for s in
                                           ("single_instance", "label", "consistency")],
                      funnel={}, per_category=pd.DataFrame({"wnid": ["n1"], "name": [nasty], "keep": [True],
                                                            "reason": [""]}),
                      galleries=[CategoryGallery('n1" onclick="x', nasty, 0, [])], no_pairs=[("n2", nasty)],
                      config_text=f"name: {nasty}\n", problems=[nasty])
    write_report(data, tmp_path / "r")
    html = (tmp_path / "r" / "index.html").read_text()
    assert "<script" not in html and 'onclick="' not in html and "a & <b>" not in html
    # 3 stage descriptions, the per-category table, the gallery, the list without pairs, the config, the problems
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more") == 8
    assert "<title>SC-ImageNet build report: a &amp; &lt;b&gt;</title>" in html
    assert "<pre>name: &lt;script&gt;" in html


def test_pair_drawing_puts_points_where_they_are() -> None:
    src = np.zeros((100, 100, 3), np.uint8)
    trg = np.zeros((100, 60, 3), np.uint8)
    img = np.asarray(draw_pair(src, trg, np.array([[10.0, 20.0]]), np.array([[30.0, 80.0]]), np.array([0.0]),
                               threshold=0.1, height=50))
    assert img.shape == (50, 50 + 8 + 30, 3)
    blue = np.array(offset_colour(0.0, 0.1))
    # pixel centres at integers: x → (x + 0.5) · 0.5 − 0.5
    assert np.abs(img[10, 5].astype(int) - blue).max() < 40
    assert np.abs(img[40, 58 + 15].astype(int) - blue).max() < 40
    assert offset_colour(float("nan"), 0.1) == (150, 150, 150)
    assert offset_colour(0.5, 0.1) == offset_colour(0.2, 0.1) != offset_colour(0.0, 0.1)


def test_unreadable_manifest_is_reported_not_fatal(report_build: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "broken"
    shutil.copytree(report_build["out"], out, ignore=shutil.ignore_patterns("report"))
    (out / "manifests" / "export" / "part-00000.parquet").write_bytes(b"not parquet")
    assert main(["report", "--out", str(out)]) == 0
    html = (out / "artifacts" / "report" / "index.html").read_text()
    assert "Parts of the build could not be read" in html and "the export manifest could not be read" in html
    funnel = dict(re.findall(r'data-funnel="([a-z_]+)" data-value="(\d*)"', html))
    assert funnel["pairs_exported"] == "" and funnel["pairs_selected"] != ""
    assert "could not be read" in capsys.readouterr().out


# `_stage.json` `extra` of every stage whose figures another module reads, and the model that declares them
FIGURES: dict[str, type[StageFigures]] = {
    "detect": DetectFigures, "single_instance": SingleInstanceFigures, "train": TrainFigures,
    "consistency": ConsistencyFigures, "select": SelectFigures, "export": ExportFigures, "report": ReportFigures}


@pytest.mark.parametrize("stage", sorted(FIGURES))
def test_each_record_fits_its_stage_figures(report_build: dict, stage: str) -> None:
    """A record written by a real build validates against its stage's model, and reads back with the same keys
    (aliases such as `pck@0.1` included): the model and the JSON name the figures alike."""
    record = read_stage_record(report_build["out"] / "manifests" / stage)
    figures = FIGURES[stage].of(record)
    assert figures is not None and FIGURES[stage].check(record.extra) is record.extra
    assert set(figures.dump()) == set(record.extra)
    declared = {f.alias or name for name, f in FIGURES[stage].model_fields.items() if f.is_required()}
    assert declared <= set(record.extra), declared - set(record.extra)


def test_readers_find_every_figure_they_use(report_build: dict) -> None:
    """The figures other modules read, read as they read them, from the real build's records."""
    out, cfg = report_build["out"], report_build["cfg"]
    manifests = out / "manifests"
    train = TrainFigures.read(manifests / "train")
    assert train.checkpoint_path(out) == out / "artifacts" / "train" / "generator.pt"  # `label` loads it
    assert train.pck() == {} and train.steps > 0  # `eval_pairs: 0` here; tests/test_e2e.py reads measured PCK
    assert DetectFigures.read(manifests / "detect").class_names  # `single_instance` checks its classes
    assert SingleInstanceFigures.read(manifests / "single_instance").threshold == cfg.single_instance.threshold
    assert ConsistencyFigures.read(manifests / "consistency").threshold == cfg.consistency.threshold
    select = SelectFigures.read(manifests / "select")
    assert select.quality and select.images_selected <= select.images and select.rank_by == cfg.select.rank_by
    assert ExportFigures.read(manifests / "export").release_path(out).is_dir()
    report = ReportFigures.read(manifests / "report")
    assert report.page_path(out).is_file() and report.bytes > 0
    lines = quality_lines(out)
    for start in ("select: ", "export: SC-ImageNet release at", "report: "):
        assert any(line.startswith(start) for line in lines), (start, lines)
    data = gather_report(out, cfg, report_build["data"], log=lambda m: None)
    assert data.train_scores.pck == train.pck() and data.release == out / ExportFigures.read(
        manifests / "export").release and not data.problems
    assert train_caption(data.train_scores) == f"{train.steps} steps."


def test_figures_missing_or_mistyped_fail_where_written() -> None:
    """A stage that stops writing a declared figure, or writes it under another name, fails in `check`
    (when it runs), not in whichever later stage or page reads it."""
    good = {"kept": 3, "kept_fraction": 0.5, "threshold": 0.6}
    assert SingleInstanceFigures.check(good) is good
    with pytest.raises(ValidationError, match="threshold"):
        SingleInstanceFigures.check({"kept": 3, "kept_fraction": 0.5, "min_conf": 0.6})
    with pytest.raises(ValidationError, match="kept"):
        SingleInstanceFigures.check({**good, "kept": "three"})
    assert SingleInstanceFigures.of(None) is None
    figures = SingleInstanceFigures.of(StageRecord("single_instance", "f", 1, 0, {}, 0, 0.0, 0.0, 0.0,
                                                   extra={**good, "shards_skipped": 2, "other": [1]}))
    assert figures.shards_skipped == 2 and figures.dump() == {**good, "shards_skipped": 2, "other": [1]}


def test_unreadable_figures_are_a_problem_on_the_page(report_build: dict, tmp_path: Path) -> None:
    """A record whose figures do not fit the model (another version's) is named on the page, not fatal."""
    out = tmp_path / "out"
    shutil.copytree(report_build["out"], out, symlinks=True)
    path = out / "manifests" / "consistency" / STAGE_RECORD
    doc = json.loads(path.read_text())
    doc["extra"]["threshold"] = "strict"
    path.write_text(json.dumps(doc))
    data = gather_report(out, report_build["cfg"], report_build["data"], log=lambda m: None)
    assert data.threshold == report_build["cfg"].consistency.threshold
    assert any("consistency record's figures" in p for p in data.problems), data.problems


def test_status_lines_skip_figures_an_older_version_wrote(report_build: dict, tmp_path: Path) -> None:
    """`status` and the build summary only show figures: a record lacking a declared one is left out, not fatal."""
    out = tmp_path / "out"
    shutil.copytree(report_build["out"], out, symlinks=True)
    path = out / "manifests" / "select" / STAGE_RECORD
    doc = json.loads(path.read_text())
    del doc["extra"]["pairs_unordered"]
    path.write_text(json.dumps(doc))
    lines = quality_lines(out)
    assert not any(line.startswith("select:") for line in lines)
    assert any(line.startswith("export:") for line in lines)
