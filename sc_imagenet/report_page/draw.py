"""Drawings of the report: a pair side by side with lines between matched points, coloured by each
point's loop offset, and a dropped image with the detector's boxes. Arrays in, PIL images out.

Coordinates are original-image pixels with pixel centres at integers (the project's convention), so a
point x maps to (x + 0.5) · scale − 0.5 in a resized image. Lines are drawn at twice the size and
downsampled, which antialiases them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sc_imagenet.report_page.model import Detection

SUPERSAMPLE = 2
GAP = 8  # pixels between source and target
NAN_COLOUR = (150, 150, 150)
# colour of a point by its loop offset / threshold: blue (consistent) → pale yellow (at the threshold) →
# red (twice the threshold and beyond): ColorBrewer's 5-class RdYlBu reversed, whose ends stay bright
# enough to tell apart at a glance under the lines' dark outline (the 11-class ends are near black)
_STOPS = np.array([[44, 123, 182], [171, 217, 233], [255, 255, 191], [253, 174, 97], [215, 25, 28]], np.float64)
_STOP_AT = np.array([0.0, 0.5, 1.0, 1.5, 2.0])


def offset_colour(offset: float, threshold: float) -> tuple[int, int, int]:
    """RGB of a point whose loop offset is `offset` (units of the object's size); grey if unknown."""
    if offset is None or not np.isfinite(offset) or threshold <= 0:
        return NAN_COLOUR
    r = float(np.clip(offset / threshold, 0.0, 2.0))
    rgb = [np.interp(r, _STOP_AT, _STOPS[:, c]) for c in range(3)]
    return tuple(round(float(v)) for v in rgb)  # type: ignore[return-value]


def legend_stops(threshold: float) -> list[tuple[float, str, tuple[int, int, int]]]:
    """(offset, label, colour) at the colour map's stops: for the page's legend."""
    out = []
    for r in _STOP_AT:
        off = float(r) * threshold
        label = f"{off:.3g}" + (" (threshold)" if r == 1.0 else "") + (" and above" if r == 2.0 else "")
        out.append((off, label, offset_colour(off, threshold)))
    return out


def _resize_to_height(img: Image.Image, height: int) -> tuple[Image.Image, float, float]:
    sx = sy = height / img.height
    width = max(1, round(img.width * sx))
    sx = width / img.width
    return img.resize((width, height), Image.Resampling.LANCZOS), sx, sy


def _to_canvas(xy: np.ndarray, sx: float, sy: float, dx: float = 0.0) -> np.ndarray:
    out = np.empty_like(np.asarray(xy, np.float64).reshape(-1, 2))
    out[:, 0] = (xy[:, 0] + 0.5) * sx - 0.5 + dx
    out[:, 1] = (xy[:, 1] + 0.5) * sy - 0.5
    return out


def draw_pair(src: np.ndarray, trg: np.ndarray, src_kps: np.ndarray, trg_kps: np.ndarray, offsets: np.ndarray,
              threshold: float, height: int) -> Image.Image:
    """Source left, target right, both `height` pixels high (never enlarged beyond the larger image),
    one line per match from its source to its target point, coloured by its loop offset; the most
    consistent lines are drawn last (on top)."""
    height = max(16, min(height, max(src.shape[0], trg.shape[0])))
    s = SUPERSAMPLE
    left, lsx, lsy = _resize_to_height(Image.fromarray(src), height * s)
    right, rsx, rsy = _resize_to_height(Image.fromarray(trg), height * s)
    canvas = Image.new("RGB", (left.width + GAP * s + right.width, height * s), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + GAP * s, 0))
    a = _to_canvas(np.asarray(src_kps, np.float64).reshape(-1, 2), lsx, lsy)
    b = _to_canvas(np.asarray(trg_kps, np.float64).reshape(-1, 2), rsx, rsy, left.width + GAP * s)
    off = np.asarray(offsets, np.float64).reshape(-1)
    draw = ImageDraw.Draw(canvas)
    order = np.argsort(-np.nan_to_num(off, nan=np.inf), kind="stable")  # worst first, best on top
    radius = round(3.5 * s)
    for i in order:  # a dark outline under each line keeps it visible on any background
        colour = offset_colour(off[i], threshold)
        (x0, y0), (x1, y1) = a[i], b[i]
        draw.line([(x0, y0), (x1, y1)], fill=(0, 0, 0), width=3 * s + 1)
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=2 * s)
    for i in order:
        colour = offset_colour(off[i], threshold)
        for x, y in (a[i], b[i]):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0),
                         width=s)
    return canvas.resize((canvas.width // s, canvas.height // s), Image.Resampling.LANCZOS)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_detections(img: np.ndarray, detections: Sequence[Detection], height: int) -> Image.Image:
    """The image with the detector's boxes: above the single-instance threshold thick red, below it thin
    orange; each labelled with its confidence (and class)."""
    pil = Image.fromarray(img)
    scale = min(1.0, height / pil.height)
    if scale < 1.0:
        pil, sx, sy = _resize_to_height(pil, max(16, round(pil.height * scale)))
    else:
        sx = sy = 1.0
    draw = ImageDraw.Draw(pil)
    font = _font(11)
    for det in sorted(detections, key=lambda d: d.conf):  # the most confident on top
        x1, y1, x2, y2 = det.box
        box = [x1 * sx, y1 * sy, x2 * sx - 1, y2 * sy - 1]
        colour = (228, 26, 28) if det.above else (255, 140, 0)
        draw.rectangle(box, outline=(0, 0, 0), width=4 if det.above else 3)
        draw.rectangle(box, outline=colour, width=2 if det.above else 1)
        text = f"{det.conf:.2f}" + (f" {det.class_name}" if det.class_name else "")
        tx, ty = box[0] + 2, max(0.0, box[1] - 13)
        bbox = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([bbox[0] - 1, bbox[1] - 1, bbox[2] + 1, bbox[3] + 1], fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=colour, font=font)
    return pil


def placeholder(text: str, width: int, height: int) -> Image.Image:
    """A grey tile naming why an image could not be drawn."""
    img = Image.new("RGB", (width, height), (225, 225, 225))
    draw = ImageDraw.Draw(img)
    draw.multiline_text((8, 8), text, fill=(90, 0, 0), font=_font(12))
    return img
