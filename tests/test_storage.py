"""A full or read-only output folder: a clear error naming the cause, finished shards kept, and the
build resumes once the folder can take data again. Uses a real tiny tmpfs (mounted by the test, as
root, like everything the test suite needs on this project's machines)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import make_image_tree, write_list

from sc_imagenet.cli import main
from sc_imagenet.io.manifest import list_shards, read_stage_record


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    assert res.returncode == 0, f"the test needs to mount a tiny tmpfs (root): {res.stderr.strip()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    root = make_image_tree(tmp_path / "data", {f"n{i}": 60 for i in range(6)})
    lst = write_list(tmp_path / "list.csv", [(f"n{i}", f"c{i}", 1, "", "") for i in range(6)])
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "folder", "root": str(root)},
                                    "categories": {"list": str(lst)}, "index": {"workers": 1}}))
    return path


def _fill(mnt: Path, leave: int) -> Path:
    """Occupy the file system but `leave` bytes (tmpfs counts whole pages)."""
    filler = mnt / "filler"
    free = subprocess.run(["df", "--output=avail", "-B1", str(mnt)], capture_output=True, text=True)
    avail = int(free.stdout.split()[-1])
    filler.write_bytes(b"\0" * max(0, avail - leave))
    return filler


def test_disk_full_is_a_clear_error_and_resumes(tiny_fs: Path, profile: Path, capsys) -> None:
    out = tiny_fs / "out"
    args = ["build", "--config", str(profile), "--out", str(out), "--no-prefect", "--stages", "categories,index"]
    assert main([*args[:-1], "categories"]) == 0
    cats = {p: p.stat().st_mtime_ns for p in list_shards(out / "manifests" / "categories")}
    filler = _fill(tiny_fs, 12 * 4096)
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "[index] cannot write under" in err and "the disk is full" in err and "rerun" in err
    assert {p: p.stat().st_mtime_ns for p in list_shards(out / "manifests" / "categories")} == cats
    assert read_stage_record(out / "manifests" / "index") is None
    assert not [p for p in out.rglob(".*.tmp")]  # no torn temp file left
    filler.unlink()
    assert main(args) == 0
    record = read_stage_record(out / "manifests" / "index")
    assert record is not None and record.rows == 6 * 60


def test_read_only_folder_is_a_clear_error(tiny_fs: Path, profile: Path, capsys) -> None:
    out = tiny_fs / "out"
    args = ["build", "--config", str(profile), "--out", str(out), "--no-prefect"]
    assert main([*args, "--stages", "categories"]) == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    try:
        code = main([*args, "--stages", "categories,index"])
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)
    err = capsys.readouterr().err
    assert code == 3 and "the file system is read-only" in err, err
    assert read_stage_record(out / "manifests" / "categories") is not None
