"""The kill campaign (benchmarks/kill_campaign.py) with a few trials: builds killed by SIGKILL in
different stages, rerun, end with manifests equal to an uninterrupted build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sc_imagenet.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def test_killed_builds_resume_to_the_uninterrupted_content(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        from kill_campaign import run_campaign
    finally:
        sys.path.pop(0)
    # trial i targets stage i (mod the number of stages) in pipeline order
    summary = run_campaign(trials=7, seed=1, workdir=tmp_path, log=lambda m: None)
    failed = [{k: r[k] for k in ("target", "killed_in", "differs", "leftovers", "rerun_err")}
              for r in summary["results"] if not r["ok"]]
    assert not failed, failed
    assert sum(summary["per_stage"].values()) == 7
