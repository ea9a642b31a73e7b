"""The one atomic-write helper (`sc_imagenet.io.atomic`) and the writers built on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from sc_imagenet.config import BuildConfig, write_resolved_config
from sc_imagenet.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text, temp_path
from sc_imagenet.io.checkpoints import load_checkpoint, save_checkpoint
from sc_imagenet.io.manifest import atomic_write_bytes as manifest_atomic_write_bytes
from sc_imagenet.synth.meta import write_json_atomic


def test_write_bytes_and_text(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.bin"  # the folder is created
    atomic_write_bytes(path, b"\x00\x01abc")
    assert path.read_bytes() == b"\x00\x01abc"
    atomic_write_text(path, "héllo\n")  # replaces the old content
    assert path.read_bytes() == "héllo\n".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]  # no temp file left


def test_temp_name_is_dot_prefixed_with_pid_in_the_same_folder(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    assert temp_path(path) == tmp_path / f".part-00000.parquet.{os.getpid()}.tmp"
    with atomic_path(path) as tmp:
        assert tmp == temp_path(path) and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"new")
        assert not path.exists()  # nothing visible until the block exits cleanly
    assert path.read_bytes() == b"new" and not tmp.exists()


def test_exception_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(path) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_exception_before_the_temp_exists(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    with pytest.raises(KeyError), atomic_path(path):
        raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_manifest_reexport_is_the_same_helper() -> None:
    assert manifest_atomic_write_bytes is atomic_write_bytes


def test_writers_leave_no_temp(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "ckpt", 7, {"w": torch.arange(3), "step": 7})
    assert ckpt.name == "step-00000007.pt" and load_checkpoint(ckpt)["step"] == 7
    cfg_path = write_resolved_config(BuildConfig(), tmp_path, "demo")
    assert yaml.safe_load(cfg_path.read_text())["profile"] == "demo"
    write_json_atomic(tmp_path / "meta.json", {"complete": True})
    assert json.loads((tmp_path / "meta.json").read_text()) == {"complete": True}
    assert not list(tmp_path.rglob("*.tmp"))


def test_checkpoint_save_error_leaves_no_temp(tmp_path: Path) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for an unpicklable payload
        save_checkpoint(tmp_path, 1, {"f": lambda: 0})
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoints_are_reported_not_silently_skipped(tmp_path: Path) -> None:
    from sc_imagenet.io.checkpoints import CheckpointError, latest_checkpoint

    good = save_checkpoint(tmp_path, 1, {"step": 1})
    bad = save_checkpoint(tmp_path, 2, {"step": 2})
    bad.write_bytes(bad.read_bytes()[:40])  # truncated, as after a crash mid-copy
    with pytest.raises(CheckpointError, match=r"step-00000002\.pt cannot be read"):
        load_checkpoint(bad)
    skipped: list[tuple[Path, str]] = []
    assert latest_checkpoint(tmp_path, on_skip=lambda p, why: skipped.append((p, why))) == good
    assert [p for p, _ in skipped] == [bad] and "cannot be read" in skipped[0][1]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
