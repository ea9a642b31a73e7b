"""benchmarks/scale.py at a tiny size: the whole rehearsal runs the product's stages through `execute_stage`
(stand-ins only for the networks) and writes the figures the issue's interface promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sc_imagenet.paths import REPO_ROOT
from sc_imagenet.stages import pipeline_order

pytestmark = pytest.mark.slow


def test_tiny_rehearsal_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "scale.py"), "--sizes", "60", "120",
                           "--categories", "4", "--train-steps", "4", "--work", str(tmp_path / "work"), "--keep",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["sizes"] == [60, 120]
    pipeline = pipeline_order()  # benchmarks/scale.py's PIPELINE must time every stage
    assert list(doc["stages"]) == [*pipeline, "fingerprints", "status", "resume"]
    for name, s in doc["stages"].items():
        assert len(s["seconds"]) == len(s["peak_rss_mb"]) == 2 and all(t >= 0 for t in s["seconds"]), name
        assert isinstance(s["exponent"], float), name
    last = {name: s["info"][-1] for name, s in doc["stages"].items()}
    assert last["resume"]["all_skipped"] is True  # a rerun of a finished build skips every stage
    assert set(last["status"]["states"].values()) == {"complete"}
    assert last["export"]["rows"] == last["pairs"]["pairs"] > 0  # the stand-ins make a real release
    assert last["label"]["edges"] > 0 and last["pairs"]["edges_labelled"] > 0
    sampler = doc["train_sampler"]
    assert len(sampler["ms_per_step"]) == 2 and all(v >= 0 for v in sampler["ms_per_step"])
    p = doc["projection"]
    assert p["hours_1gpu"] > p["hours_8gpu"] > 0 and "measured_on" in p
    assert set(p["per_stage"]) == set(pipeline)
    assert "train sampler ms/step" in proc.stdout and "projection" in proc.stdout

    # --rerun: stages timed again, alone, on the kept builds (how the 100 % figures were re-measured idle)
    again = tmp_path / "rerun.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "scale.py"), "--sizes", "60", "120",
                           "--work", str(tmp_path / "work"), "--rerun", "single_instance,export", "--json", str(again)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(again.read_text())
    assert doc["rerun"] == list(doc["stages"]) == ["single_instance", "export"]
    assert doc["stages"]["export"]["info"][-1]["rows"] == last["export"]["rows"]
    assert all(len(s["seconds"]) == 2 and isinstance(s["exponent"], float) for s in doc["stages"].values())


def test_real_networks_give_their_costs_per_unit(tmp_path: Path) -> None:
    # --network real: the product's training loop and generator (here the weight-free backbone, small, on CPU)
    out = tmp_path / "real.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "scale.py"), "--sizes", "24", "--categories",
                           "2", "--train-steps", "2", "--network", "real", "--backbone", "dense-sift", "--input-size",
                           "64", "--work", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["projection"] is None and doc["network"]["train"]["backbone"] == "dense-sift"
    costs = doc["network"]["costs"]
    assert costs["train"]["s_per_step"] > 0 and costs["label"]["s_per_edge"] > 0
    counts = doc["network"]["imagenet_counts"]
    assert costs["label"]["imagenet_hours_1_device"] == pytest.approx(costs["label"]["s_per_edge"] * counts["edges"]
                                                                      / 3600, abs=0.006)  # hours to 2 decimals
    assert doc["stages"]["train"]["info"][0]["steps"] == 2
    assert "network costs on" in proc.stdout
