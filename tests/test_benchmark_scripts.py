"""Every script in benchmarks/ that no other test runs, at a tiny size and as its user runs it (a subprocess): it
exits 0 and prints, or writes, the figures its docstring promises. A benchmark nobody runs drifts away from the
code it measures; these catch that. Covered elsewhere: scale.py (test_scale_benchmark.py), kill_campaign.py
(test_kill_campaign.py), integrity.py (test_integrity.py).

The scripts that read a finished build (consistency.py, select_sweep.py, generator_sweep.py) share one tiny
synthetic build through `consistency`; downstream.py makes its own tiny build through `export`. A results file a
script writes by default goes to tmp_path, never over the committed one in benchmarks/results/."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dataset_stages import DATASET, build_with_dataset_settings
from test_label import build_profile

from sc_imagenet.paths import REPO_ROOT
from sc_imagenet.stages.label import LabelFigures

NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?|nan)"  # a printed figure: 12, 1,234, 0.125, nan


def run_script(name: str, *args: str | Path, timeout: int = 600) -> str:
    """Run benchmarks/<name>.py with `args`; its stdout (the return code must be 0)."""
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / f"{name}.py"), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"{name}.py exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def num(text: str) -> float:
    return float(text.replace(",", ""))


def figures(pattern: str, text: str) -> list[float]:
    """The numbers `pattern`'s groups capture on the one line of `text` it matches (`NUM` marks a figure)."""
    hits = [m for line in text.splitlines() if (m := re.search(pattern, line))]
    assert len(hits) == 1, f"{len(hits)} lines match {pattern!r} in:\n{text}"
    return [num(g) for g in hits[0].groups()]


def figures_of(check_line: str) -> list[float]:
    """A cross-check line's figures: consistent fraction, mean offset (stage, naive each), entries (stage, naive)."""
    m = re.search(rf"image_consistent stage {NUM} naive {NUM}, mean offset stage {NUM} naive {NUM}, \(candidate, "
                  rf"loop\) entries {NUM} / {NUM}$", check_line)
    assert m, check_line
    return [num(g) for g in m.groups()]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under `folder`: a script that only reads a build leaves this unchanged."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-category synthetic build through `consistency` (train, single_instance and label included; seconds)."""
    stages = ["categories", "index", "detect", "single_instance", "train", "label", "consistency"]
    return build_with_dataset_settings(tmp_path_factory.mktemp("benchmark-build"), stages)[1]


# ------------------------------------------------------------------ scripts that make their own inputs


def test_detect_prints_both_paths_their_ratio_and_memory() -> None:
    text = run_script("detect", "--images", "8", "--batch", "2", "--workers", "1")
    n, imgsz = figures(rf"^{NUM} synthetic images \(.* px mean\), imgsz {NUM}, device cpu, fp16 False", text)
    assert (n, imgsz) == (8, 320)
    single, one = figures(rf"^one image at a time \(model.predict per path\)\s+{NUM} img/s\s+{NUM}x$", text)
    assert single > 0 and one == 1.0
    rate, ratio, *rss = figures(rf"^stage path, batch 2, 1 decode threads\s+{NUM} img/s\s+{NUM}x\s+RSS MiB at "
                                rf"1/4..4/4 of images: {NUM} {NUM} {NUM} {NUM}$", text)
    assert rate > 0 and ratio == pytest.approx(rate / single, abs=0.01 + 0.01 * ratio)
    assert all(m > 0 for m in rss)  # one memory sample per quarter of the images
    peak, base = figures(rf"^peak RSS {NUM} MiB \(baseline before models {NUM} MiB\)$", text)
    assert peak >= base > 0


def test_generator_prints_costs_per_image_and_pair_at_each_size() -> None:
    text = run_script("generator", "--sizes", "64", "96", "--repeat", "1")
    params = set()
    for size in (64, 96):
        grid_h, grid_w, *costs, n_params = figures(
            rf"^dense-sift @ {size}px \(grid {NUM}x{NUM}\), cpu: features {NUM} s/image, volume\+PMPS {NUM} "
            rf"s/pair, dense flow incl. both images' features {NUM} s/pair, {NUM} trainable parameters", text)
        assert grid_h == grid_w == size // 8  # dense-sift: one cell per 8 px
        assert all(c > 0 for c in costs)
        params.add(n_params)
    assert len(params) == 1 and params.pop() > 0  # the pair head does not depend on the input size
    (peak,) = figures(rf"^peak RSS {NUM} MiB$", text)
    assert peak > 0


def test_train_step_prints_and_appends_seconds_per_step(tmp_path: Path) -> None:
    out = tmp_path / "train-step.txt"
    text = run_script("train_step", "--backbone", "dense-sift", "--input-size", "64", "--region-input-size", "32",
                      "--images", "4", "--warmup", "1", "--steps", "2", "--device", "cpu", "--out", out)
    pattern = (rf"^dense-sift 64px \(region 32px\), batch 4, cpu: {NUM} s/step median over {NUM} steps \(first "
               rf"steps encode each image once: {NUM} s for step 1\), {NUM} pairs/s, {NUM} pseudo-labels/pair at "
               r"the pixel level, peak GPU memory nan MiB$")
    per_step, steps, first, pairs_s, labels = figures(pattern, text)
    assert steps == 2 and per_step > 0 and first > 0
    assert pairs_s == pytest.approx(4 / per_step, rel=0.02, abs=0.1)  # batch 4 per step
    assert labels > 0  # pseudo-labels reach the pixel level
    assert out.read_text().splitlines() == [line for line in text.splitlines() if re.search(pattern, line)]


def test_index_prints_files_per_second_against_the_naive_loop() -> None:
    text = run_script("index", "--categories", "2", "--files", "20", "--workers", "1")
    assert figures(rf"^{NUM} categories, {NUM} files, {NUM} CPU cores$", text)[:2] == [2, 40]
    (naive, one) = figures(rf"^naive loop, full decode, 1 thread\s+{NUM} files/s\s+ratio vs naive\s+{NUM}x$", text)
    assert naive > 0 and one == 1.0
    for verify in ("draft", "full"):
        rate, ratio = figures(rf"^index stage, verify={verify}, workers=1\s+{NUM} files/s\s+ratio vs naive\s+{NUM}x$",
                              text)
        assert rate > 0 and ratio == pytest.approx(rate / naive, abs=0.01 + 0.01 * ratio)
    parent, worker = figures(rf"^peak RSS: parent {NUM} MiB, largest worker {NUM} MiB$", text)
    assert parent > 0 and worker >= 0


# ------------------------------------------------------------------ scripts that read a finished build


@pytest.mark.slow
def test_consistency_reports_stage_against_naive_and_the_projection(tiny_build: Path, tmp_path: Path) -> None:
    before = snapshot(tiny_build)
    out = tmp_path / "consistency.txt"
    text = run_script("consistency", "--build", tiny_build, "--images", "4", "--loops", "3", "--naive-images", "2",
                      "--repeat", "1", "--out", out)
    assert out.read_text() == text  # the report, printed and written
    assert snapshot(tiny_build) == before  # the benchmark reads the build, never writes into it
    (edges,) = figures(r"one clique of its first 4 kept images \(by id\), " + NUM + " edges", text)
    assert edges == 4 * 3
    (forwards,) = figures(r"^stage \(label \+ consistency of all 4 images, 2 runs.*: " + NUM + " pair forwards", text)
    assert forwards == edges  # every edge through the pair head once

    rows = {}
    header = text.splitlines().index(f"{'per image':<46}{'stage':>12}{'naive':>12}{'ratio':>10}")
    for line in text.splitlines()[header + 1:header + 8]:
        name, stage, naive, ratio = re.fullmatch(rf"(.+?)\s+{NUM}\s+{NUM}\s+{NUM}x", line).groups()
        rows[name] = num(stage), num(naive), num(ratio)
    # 3 loops per image: each loop 3 flows (+ 1 match) from scratch, each flow encoding both its images
    assert rows["pair forwards (naive: 3 flows / loop)"][:2] == (3.0, 9.0)
    assert rows["pair forwards (naive: 3 flows + match / loop)"][:2] == (3.0, 12.0)
    assert rows["images encoded (naive: 3 flows / loop)"][:2] == (1.0, 18.0)
    assert len(rows) == 7
    for name, (stage, naive, ratio) in rows.items():
        assert stage > 0 and naive > 0, name
        assert ratio == pytest.approx(naive / stage, rel=0.05, abs=0.1), name

    checks = [figures_of(line) for line in text.splitlines() if line.startswith("    ") and "image_consistent" in line]
    assert len(checks) == 2  # --naive-images: the stage and the naive path agree on the same images and loops
    for stage_c, naive_c, stage_off, naive_off, stage_n, naive_n in checks:
        assert stage_n == naive_n > 0
        assert stage_c == pytest.approx(naive_c, abs=0.05) and stage_off == pytest.approx(naive_off, abs=0.02)

    assert figures(rf"^targets at 3 loops, .*fewer pair forwards: {NUM}x .*wall time: {NUM}x", text)[0] == 3.0
    (head32,) = figures(rf"label_pairs {NUM} s per edge \(", text)
    assert head32 > 0
    hours = [num(h) for h in re.findall(rf"^    1 device  \(linear\): {NUM} h", text, re.MULTILINE)]
    assert len(hours) == 2 and all(h > 0 for h in hours)  # from the demo model's figures and from the 32x32 head
    assert re.search(rf"^the naive loop check .*= {NUM} h", text, re.MULTILINE)


def test_select_sweep_prints_quality_per_setting_and_writes_nothing(tiny_build: Path) -> None:
    before = snapshot(tiny_build)
    text = run_script("select_sweep", "--build", tiny_build, "--thresholds", "0.1", "0.3", "--keypoints", "2",
                      "--point-order", "score", "consistency")
    assert snapshot(tiny_build) == before
    (edges, _) = figures(rf"^{NUM} edges, {NUM} candidates per edge on average$", text)
    assert edges == LabelFigures.read(tiny_build / "manifests" / "label").edges

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank_by", "order"])
    columns = lines[start].split()
    assert columns == ["rank_by", "order", "keypoints", "threshold", "pairs", "exported_pck@0.1", "ci95", "on_object",
                       "same_pairs_topk_pck@0.1", "raw_topk_pck@0.1", "spearman"]
    table = [dict(zip(columns, re.findall(r"\[[^\]]*\]|\S+", line), strict=True)) for line in lines[start + 1:]]
    assert sorted((r["order"], float(r["threshold"])) for r in table) == [
        ("consistency", 0.1), ("consistency", 0.3), ("score", 0.1), ("score", 0.3)]
    for r in table:
        assert r["rank_by"] == "loop3" and r["keypoints"] == "2" and int(r["pairs"]) >= 0
        for key in ("exported_pck@0.1", "on_object", "same_pairs_topk_pck@0.1", "raw_topk_pck@0.1"):
            value = float(r[key])
            assert math.isnan(value) or 0 <= value <= 1, (key, r)
        assert math.isnan(float(r["spearman"])) or -1 <= float(r["spearman"]) <= 1


@pytest.mark.slow
def test_generator_sweep_writes_baselines_and_variants_and_resumes(tiny_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    args = ["--build", tiny_build, "--variants", "default", "fixed-logit-scale", "oracle-labels", "--baselines", "nn",
            "--eval-pairs", "4", "--set", "max_steps=2", "--val-every", "2", "--val-pairs", "2", "--json", out,
            "--keep", tmp_path / "kept"]
    text = run_script("generator_sweep", *args)
    doc = json.loads(out.read_text())
    assert doc["build"] == str(tiny_build) and doc["eval_pairs"] == 4
    assert [line.split(" ", 1)[0] for line in text.splitlines()] == ["nn", "default", "fixed-logit-scale",
                                                                       "oracle-labels"]
    # the learning curve: log rows with β and the labels' accuracy per level; PCK on held-out pairs at step 2
    curve = doc["default"]["curve"]
    assert curve[-1]["step"] == 2 and 0 <= curve[-1]["val_pck01"] <= 1 and "beta_region" in curve[-1]
    assert 0 <= curve[-1]["labels_pixel_pck01"] <= 1 and 0 <= doc["default"]["labels_region_pck@0.1_epoch0"] <= 1
    assert doc["oracle-labels"]["labels_pck@0.1_epoch0"] == 1.0  # the pixel level learnt from the truth
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["default.pt", "fixed-logit-scale.pt",
                                                                     "oracle-labels.pt"]
    for key in ("baseline:nn", "default", "fixed-logit-scale"):
        row = doc[key]
        assert 0 <= row["pck@0.05"] <= row["pck@0.1"] <= 1, key
        assert len(row["counts"]) == len(row["hits@0.1"]) == 4, key  # per evaluation pair, for `paired_vs`
    assert doc["default"]["overrides"] == {"max_steps": 2}
    assert doc["fixed-logit-scale"]["overrides"] == {"max_steps": 2, "learn_logit_scale": False}
    for key in ("default", "fixed-logit-scale"):
        row = doc[key]
        assert row["train_s"] >= 0 and 0 <= row["labels_pck@0.1_epoch0"] <= 1 and row["labels_per_pair_epoch0"] > 0
        assert set(row["beta"]) == {"image", "region", "pixel"} and row["logit_scale"] > 0
    diff, lo, hi = doc["fixed-logit-scale"]["diff_vs_default@0.1"]  # paired against `default` on the same pairs
    assert lo <= diff <= hi
    assert "diff_vs_default@0.1" not in doc["default"]

    # a rerun skips what --json already holds: nothing trained or scored again
    assert run_script("generator_sweep", *args) == ""
    assert json.loads(out.read_text()) == doc


# ------------------------------------------------------------------ the downstream study (makes its own build)

STUDY_ARMS = ("readout", "generator", "pretrained", "finetuned", "pretrained_finetuned", "loop3", "loop2", "score",
              "random", "none", "oracle")
STUDY_DIFFERENCES = ("pretrained-readout", "pretrained_finetuned-finetuned", "loop3-random", "loop3-none")
STUDY_VARIANTS = ("loop3", "loop2", "score", "random", "none", "oracle")


def study_profile(tmp: Path) -> Path:
    """The tiny build's profile (test_dataset_stages' settings) with `pairs` passing `select`'s pairs through, as
    the bench profile does, so the release's trn split is `select`'s. Nothing is built: downstream.py builds it."""
    profile = build_profile(tmp)
    doc = yaml.safe_load(profile.read_text())
    for section, values in {**DATASET, "pairs": {"group_size": 0}}.items():
        doc[section] = {**doc.get(section, {}), **values}
    profile.write_text(yaml.safe_dump(doc))
    return profile


def check_interval(value: float, ci: list[float], what: str) -> None:
    assert 0 <= ci[0] <= value <= ci[1] <= 1, (what, value, ci)


@pytest.mark.slow
def test_downstream_writes_every_arm_difference_and_the_oracle_share_and_reruns_from_its_files(
        tmp_path: Path) -> None:
    """The whole study at a tiny size (a 3-category build, a 64 px matcher, 2 steps per run): every key of the
    issue's JSON, numbers in range, variants cut to one size, and a rerun that trains and scores nothing again."""
    out = tmp_path / "study.json"
    args = ["--profile", study_profile(tmp_path), "--build", tmp_path / "out", "--json", out, "--image-size", "64",
            "--grid", "4", "--steps", "2", "--val-points", "2", "--epochs", "1", "--finetune-lrs", "3e-4",
            "--finetune-pairs", "4", "--val-pairs", "4", "--test-pairs", "6", "--agreement-pairs", "4",
            "--batch-size", "2", "--device", "cpu"]
    text = run_script("downstream", *args)
    doc = json.loads(out.read_text())
    assert doc["complete"] and doc["build"]["reused"] is False
    assert doc["data"]["test"]["pairs"] == 6 and doc["data"]["trn"]["pairs"] == 4
    for name in STUDY_ARMS:
        arm = doc["arms"][name]
        for key in ("pck@0.05", "pck@0.1", "pck_per_pair@0.05", "pck_per_pair@0.1"):
            check_interval(arm[key], arm[f"{key}_ci95"], f"{name} {key}")
        assert arm["pck@0.05"] <= arm["pck@0.1"] and arm["pairs_scored"] == 6, name
        assert re.search(rf"^{name}\s+{NUM} \[", text, re.MULTILINE), name  # a row of the printed table
    for name in STUDY_DIFFERENCES:
        diff, lo, hi = doc["differences"][name]
        assert -1 <= lo <= diff <= hi <= 1, name
    share = doc["oracle_share"]
    assert share is None or math.isfinite(share)
    for name in ("pretrained", "finetuned", "pretrained_finetuned", *STUDY_VARIANTS):
        chosen = doc["chosen"][name]  # chosen on val among the snapshots at steps 1 and 2
        assert chosen["steps"] in (1, 2) and chosen["lr"] == 3e-4 and len(chosen["curve"]) == 2, name

    variants = doc["variants"]
    # with `pairs` passing select's pairs through, the default selection re-run is the release's trn split
    assert variants["loop3"]["reproduces_release_trn"] is True
    assert variants["loop3"]["pairs_before_cut"] == doc["release"]["pairs"]
    n = min(variants[v]["pairs_before_cut"] for v in STUDY_VARIANTS[:-1])
    for name in STUDY_VARIANTS[:-1]:
        assert variants[name]["pairs"] == n and variants[name]["keypoints"] == 2 * n, name
    assert variants["oracle"]["pairs"] <= n and variants["oracle"]["keypoints"] <= 2 * n
    assert set(doc["agreement"]) == {"release", *STUDY_VARIANTS}
    for name, row in doc["agreement"].items():
        assert 0 <= row["matched@0.1"] <= 1 and 0 <= row["label_pck@0.1"] <= 1 and row["spread"] > 0, name
    assert doc["agreement"]["oracle"]["label_pck@0.1"] == 1.0  # true keypoints are right by construction
    for part in ("build", "target_data", "variants", "agreement", "train_total", "val_total", "test_total"):
        assert doc["wall_s"][part] >= 0, part
    assert set(doc["wall_s"]["test"]) == {"untrained", *STUDY_ARMS}

    again = run_script("downstream", *args)  # everything is in --work: nothing trained or scored again
    assert "complete, reused" in again and not re.search(r": step \d+/", again)
    rerun = json.loads(out.read_text())
    assert rerun["arms"] == doc["arms"] and rerun["differences"] == doc["differences"]
