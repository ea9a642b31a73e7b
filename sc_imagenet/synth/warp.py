"""Template → image warps: an affine map after a smooth, invertible displacement. Pure numpy.

Coordinates
-----------
* Template space: u = (u_x, u_y) ∈ [-1, 1]², u_y pointing down (same handedness as images).
* Image space: x = (x, y) in pixels, pixel centres at integer coordinates: pixel (row i, col j)
  is the point (x=j, y=i) and covers [j-0.5, j+0.5] × [i-0.5, i+0.5].

Forward map:  x = A · (u + d(u)) + t,   d(u) = Σ_k a_k · sin(f_k · u + φ_k)
with A (2,2), t (2,), a_k ∈ R² (`amp`, (K,2)), f_k ∈ R² (`freq`, (K,2)), φ_k (`phase`, (K,)).
‖∂d/∂u‖ ≤ L = Σ_k |a_k| |f_k|; with L < 1, u ↦ u + d(u) is a bijection and the inverse
    v = A⁻¹(x − t),   u ← v − d(u)   (fixed point, contraction factor L)
converges geometrically from u = v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

MAX_LIPSCHITZ = 0.45


@dataclass(frozen=True)
class Warp:
    """Parameters of one instance's warp; arrays are float64 copies of float32-rounded values so the
    stored (float32) ground truth reproduces the render exactly."""

    A: np.ndarray  # (2, 2)
    t: np.ndarray  # (2,)
    amp: np.ndarray  # (K, 2)
    freq: np.ndarray  # (K, 2)
    phase: np.ndarray  # (K,)

    @classmethod
    def from_params(
        cls, A: ArrayLike, t: ArrayLike, amp: ArrayLike, freq: ArrayLike, phase: ArrayLike
    ) -> Warp:
        """Build from any array-likes (e.g. the flattened lists stored in instances.parquet)."""

        def f32(a: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
            return np.asarray(a, dtype=np.float32).astype(np.float64).reshape(shape)

        k = len(np.asarray(phase).reshape(-1))
        return cls(f32(A, (2, 2)), f32(t, (2,)), f32(amp, (k, 2)), f32(freq, (k, 2)), f32(phase, (k,)))

    @property
    def lipschitz_bound(self) -> float:
        """Σ_k |a_k| |f_k|: upper bound of the displacement's Lipschitz constant."""
        return float(np.sum(np.linalg.norm(self.amp, axis=1) * np.linalg.norm(self.freq, axis=1)))

    def affine6(self) -> np.ndarray:
        """(6,) float32: A row-major (a11, a12, a21, a22) then t (tx, ty) — the stored `affine`."""
        return np.concatenate([self.A.reshape(-1), self.t]).astype(np.float32)

    def _displace(self, ux: np.ndarray, uy: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        """d(u) for u given as two (N,) arrays; returns (dx, dy), each (N,) of `dtype`."""
        dx = np.zeros_like(ux)
        dy = np.zeros_like(ux)
        arg = np.empty_like(ux)
        for (ax, ay), (fx, fy), ph in zip(
            self.amp.astype(dtype), self.freq.astype(dtype), self.phase.astype(dtype), strict=True
        ):
            np.multiply(ux, fx, out=arg)
            arg += fy * uy
            arg += ph
            np.sin(arg, out=arg)
            dx += ax * arg
            dy += ay * arg
        return dx, dy

    def displacement(self, u: np.ndarray) -> np.ndarray:
        """d(u) for u (N,2) → (N,2), same float dtype as u."""
        u = np.asarray(u)
        dtype = u.dtype.type if u.dtype in (np.float32, np.float64) else np.float64
        u = u.astype(dtype, copy=False)
        dx, dy = self._displace(np.ascontiguousarray(u[:, 0]), np.ascontiguousarray(u[:, 1]), dtype)
        return np.stack([dx, dy], axis=1)

    def forward(self, u: np.ndarray) -> np.ndarray:
        """Template points u (N,2) → image points x (N,2), float64."""
        u = np.asarray(u, dtype=np.float64).reshape(-1, 2)
        w = u + self.displacement(u)
        return w @ self.A.T + self.t

    def inverse_xy(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        dtype: type = np.float64,
        tol: float = 1e-12,
        max_iter: int = 200,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image points as two (N,) arrays → template (u_x, u_y), each (N,) of `dtype`.

        Iterates until the largest update is below `tol` (template units) or `max_iter` is hit; since
        the error shrinks by ≥ (1 - L) per step relative to the update, the final error is ≤ tol·L/(1-L).
        """
        Ainv = np.linalg.inv(self.A).astype(dtype)
        t = self.t.astype(dtype)
        x0 = np.asarray(x, dtype=dtype) - t[0]
        y0 = np.asarray(y, dtype=dtype) - t[1]
        vx = Ainv[0, 0] * x0 + Ainv[0, 1] * y0
        vy = Ainv[1, 0] * x0 + Ainv[1, 1] * y0
        ux, uy = vx.copy(), vy.copy()
        for _ in range(max_iter):
            dx, dy = self._displace(ux, uy, dtype)
            nx = vx - dx
            ny = vy - dy
            step = max(
                float(np.max(np.abs(nx - ux), initial=0.0)), float(np.max(np.abs(ny - uy), initial=0.0))
            )
            ux, uy = nx, ny
            if step < tol:
                break
        return ux, uy

    def inverse(self, x: np.ndarray, **kwargs: object) -> np.ndarray:
        """Image points x (N,2) → template points u (N,2) (float64 unless dtype= is given)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 2)
        ux, uy = self.inverse_xy(x[:, 0], x[:, 1], **kwargs)  # type: ignore[arg-type]
        return np.stack([ux, uy], axis=1)


def sample_deformation(
    rng: np.random.Generator, n_terms: int = 3, lip_range: tuple[float, float] = (0.15, 0.44)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (amp (K,2), freq (K,2), phase (K,)) with Σ|a_k||f_k| drawn from `lip_range`.

    The upper end stays a little below MAX_LIPSCHITZ so float32 rounding cannot cross it.
    """
    freq_dir = rng.uniform(0.0, 2 * math.pi, n_terms)
    freq_mag = rng.uniform(1.0, 3.0, n_terms)  # radians per template unit: 1-3 bumps across the object
    freq = np.stack([np.cos(freq_dir), np.sin(freq_dir)], axis=1) * freq_mag[:, None]
    amp_dir = rng.uniform(0.0, 2 * math.pi, n_terms)
    weight = rng.uniform(0.2, 1.0, n_terms)
    lip = rng.uniform(*lip_range)
    amp_mag = weight * (lip / float(np.sum(weight * freq_mag)))
    amp = np.stack([np.cos(amp_dir), np.sin(amp_dir)], axis=1) * amp_mag[:, None]
    phase = rng.uniform(0.0, 2 * math.pi, n_terms)
    return amp, freq, phase


def linear_part(scale: float, angle_rad: float, aniso: float) -> np.ndarray:
    """A = scale · R(angle) · diag(aniso, 1/aniso), (2,2). Positive angle turns clockwise on screen
    (y points down). det A = scale² > 0, so no mirror flips."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    rot = np.array([[c, -s], [s, c]])
    return scale * rot @ np.diag([aniso, 1.0 / aniso])


@dataclass(frozen=True)
class Shape:
    """A sampled warp before translation. box0 = (x_min, y_min, x_max, y_max) of the warped object
    outline for t = 0, in image pixels (centre convention)."""

    A: np.ndarray
    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray
    box0: np.ndarray

    def with_translation(self, t: np.ndarray) -> Warp:
        return Warp.from_params(self.A, t, self.amp, self.freq, self.phase)


def sample_shape(
    rng: np.random.Generator,
    boundary_uv: np.ndarray,
    extent: float,
    width: int,
    height: int,
    size_frac: float,
    max_angle_deg: float = 35.0,
    margin: float = 2.0,
) -> Shape:
    """Scale/rotation/anisotropy/deformation of one instance.

    boundary_uv (M,2): template outline points; extent: largest side of the template mask's box (template
    units). The object's largest side becomes ≈ size_frac · min(width, height) before rotation and
    deformation; it is shrunk if the warped outline would not fit inside the image with `margin` px.
    """
    scale = size_frac * min(width, height) / extent
    angle = math.radians(rng.uniform(-max_angle_deg, max_angle_deg))
    aniso = math.exp(rng.uniform(-0.12, 0.12))
    A = linear_part(scale, angle, aniso)
    amp, freq, phase = sample_deformation(rng)
    probe = Warp.from_params(A, np.zeros(2), amp, freq, phase)
    pts = probe.forward(boundary_uv)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    room = np.array([width - 1 - 2 * margin, height - 1 - 2 * margin], np.float64)
    shrink = min(1.0, float(np.min(room / np.maximum(hi - lo, 1e-9))))
    if shrink < 1.0:
        # forward(u) with t = 0 is linear in A, so scaling A scales the outline about the origin
        A = A * shrink * 0.999
        pts = Warp.from_params(A, np.zeros(2), amp, freq, phase).forward(boundary_uv)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
    return Shape(A, amp, freq, phase, np.concatenate([lo, hi]))


def translation_range(
    shape: Shape, width: int, height: int, margin: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """(t_min, t_max), each (2,): translations that keep the warped outline `margin` px inside the image."""
    lo, hi = shape.box0[:2], shape.box0[2:]
    t_min = margin - lo
    t_max = np.array([width - 1 - margin, height - 1 - margin]) - hi
    # a shape that barely fits gets a centred, fixed position
    centre = (t_min + t_max) / 2
    return np.minimum(t_min, centre), np.maximum(t_max, centre)
