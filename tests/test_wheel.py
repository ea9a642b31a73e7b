"""`pip install .` (a wheel, not editable) runs the demo from another folder: the profiles, the category lists
and the demo detector travel in the wheel (`<prefix>/share/sc-imagenet/`) and are found there.

The fresh virtualenv gets this project's wheel only; the third-party dependencies (torch, ultralytics,
prefect, ...) come from the test environment's site-packages through a `.pth` line, so nothing is
downloaded and no copy of torch is installed. A path listed in a `.pth` file is not itself a site folder,
so the test environment's editable install of this project is not seen there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_build import TINY_TRAIN

from sc_imagenet.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _flat(prefix: str, values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flat(f"{prefix}.{key}", value)
        else:
            out += ["--set", f"{prefix}.{key}={value}"]
    return out


def test_wheel_runs_the_demo_from_another_folder(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    # built from a copy of the tracked files: setuptools writes build/ and *.egg-info beside the sources
    source = tmp_path / "source"
    files = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("sc_imagenet-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SC_IMAGENET_", "PREFECT_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    where = subprocess.run([python, "-c", "import sc_imagenet.paths as p; print(p.__file__); print(p.RESOURCES)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]) == (venv / "share" / "sc-imagenet").resolve()

    out = tmp_path / "build"
    tiny = _flat("train", {**TINY_TRAIN, "eval_pairs": 6}) + _flat("consistency", {"loops": 20}) + \
        _flat("select", {"keypoints": 4, "point_threshold": 0.5})
    run = subprocess.run([venv / "bin" / "sc-imagenet", "demo", "--out", str(out), *tiny], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    status = subprocess.run([venv / "bin" / "sc-imagenet", "status", "--out", str(out), "--json"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, check=True).stdout
    assert {s["state"] for s in json.loads(status)} == {"complete"}
    assert (out / "export" / "SC-ImageNet" / "Layout" / "large" / "trn.txt").is_file()
    assert not (elsewhere / "builds").exists()  # --out was honoured; nothing written where it ran
