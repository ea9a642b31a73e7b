"""Probing image files without trusting them.

`probe_image` never raises for a bad file: every failure becomes a status with an error message.
CMYK, grayscale, palette and PNG-named-.JPEG files are readable and stay `ok` with their true
`format` and `mode`; later stages convert to RGB with `load_rgb`.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Every status the index can assign, with what it means (also documented in manifests/README.md).
STATUSES: dict[str, str] = {
    "ok": "readable image",
    "empty": "zero-byte file",
    "truncated": "the file ends before the image data does",
    "decode_error": "header parses but the pixel data is corrupt",
    "not_an_image": "no known image format",
    "too_large": "more pixels than index.max_pixels (decompression-bomb guard)",
    "unreadable": "cannot be opened (permissions, I/O error)",
    "broken_symlink": "symbolic link whose target does not exist",
}

VERIFY_MODES = ("header", "draft", "full")


_lift_lock = threading.Lock()
_lifts = 0  # scans running with the limit lifted (category threads of one process)
_saved_limit: int | None = None


@contextmanager
def pil_pixel_limit_lifted() -> Iterator[None]:
    """Our own `max_pixels` check replaces PIL's global bomb limit while a scan runs (so too-large
    images still report their dimensions); PIL's limit is restored afterwards."""
    global _lifts, _saved_limit
    with _lift_lock:  # re-entrant across threads: the limit comes back when the last scan ends
        if _lifts == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _lifts += 1
    try:
        yield
    finally:
        with _lift_lock:
            _lifts -= 1
            if _lifts == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


@dataclass(frozen=True)
class ImageProbe:
    bytes: int | None
    format: str | None
    width: int | None
    height: int | None
    mode: str | None
    status: str
    error: str | None = None


def _fail(status: str, error: str, size: int | None = None, **known) -> ImageProbe:
    base = {"format": None, "width": None, "height": None, "mode": None}
    base.update(known)
    return ImageProbe(bytes=size, status=status, error=error[:300], **base)


def probe_image(path: str | os.PathLike, verify: str = "draft", max_pixels: int = 89_478_485) -> ImageProbe:
    """Classify one file.

    verify: `header` reads dimensions only; `draft` decodes the whole JPEG entropy stream at 1/8
    scale (DCT scaling: the cheapest decode that still notices truncation); `full` decodes fully.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return _fail("broken_symlink", f"link target missing: {os.readlink(path)}")
        return _fail("unreadable", "file vanished during the scan")
    except OSError as exc:
        return _fail("unreadable", f"{type(exc).__name__}: {exc}")
    if not stat.S_ISREG(st.st_mode):
        return _fail("unreadable", "not a regular file (FIFO, socket or device)")
    size = st.st_size
    if size == 0:
        return _fail("empty", "zero-byte file", size)
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed by the `with fh` below, after the error mapping)
    except OSError as exc:
        return _fail("unreadable", f"{type(exc).__name__}: {exc}", size)
    with fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh)
        except UnidentifiedImageError:
            return _fail("not_an_image", "no known image format", size)
        except Image.DecompressionBombError as exc:
            return _fail("too_large", str(exc), size)
        except OSError as exc:
            return _fail("decode_error", f"{type(exc).__name__}: {exc}", size)
        known = {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode}
        if img.width * img.height > max_pixels:
            return _fail("too_large", f"{img.width}x{img.height} exceeds index.max_pixels={max_pixels}",
                         size, **known)
        try:
            if verify == "draft" and img.format == "JPEG":
                img.draft(None, ((img.width + 7) // 8, (img.height + 7) // 8))
            if verify != "header":
                img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            status = "truncated" if "truncat" in str(exc).lower() else "decode_error"
            return _fail(status, f"{type(exc).__name__}: {exc}", size, **known)
    return ImageProbe(bytes=size, status="ok", **known)


def load_rgb(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode any readable image to RGB uint8 `(H, W, 3)` (CMYK, L, P, RGBA, 16-bit all converted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ValueError(f"{path}: {img.width}x{img.height} exceeds {max_pixels} pixels")
            return np.asarray(img.convert("RGB"))
