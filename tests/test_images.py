"""probe_image on every bad-file kind, and the index scan writing them as rows."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import BAD_FILES, jpeg_bytes
from PIL import Image

from sc_imagenet.io.images import STATUSES, load_rgb, pil_pixel_limit_lifted, probe_image
from sc_imagenet.io.manifest import shard_fingerprint
from sc_imagenet.io.scan import list_files
from sc_imagenet.stages.index import ScanTask, scan_category


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("verify", ["draft", "full"])
def test_probe_classifies_every_kind(bad_folder: Path, name: str, verify: str) -> None:
    status, fmt, mode = BAD_FILES[name]
    probe = probe_image(bad_folder / name, verify=verify)
    assert (probe.status, probe.format, probe.mode) == (status, fmt, mode)
    assert probe.status in STATUSES
    assert (probe.error is None) == (status == "ok")


def test_header_mode_does_not_decode(bad_folder: Path) -> None:
    # header-only verification cannot see truncation: that is the documented trade-off
    assert probe_image(bad_folder / "truncated.JPEG", verify="header").status == "ok"


def test_max_pixels_guard_reports_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "big.JPEG"
    path.write_bytes(jpeg_bytes(200, 100))
    probe = probe_image(path, max_pixels=10_000)
    assert (probe.status, probe.width, probe.height) == ("too_large", 200, 100)
    assert "max_pixels" in probe.error


def test_fifo_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.JPEG"
    os.mkfifo(fifo)
    assert probe_image(fifo).status == "unreadable"  # would block forever if opened


def test_unknown_verify_mode(bad_folder: Path) -> None:
    with pytest.raises(ValueError, match="verify"):
        probe_image(bad_folder / "good.JPEG", verify="deep")


@pytest.mark.parametrize("name", ["cmyk.JPEG", "gray.JPEG", "png_named.JPEG"])
def test_load_rgb_converts(bad_folder: Path, name: str) -> None:
    arr = load_rgb(bad_folder / name)
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype.name == "uint8"
    with Image.open(bad_folder / name) as img:
        assert arr.shape[:2] == (img.height, img.width)


def test_scan_category_writes_every_file_as_a_row(bad_folder: Path, tmp_path: Path) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    shard = tmp_path / "out" / "wnid=n00000001" / "part-00000.parquet"
    task = ScanTask("n00000001", bad_folder, bad_folder.parent, shard, "fp123", 1, "draft", 89_478_485, 4)
    with pil_pixel_limit_lifted():
        result = scan_category(task)
    assert limit == Image.MAX_IMAGE_PIXELS
    rows = pq.read_table(shard).to_pylist()
    assert result.rows == len(BAD_FILES) == len(rows)
    got = {r["rel_path"].split("/")[-1]: (r["status"], r["format"], r["mode"]) for r in rows}
    # with PIL's own limit lifted in workers, our max_pixels check sees the bomb's header
    assert got == {**BAD_FILES, "bomb.png": ("too_large", "PNG", "RGB")}
    bomb = next(r for r in rows if r["rel_path"].endswith("bomb.png"))
    assert (bomb["width"], bomb["height"]) == (100_000, 100_000)
    assert result.by_status["ok"] == 4
    assert shard_fingerprint(shard) == "fp123"
    assert sorted(list_files(bad_folder)) == sorted(BAD_FILES)
