"""The CLI's error paths and the status command (no Prefect server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_image_tree, write_list

from sc_imagenet.cli import main
from sc_imagenet.io.locks import BuildLock
from sc_imagenet.stages import pipeline_order


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    root = make_image_tree(tmp_path / "data", {"n1": 3, "n2": 2})
    lst = write_list(tmp_path / "l.csv", [("n1", "a", 1, "", ""), ("n2", "b", 0, "other", "x")])
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "folder", "root": str(root)},
                                    "categories": {"list": str(lst)}, "index": {"workers": 1}}))
    return path


def test_bad_config_fails_before_work(profile: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["build", "--config", str(profile), "--out", str(out), "--set", "index.max_pixels=-5"])
    assert code == 2
    assert "index.max_pixels" in capsys.readouterr().err and not out.exists()


def test_build_status_json_and_lock(profile: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["build", "--config", str(profile), "--out", str(out), "--no-prefect", "--stages",
                 "categories,index"]) == 0
    capsys.readouterr()
    assert main(["status", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["stage"], r["state"], r["rows"]) for r in rows] == [
        ("categories", "complete", 2), ("index", "complete", 3),
        *[(name, "missing", None) for name in pipeline_order()[2:]]]
    assert all({"stage", "state", "rows", "path"} <= set(r) for r in rows)
    with BuildLock(out):
        assert main(["build", "--config", str(profile), "--out", str(out), "--no-prefect", "--stages", "index"]) == 3
    assert "in use by another build" in capsys.readouterr().err


def test_status_of_unknown_folder(tmp_path: Path, capsys) -> None:
    assert main(["status", "--out", str(tmp_path / "nothing")]) == 2
