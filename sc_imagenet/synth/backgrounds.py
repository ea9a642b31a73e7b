"""Backgrounds and non-object images: cluttered backdrops, landscapes (scene), tiled patterns (texture).

All functions return float32 RGB images (H, W, 3) with values in [0, 1] and take every random choice
from the given numpy Generator.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (hue wraps, all in [0, 1]) → RGB (3,) float32 in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32)


def clutter_color(rng: np.random.Generator) -> np.ndarray:
    """A muted colour for clutter. Saturation ≤ 0.45 and value in [0.25, 0.85] keep clutter away from the
    templates' saturated accents, near-white spots/eyes and near-black dark parts."""
    return hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.25, 0.85))


def _to_u8(color: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (np.clip(color, 0, 1) * 255).round().astype(int)
    return int(r), int(g), int(b)


def _gradient(rng: np.random.Generator, h: int, w: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Linear gradient c0 → c1 along a random direction, (H, W, 3) float32."""
    ang = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = xs * math.cos(ang) + ys * math.sin(ang)
    ramp -= ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    return c0 + (c1 - c0) * ramp[..., None]


def _low_freq(rng: np.random.Generator, h: int, w: int, amount: float) -> np.ndarray:
    """Smooth colour blotches: a tiny random grid upsampled bicubically, (H, W, 3) in ±amount."""
    grid = rng.uniform(-amount, amount, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(
        np.float32
    )
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def clutter_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradient + blotches + 6-14 random circles, rings, lines, rectangles and blobs in muted colours."""
    base = _gradient(rng, h, w, clutter_color(rng), clutter_color(rng)) + _low_freq(rng, h, w, 0.12)
    img = (np.clip(base, 0, 1) * 255).astype(np.uint8)
    size = min(h, w)
    for _ in range(int(rng.integers(6, 15))):
        color = _to_u8(clutter_color(rng))
        kind = rng.integers(0, 5)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        overlay = img.copy()
        if kind == 0:  # filled circle
            cv2.circle(overlay, (cx, cy), int(rng.uniform(0.03, 0.18) * size), color, -1, cv2.LINE_AA)
        elif kind == 1:  # ring
            cv2.circle(
                overlay,
                (cx, cy),
                int(rng.uniform(0.05, 0.2) * size),
                color,
                int(rng.integers(1, 5)),
                cv2.LINE_AA,
            )
        elif kind == 2:  # line
            ang = rng.uniform(0, math.pi)
            half = rng.uniform(0.1, 0.6) * size
            dx, dy = int(half * math.cos(ang)), int(half * math.sin(ang))
            cv2.line(
                overlay, (cx - dx, cy - dy), (cx + dx, cy + dy), color, int(rng.integers(1, 7)), cv2.LINE_AA
            )
        elif kind == 3:  # rotated rectangle
            box = (
                (cx, cy),
                (rng.uniform(0.05, 0.4) * size, rng.uniform(0.05, 0.4) * size),
                rng.uniform(0, 180),
            )
            cv2.fillPoly(overlay, [np.round(cv2.boxPoints(box)).astype(np.int32)], color, cv2.LINE_AA)
        else:  # irregular blob
            n = int(rng.integers(6, 12))
            angs = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = rng.uniform(0.05, 0.2) * size * rng.uniform(0.6, 1.2, n)
            pts = np.stack([cx + rad * np.cos(angs), cy + rad * np.sin(angs)], axis=1)
            cv2.fillPoly(overlay, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
        alpha = rng.uniform(0.35, 1.0)  # some clutter is translucent
        img = cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0)
    return img.astype(np.float32) / 255.0


def landscape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Scene: sky gradient, optional sun, soft clouds, 2-4 layers of hills receding to the horizon."""
    horizon = rng.uniform(0.35, 0.65) * h
    sunset = rng.random() < 0.25
    top = hsv(rng.uniform(0.55, 0.66), rng.uniform(0.45, 0.85), rng.uniform(0.55, 0.95))
    low = hsv(rng.uniform(0.05, 0.12), 0.5, 0.95) if sunset else hsv(rng.uniform(0.52, 0.6), 0.2, 0.97)
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    ramp = np.clip(ys / max(horizon, 1.0), 0, 1)
    img = np.broadcast_to(top + (low - top) * ramp, (h, w, 3)).astype(np.float32).copy()
    if rng.random() < 0.4:
        sun = np.zeros((h, w), np.float32)
        cv2.circle(
            sun,
            (int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.6) * horizon)),
            int(rng.uniform(0.04, 0.09) * min(h, w)),
            1.0,
            -1,
            cv2.LINE_AA,
        )
        sun = cv2.GaussianBlur(sun, (0, 0), 1.5)[..., None]
        img = img * (1 - sun) + hsv(0.13, 0.35, 1.0) * sun
    clouds = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 6))):
        cx, cy = rng.uniform(0, w), rng.uniform(0.05, 0.8) * horizon
        for _ in range(int(rng.integers(3, 7))):
            ax = rng.uniform(0.04, 0.12) * w
            center = (int(cx + rng.uniform(-1.5, 1.5) * ax), int(cy + rng.uniform(-0.3, 0.3) * ax))
            cv2.ellipse(clouds, center, (int(ax), int(ax * rng.uniform(0.35, 0.6))), 0, 0, 360, 1.0, -1)
    clouds = cv2.GaussianBlur(clouds, (0, 0), rng.uniform(2.0, 5.0))[..., None] * rng.uniform(0.6, 0.95)
    img = img * (1 - clouds) + np.float32(0.97) * clouds
    n_layers = int(rng.integers(2, 5))
    xs = np.arange(w, dtype=np.float64)
    hue = rng.uniform(0.2, 0.35)
    for layer in range(n_layers):
        depth = layer / max(n_layers - 1, 1)  # 0 = farthest (hazy, near the horizon), 1 = nearest
        base = horizon + depth * rng.uniform(0.1, 0.3) * (h - horizon)
        ridge = np.full(w, base)
        for _ in range(3):
            ridge += (
                rng.uniform(0.02, 0.12)
                * h
                * np.sin(2 * math.pi * rng.uniform(0.3, 2.5) * xs / w + rng.uniform(0, 2 * math.pi))
            )
        color = hsv(
            hue + rng.uniform(-0.05, 0.05), 0.2 + 0.4 * depth, 0.75 - 0.35 * depth + rng.uniform(-0.05, 0.05)
        )
        haze = hsv(0.58, 0.15, 0.85)
        color = color * (0.4 + 0.6 * depth) + haze * (0.6 - 0.6 * depth)
        pts = np.concatenate([np.stack([xs, ridge], 1), [[w - 1, h], [0, h]]])
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
        m = mask.astype(np.float32)[..., None] / 255
        shade = 1.0 - 0.25 * np.clip((ys - base) / max(h - base, 1.0), 0, 1)  # darker towards the viewer
        img = img * (1 - m) + (color * shade) * m
    return img


def tiled_pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Texture: a rotated, repeating motif (checker, bricks, dots, weave or chevrons) with per-tile tone
    variation, lighting gradient and blur; no object boundary anywhere."""
    tile = rng.uniform(10, 36)
    ang = math.radians(rng.uniform(-40, 40))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    p = (xs * math.cos(ang) + ys * math.sin(ang)) / tile + rng.uniform(0, 10)
    q = (-xs * math.sin(ang) + ys * math.cos(ang)) / tile + rng.uniform(0, 10)
    motif = int(rng.integers(0, 5))
    cell_p, cell_q = np.floor(p), np.floor(q)
    if motif == 0:  # checker
        fg = (cell_p + cell_q) % 2 == 0
    elif motif == 1:  # bricks with mortar
        shifted = p / 2 + 0.5 * (cell_q % 2)
        cell_p = np.floor(shifted)
        fg = ((q - cell_q) > 0.12) & ((shifted - cell_p) > 0.06)
    elif motif == 2:  # dots
        r = rng.uniform(0.2, 0.42)
        fg = (p - cell_p - 0.5) ** 2 + (q - cell_q - 0.5) ** 2 < r * r
    elif motif == 3:  # basket weave
        along = np.where((cell_p + cell_q) % 2 == 0, q - cell_q, p - cell_p)
        fg = (np.floor(along * 3) % 2) == 0
    else:  # chevrons
        fg = ((q + 2 * np.abs(p - cell_p - 0.5)) % 1.0) < 0.5
    c_fg = hsv(rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.35, 0.95))
    c_bg = hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.8))
    img = np.where(fg[..., None], c_fg, c_bg).astype(np.float32)
    # per-tile tone variation (a material, not a flat print): hash the cell indices into a small table
    tones = rng.uniform(0.85, 1.15, 97).astype(np.float32)
    idx = (cell_p.astype(np.int64) * 31 + cell_q.astype(np.int64) * 17) % 97
    img *= tones[idx][..., None]
    img *= 1.0 + _low_freq(rng, h, w, 0.15)[..., :1]
    return cv2.GaussianBlur(np.clip(img, 0, 1), (0, 0), 0.6)
