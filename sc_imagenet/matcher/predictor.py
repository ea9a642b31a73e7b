"""A trained matcher as a keypoint-transfer method (docs/evaluate.md, "Methods"): original pixels in and out.

    transfer = matcher_transfer(Path("runs/a/matcher.pt"))
    pred = transfer(src_rgb, trg_rgb, src_points)      # (N, 2) target pixels

Both images are resized to the matcher's S × S frame (as in training), the network gives a dense flow on
its grid, each source point moves by the flow interpolated at it (`functional.transfer_points`), and the
result is mapped back to the target's original pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sc_imagenet.matcher import functional as fn
from sc_imagenet.matcher.checkpoint import load_matcher
from sc_imagenet.matcher.functional import frame_batch
from sc_imagenet.matcher.model import MatcherNet


class Matcher:
    """Inference wrapper around a `MatcherNet`."""

    def __init__(self, net: MatcherNet) -> None:
        self.net = net.eval()
        self.size = net.cfg.input_size

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def transfer(self, src_rgb: np.ndarray, trg_rgb: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        pts = np.asarray(src_points, np.float64).reshape(-1, 2)
        if len(pts) == 0:
            return np.zeros((0, 2), np.float32)
        src = frame_batch([src_rgb], self.size).to(self.device)
        trg = frame_batch([trg_rgb], self.size).to(self.device)
        flow = self.net(src, trg).flow
        frame_pts = torch.as_tensor(fn.to_frame(pts, src_rgb.shape[:2], self.size), dtype=torch.float32,
                                    device=self.device).unsqueeze(0)
        pred = fn.transfer_points(flow, frame_pts, self.size)[0].cpu().numpy()
        return fn.from_frame(pred, trg_rgb.shape[:2], self.size).astype(np.float32)

    __call__ = transfer


def matcher_transfer(path: Path, device: str = "cpu", backbone_checkpoint: Path | None = None) -> Matcher:
    """The evaluation method `matcher`: a trained `matcher.pt` as `transfer(src_rgb, trg_rgb, points)`."""
    return Matcher(load_matcher(Path(path), device, backbone_checkpoint))
