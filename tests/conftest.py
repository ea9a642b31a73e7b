"""Shared fixtures: small image folders with every kind of bad file, built in code."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def jpeg_bytes(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`×`height` (a decompression bomb as far as the header goes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


# file name → expected (status, format, mode)
BAD_FILES: dict[str, tuple[str, str | None, str | None]] = {
    "good.JPEG": ("ok", "JPEG", "RGB"),
    "gray.JPEG": ("ok", "JPEG", "L"),
    "cmyk.JPEG": ("ok", "JPEG", "CMYK"),
    "png_named.JPEG": ("ok", "PNG", "RGB"),
    "truncated.JPEG": ("truncated", "JPEG", "RGB"),
    "empty.JPEG": ("empty", None, None),
    "text.JPEG": ("not_an_image", None, None),
    "bomb.png": ("too_large", None, None),
    "broken_link.JPEG": ("broken_symlink", None, None),
    "loop.JPEG": ("unreadable", None, None),
    "corrupt.png": ("decode_error", "PNG", "RGB"),
}


def write_bad_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.JPEG").write_bytes(jpeg_bytes())
    (folder / "gray.JPEG").write_bytes(jpeg_bytes(mode="L"))
    (folder / "cmyk.JPEG").write_bytes(jpeg_bytes(mode="CMYK"))
    (folder / "png_named.JPEG").write_bytes(png_bytes())
    full = jpeg_bytes(256, 256, seed=3)
    (folder / "truncated.JPEG").write_bytes(full[: len(full) // 2])
    (folder / "empty.JPEG").write_bytes(b"")
    (folder / "text.JPEG").write_text("this is not an image\n")
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    os.symlink(folder / "does-not-exist.JPEG", folder / "broken_link.JPEG")
    os.symlink(folder / "loop.JPEG", folder / "loop.JPEG")
    # a valid PNG header with scrambled compressed pixel data (libjpeg conceals such damage in a
    # JPEG; zlib does not, so a PNG is the reliable decode_error case)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    body = bytearray(buf.getvalue())
    start = body.find(b"IDAT") + 10
    for k in range(start, start + 190):
        body[k] ^= 0x5A
    (folder / "corrupt.png").write_bytes(bytes(body))


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "n00000001"
    write_bad_files(folder)
    return folder


def make_image_tree(root: Path, categories: dict[str, int], seed: int = 0) -> Path:
    """`<root>/<wnid>/<wnid>_<i>.JPEG` with small random JPEGs."""
    for c, (wnid, n) in enumerate(categories.items()):
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg_bytes(40 + i % 7, 30 + i % 5, seed=seed + 1000 * c + i))
    return root


def write_list(path: Path, rows: list[tuple[str, str, int, str, str]]) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["wnid", "lemma", "keep", "reason", "note"])
        w.writerows(rows)
    return path


def kill_after_first_shard(cmd: list[str], stage_dir: Path, env: dict[str, str] | None = None,
                           timeout: float = 300) -> dict[Path, int]:
    """Start a build, SIGKILL its process group as soon as `stage_dir` holds a finished shard, and
    return the finished shards with their mtimes (the build must still be running by then)."""
    import signal
    import subprocess
    import time

    from sc_imagenet.io.manifest import list_shards

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not list_shards(stage_dir):
        assert proc.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return {p: p.stat().st_mtime_ns for p in list_shards(stage_dir)}
