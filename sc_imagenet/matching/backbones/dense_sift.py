"""`dense-sift`: a weight-free dense descriptor, so every stage runs offline (demo, CI) with no weights.

For each `patch_size × patch_size` cell of the resized input, upright OpenCV SIFT descriptors are
computed at the cell centre at several scales and concatenated (C = 128 × len(scales)), each
RootSIFT-normalised (L1, then square root: the Hellinger kernel, which compares gradient histograms
better than the Euclidean one), and the whole token L2-normalised so cosine similarity works as for ViTs.

The descriptor is appearance-level, not semantic: it matches the same texture/shape at the same
orientation and rough scale, and has no notion of object parts across instances.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from sc_imagenet.matching.backbones.base import Backbone, Features, register_backbone
from sc_imagenet.matching.backbones.preprocess import check_input, resize_square

# OpenCV's SIFT window spans about 6 × keypoint size (4×4 bins of 1.5 × size each), so a keypoint
# size of s × patch_size / 6 covers s cells across. 4, 8, 16 cells = bins of 1, 2 and 4 cells: wide
# context matters more than fine detail when matching across instances (docs/backbones.md).
DEFAULT_SPANS = (4.0, 8.0, 16.0)
_SIFT_WINDOW_PER_SIZE = 6.0


def sampling_octave(size: float, sigma0: float = 1.6) -> int:
    """The Gaussian-pyramid octave OpenCV should sample a keypoint of `size` (diameter, pixels) on.

    SIFT's rule: the octave whose base blur σ0·2^o does not exceed the keypoint's σ = size / 2. Large
    windows are then sampled on a 2^o-times smaller image (4× fewer samples per octave, no aliasing).
    Only layer 0 of the octave is used: the extra in-octave blur SIFT would add for scale invariance
    cost ~8 PCK points in our dense matching measurements (docs/backbones.md).
    """
    return max(0, int(np.floor(np.log2(size / (2.0 * sigma0)))))


def rootsift(desc: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """`(..., D)` non-negative histograms → RootSIFT: L1-normalise, then element-wise square root."""
    return np.sqrt(desc / (np.abs(desc).sum(axis=-1, keepdims=True) + eps))


class DenseSift(Backbone):
    """Dense multi-scale SIFT on a `(S/p) × (S/p)` grid; no parameters, computed on the CPU with OpenCV."""

    name = "dense-sift"

    def __init__(self, patch_size: int = 8, input_size: int = 224, spans: Sequence[float] = DEFAULT_SPANS) -> None:
        super().__init__()
        if patch_size <= 0 or input_size <= 0 or input_size % patch_size:
            raise ValueError(f"dense-sift: input_size {input_size} must be a positive multiple of patch_size "
                             f"{patch_size}")
        if not spans or min(spans) <= 0:
            raise ValueError(f"dense-sift: spans must be positive cell counts, got {spans}")
        self.patch_size = patch_size
        self.input_size = input_size
        self.spans = tuple(float(s) for s in spans)
        self.out_dim = 128 * len(self.spans)
        side = input_size // patch_size
        self.grid = (side, side)
        centres = (np.arange(side, dtype=np.float32) + 0.5) * patch_size - 0.5  # pixel-centre convention
        xx, yy = np.meshgrid(centres, centres)  # row-major over the grid
        sizes = np.asarray(self.spans, np.float64) * patch_size / _SIFT_WINDOW_PER_SIZE
        octaves = np.array([sampling_octave(z) for z in sizes], np.float64)  # layer 0: packs as is
        # (scales*h*w, 4) rows (x, y, size, packed octave), one block of h*w per scale; plain numbers, so
        # the module stays picklable/deep-copyable (cv2 objects are not); KeyPoints are rebuilt per call
        n = side * side
        self._kp = np.stack([np.tile(xx.ravel(), len(sizes)), np.tile(yy.ravel(), len(sizes)),
                             np.repeat(sizes, n), np.repeat(octaves, n)], axis=1)
        # no weights: an empty buffer gives `.to(device)` / `.device` something to follow
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 `(H_i, W_i, 3)` → `(B, 3, S, S)` float32 in [0, 1] (SIFT needs no mean/std)."""
        return torch.from_numpy(resize_square(images, self.input_size)).permute(0, 3, 1, 2).float().div_(255.0)

    def describe(self, gray: np.ndarray) -> np.ndarray:
        """uint8 `(S, S)` → float32 `(h*w, C)` tokens of unit L2 norm (all-zero where a cell has no
        gradient at any scale: OpenCV returns zero histograms there, and zero is the honest token)."""
        keypoints = [cv2.KeyPoint(x, y, size, 0.0, 0.0, int(octave)) for x, y, size, octave in self._kp.tolist()]
        kps, desc = cv2.SIFT_create().compute(gray, keypoints)
        n = self.grid[0] * self.grid[1]
        if desc is None or len(kps) != len(keypoints):  # OpenCV may drop keypoints; ours never leave the image
            raise RuntimeError(f"dense-sift: OpenCV returned {0 if desc is None else len(kps)} of "
                               f"{len(keypoints)} descriptors")
        per_scale = rootsift(desc.reshape(len(self.spans), n, 128))  # (scales, h*w, 128)
        tokens = per_scale.transpose(1, 0, 2).reshape(n, self.out_dim)
        return tokens / np.linalg.norm(tokens, axis=1, keepdims=True).clip(min=1e-12)

    def forward(self, x: torch.Tensor) -> Features:
        """`(B, 3, S, S)` in [0, 1] → tokens `(B, h*w, 128·scales)`, grid `(S/p, S/p)`, global = mean token."""
        check_input(x, self.input_size)
        rgb = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        n = self.grid[0] * self.grid[1]
        tokens = np.empty((len(rgb), n, self.out_dim), np.float32)
        for i, img in enumerate(rgb):
            tokens[i] = self.describe(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY))
        t = torch.from_numpy(tokens).to(x.device)
        return Features(tokens=t, grid=self.grid, global_token=t.mean(dim=1))


@register_backbone("dense-sift")
def dense_sift(patch_size: int = 8, input_size: int = 224, spans: Sequence[float] = DEFAULT_SPANS) -> DenseSift:
    """Weight-free dense SIFT (`spans`: descriptor widths in cells, one 128-d block per entry)."""
    return DenseSift(patch_size=patch_size, input_size=input_size, spans=spans)
