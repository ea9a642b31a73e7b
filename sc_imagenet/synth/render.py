"""Rendering warped template instances and compositing whole images.

Images are float32 RGB (H, W, 3) in [0, 1] until the final uint8 conversion. Pixel centres sit at integer
coordinates (see warp.py). An instance's binary mask is decided at pixel centres: pixel (x, y) belongs to
the instance iff the template label at u = warp⁻¹(x, y) is non-zero. The ground truth uses exactly these
masks; the soft edges seen in the image come from a small blur of the premultiplied layer.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from sc_imagenet.synth.backgrounds import clutter_background, hsv
from sc_imagenet.synth.templates import Template, sample_labels
from sc_imagenet.synth.warp import Shape, Warp, sample_shape, translation_range

AA_SIGMA = 0.6  # px; softens part and object edges roughly like a 2x supersample would
PAD = 3  # px around an instance's box so the blur never reaches outside the processed region


@dataclass(frozen=True)
class Appearance:
    """Per-instance look. palette: (P+1, 3) RGB per label (row 0 unused); textured: (P+1,) bool, the
    primary parts that carry the texture; texture: 'plain' | 'stripes' | 'spots' with its params."""

    palette: np.ndarray
    textured: np.ndarray
    texture: str
    tex_params: tuple[float, ...]
    tex_color: np.ndarray
    light: np.ndarray  # (2,) direction·strength of a linear shading term in template space


def sample_appearance(rng: np.random.Generator, template: Template) -> Appearance:
    """Jitter primary/secondary hue, saturation and brightness; accents and dark parts keep their colour
    up to ±5 % brightness so they stay distinctive."""
    spec = template.spec

    def jitter(base: tuple[float, float, float]) -> np.ndarray:
        h, s, v = base
        return hsv(h + rng.uniform(-0.09, 0.09), s + rng.uniform(-0.2, 0.15), v * rng.uniform(0.75, 1.2))

    role_color = {"primary": jitter(spec.primary_hsv), "secondary": jitter(spec.secondary_hsv)}
    palette = np.zeros((len(spec.parts) + 1, 3), np.float32)
    for i, part in enumerate(spec.parts, start=1):
        if part.color is not None:
            palette[i] = np.asarray(part.color, np.float32) / 255 * rng.uniform(0.95, 1.05)
        else:
            palette[i] = role_color[part.role]
    textured = np.array([False] + [p.role == "primary" for p in spec.parts])
    texture = str(rng.choice(["plain", "stripes", "spots"], p=[0.34, 0.33, 0.33]))
    if texture == "stripes":  # (angular frequency per template unit, direction, phase, duty threshold)
        params: tuple[float, ...] = (
            rng.uniform(7, 16),
            rng.uniform(0, math.pi),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(-0.3, 0.3),
        )
    elif texture == "spots":  # (cell size, radius fraction, seed offset)
        params = (rng.uniform(0.14, 0.28), rng.uniform(0.18, 0.32), float(rng.integers(0, 1000)))
    else:
        params = ()
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in role_color["primary"]))
    tex_color = hsv(
        h + rng.uniform(-0.08, 0.08),
        s,
        v * rng.uniform(0.45, 0.7) if rng.random() < 0.6 else min(1.0, v * 1.4 + 0.1),
    )
    light = rng.normal(size=2).astype(np.float32)
    light *= rng.uniform(0.1, 0.25) / max(float(np.linalg.norm(light)), 1e-6)
    return Appearance(palette, textured, texture, params, tex_color, light)


def _texture_mask(app: Appearance, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Boolean pattern in template coordinates (so it moves and deforms with the object)."""
    if app.texture == "stripes":
        freq, direction, phase, duty = app.tex_params
        return np.sin(freq * (ux * math.cos(direction) + uy * math.sin(direction)) + phase) > duty
    if app.texture == "spots":
        cell, radius_frac, offset = app.tex_params
        gx, gy = np.floor(ux / cell), np.floor(uy / cell)
        # jittered spot centre per cell from a hash of the cell index (deterministic, no per-cell RNG)
        hsh = (gx.astype(np.int64) * 7919 + gy.astype(np.int64) * 104729 + int(offset)) % 1009
        slack = 0.5 - radius_frac
        jx = ((hsh * 37) % 101 / 100.0 - 0.5) * 2 * slack
        jy = ((hsh * 53) % 103 / 102.0 - 0.5) * 2 * slack
        dx = ux / cell - gx - 0.5 - jx
        dy = uy / cell - gy - 0.5 - jy
        return dx * dx + dy * dy < radius_frac * radius_frac
    return np.zeros(ux.shape, bool)


@dataclass
class InstanceLayer:
    """One rendered instance: region (y0, y1, x0, x1) in image pixels (end exclusive), its mask (h, w)
    bool at pixel centres, and the premultiplied colour (h, w, 3) / alpha (h, w) after anti-aliasing."""

    warp: Warp
    region: tuple[int, int, int, int]
    mask: np.ndarray
    premult: np.ndarray
    alpha: np.ndarray


def render_instance(
    template: Template, warp: Warp, app: Appearance, height: int, width: int
) -> InstanceLayer:
    pts = warp.forward(template.boundary_uv)
    x0 = max(math.floor(pts[:, 0].min()) - PAD, 0)
    y0 = max(math.floor(pts[:, 1].min()) - PAD, 0)
    x1 = min(math.ceil(pts[:, 0].max()) + PAD + 1, width)
    y1 = min(math.ceil(pts[:, 1].max()) + PAD + 1, height)
    h, w = y1 - y0, x1 - x0
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # float32 is ample for rendering: 1e-5 template units is < 0.01 px at these scales
    ux, uy = warp.inverse_xy(xs.ravel(), ys.ravel(), dtype=np.float32, tol=1e-5, max_iter=60)
    labels = sample_labels(template.labels, ux, uy)
    inside = labels > 0
    lab, uxi, uyi = labels[inside], ux[inside], uy[inside]
    color = app.palette[lab]
    tex = app.textured[lab] & _texture_mask(app, uxi, uyi)
    color[tex] = app.tex_color
    shade = 1.0 + app.light[0] * uxi + app.light[1] * uyi - 0.1 * (uxi * uxi + uyi * uyi)
    edge = sample_labels(template.edges.view(np.uint8), uxi, uyi) > 0
    shade[edge] *= 0.65  # dark outline between parts and along the silhouette
    color *= shade[:, None]
    premult = np.zeros((h * w, 3), np.float32)
    premult[inside] = color
    mask = inside.reshape(h, w)
    premult = cv2.GaussianBlur(premult.reshape(h, w, 3), (0, 0), AA_SIGMA)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), AA_SIGMA)
    return InstanceLayer(warp, (y0, y1, x0, x1), mask, premult, alpha)


def composite(img: np.ndarray, layer: InstanceLayer) -> None:
    """Draw a layer over img (H, W, 3) float32 in place (premultiplied 'over')."""
    y0, y1, x0, x1 = layer.region
    sub = img[y0:y1, x0:x1]
    sub *= 1.0 - layer.alpha[..., None]
    sub += layer.premult


def full_mask(layer: InstanceLayer, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), bool)
    y0, y1, x0, x1 = layer.region
    out[y0:y1, x0:x1] = layer.mask
    return out


def _box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area / smaller box area for boxes (x_min, y_min, x_max, y_max)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-9)


def sample_warps(rng: np.random.Generator, template: Template, height: int, width: int, n: int) -> list[Warp]:
    """Warps for n ∈ {1, 2} instances, in draw order. One instance spans 35-75 % of the shorter side;
    two are smaller and placed (best of 40 tries) so their boxes overlap by ≤ 15 % of the smaller box."""
    frac = (0.35, 0.75) if n == 1 else (0.28, 0.48)
    shapes: list[Shape] = [
        sample_shape(rng, template.boundary_uv, template.mask_extent(), width, height, rng.uniform(*frac))
        for _ in range(n)
    ]
    warps: list[Warp] = []
    boxes: list[np.ndarray] = []
    for shape in shapes:
        lo, hi = translation_range(shape, width, height)
        best: tuple[float, np.ndarray] | None = None
        for _ in range(40 if boxes else 1):
            t = rng.uniform(lo, hi)
            box = shape.box0 + np.concatenate([t, t])
            worst = max((_box_overlap(box, b) for b in boxes), default=0.0)
            if best is None or worst < best[0]:
                best = (worst, t)
            if worst <= 0.15:
                break
        assert best is not None
        t = best[1]
        warps.append(shape.with_translation(t))
        boxes.append(shape.box0 + np.concatenate([t, t]))
    return warps


def render_object_image(
    rng: np.random.Generator, template: Template, height: int, width: int, n_instances: int
) -> tuple[np.ndarray, list[Warp], list[np.ndarray]]:
    """Clutter background plus n instances drawn in order (later on top).

    Returns (image (H, W, 3) uint8, warps in draw order, full-image masks (H, W) bool in draw order;
    these are the unoccluded masks: visibility is resolved by the caller).
    """
    img = clutter_background(rng, height, width)
    warps = sample_warps(rng, template, height, width, n_instances)
    masks = []
    for warp in warps:
        layer = render_instance(template, warp, sample_appearance(rng, template), height, width)
        composite(img, layer)
        masks.append(full_mask(layer, height, width))
    return finish(rng, img), warps, masks


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add sensor-like Gaussian noise and quantize to uint8."""
    sigma = rng.uniform(1.5, 5.0) / 255
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
