"""Kill campaign: SIGKILL a build at random moments in every stage, rerun it, and check that the
manifests end up with exactly the content of an uninterrupted build (each stage's `content_hash`),
no row lost or duplicated, and no temp file left.

    .venv/bin/python benchmarks/kill_campaign.py [--trials 20] [--seed 0] [--workdir DIR]

A tiny synthetic build (3 categories, a 2-step generator, all eleven stages, ~10 s) is built once
without interruption as the reference; trial i targets stage i mod 11: it waits until that stage
has started, kills the whole process group after a random fraction of the stage's reference time,
then reruns the same command to completion. Exit status 1 if any trial differs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from sc_imagenet.io.manifest import list_shards, read_stage_record
from sc_imagenet.stages import pipeline_order

BIN = Path(sys.executable).parent
TINY = {
    "data": {"source": "synthetic",
             "synthetic": {"seed": 6, "images_per_category": 8, "n_object_categories": 3, "min_size": 96,
                           "max_size": 160, "include_non_object": False, "include_broken": True}},
    "categories": {"list": None}, "index": {"workers": 1},
    "detect": {"weights": "demo-yolo-seg", "imgsz": 320, "batch": 4}, "single_instance": {"threshold": 0.5},
    "train": {"backbone": "dense-sift", "input_size": 64, "region_input_size": 32, "region_pairs": 3,
              "pixel_pairs": 4, "window": 3, "batch_size": 2, "max_steps": 4, "checkpoint_every": 1,
              "eval_pairs": 0, "device": "cpu", "mvam": {"dim": 16, "heads": 2, "agg_channels": 4},
              "foreground": "box"},
    "label": {"group_size": 5, "candidates": 12, "nms_cells": 0, "batch_pairs": 2},
    "consistency": {"loops": 8, "threshold": 0.3},
    "select": {"fraction": 0.5, "keypoints": 2, "pairs_per_image": 2, "point_threshold": 0.5, "val_fraction": 0.3},
}


def build_cmd(profile: Path, out: Path) -> list[str]:
    return [str(BIN / "sc-imagenet"), "build", "--config", str(profile), "--out", str(out), "--no-prefect"]


def hashes(out: Path) -> dict[str, tuple[str | None, int]]:
    """stage → (content hash, rows) of a finished build."""
    result = {}
    for name in pipeline_order():
        record = read_stage_record(out / "manifests" / name)
        result[name] = (record.content_hash, record.rows) if record else (None, -1)
    return result


def running_stage(out: Path) -> str:
    """The first stage without a completion record: the one a kill interrupted."""
    for name in pipeline_order():
        if read_stage_record(out / "manifests" / name) is None:
            return name
    return "finished"


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp-" in p.name)]


def trial(profile: Path, out: Path, target: str, ref_wall: dict[str, float], rng: random.Random) -> dict[str, Any]:
    proc = subprocess.Popen(build_cmd(profile, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    stage_dir = out / "manifests" / target
    deadline = time.monotonic() + 600
    while not stage_dir.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(rng.uniform(0, max(ref_wall.get(target, 0.0), 0.05)))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_in = running_stage(out)
    shards_before = sum(len(list_shards(out / "manifests" / s)) for s in pipeline_order())
    rerun = subprocess.run(build_cmd(profile, out), capture_output=True, text=True, timeout=1200)
    return {"target": target, "killed_in": killed_in, "shards_before_rerun": shards_before,
            "rerun_rc": rerun.returncode, "rerun_err": rerun.stderr[-2000:] if rerun.returncode else "",
            "hashes": hashes(out) if rerun.returncode == 0 else {}, "leftovers": leftovers(out)}


def run_campaign(trials: int, seed: int, workdir: Path, log=print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    profile = workdir / "campaign.yaml"
    doc = dict(TINY)
    doc["data"] = {**TINY["data"], "root": str(workdir / "data")}
    profile.write_text(yaml.safe_dump(doc))
    # every build uses the same output folder (the report's page names it): the reference is built
    # there first and its hashes kept, then each trial starts from an empty folder at the same place
    out = workdir / "build"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    subprocess.run(build_cmd(profile, out), check=True, capture_output=True)
    reference = hashes(out)
    ref_wall = {n: read_stage_record(out / "manifests" / n).wall_s for n in pipeline_order()}
    log(f"reference build: {time.monotonic() - t0:.1f} s; stage times "
        + ", ".join(f"{n} {w:.2f}s" for n, w in ref_wall.items()))
    rng = random.Random(seed)
    stages = pipeline_order()
    results = []
    for i in range(trials):
        shutil.rmtree(out, ignore_errors=True)
        r = trial(profile, out, stages[i % len(stages)], ref_wall, rng)
        diff = [n for n in stages if r["hashes"].get(n) != reference[n]]
        r["ok"] = r["rerun_rc"] == 0 and not diff and not r["leftovers"]
        r["differs"] = diff
        results.append(r)
        log(f"trial {i:2d}: target {r['target']:<15} killed in {r['killed_in']:<15} "
            f"{'ok' if r['ok'] else 'FAILED ' + str(diff or r['leftovers'] or r['rerun_err'])}")
    per_stage = Counter(r["killed_in"] for r in results)
    failed = [r for r in results if not r["ok"]]
    log("trials per stage killed in: " + ", ".join(f"{n} {per_stage.get(n, 0)}" for n in [*stages, "finished"]))
    log(f"{len(results) - len(failed)} of {len(results)} trials ended with manifests equal to the reference "
        "(every stage's content hash and row count), no temp file left")
    return {"trials": len(results), "failed": len(failed), "per_stage": dict(per_stage), "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    summary = run_campaign(args.trials, args.seed, workdir)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
