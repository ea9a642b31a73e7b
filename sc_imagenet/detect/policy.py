"""The single-instance policy (paper §3.5): keep an image iff exactly one detected object has
confidence strictly above the threshold (0.9). Pure numpy: detections in, decision out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Every reason the policy can give (documented in manifests/README.md).
REASONS = {
    "kept": "exactly one confident detection, large enough",
    "no_detection": "no detection at all (above the detector's floor, in the allowed classes)",
    "below_threshold": "detections, but none above the threshold",
    "multiple_confident": "two or more detections above the threshold",
    "too_small": "the one confident detection covers less than min_box_area_frac of the image",
    "unreadable": "the index marked the file unusable",
}


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str
    n_above: int
    best: int  # index of the kept (or most confident) detection; -1 if none


def decide(
    conf: np.ndarray,
    area_frac: np.ndarray,
    class_ok: np.ndarray | None = None,
    threshold: float = 0.9,
    min_box_area_frac: float = 0.0,
) -> Decision:
    """conf, area_frac (box area / image area), class_ok: `(N,)` arrays for one image's detections."""
    conf = np.asarray(conf, dtype=np.float64)
    area_frac = np.asarray(area_frac, dtype=np.float64)
    allowed = np.ones(conf.shape, bool) if class_ok is None else np.asarray(class_ok, bool)
    idx = np.flatnonzero(allowed)
    if idx.size == 0:
        return Decision(False, "no_detection", 0, -1)
    best = int(idx[np.argmax(conf[idx])])
    above = idx[conf[idx] > threshold]
    if above.size == 0:
        return Decision(False, "below_threshold", 0, best)
    if above.size > 1:
        return Decision(False, "multiple_confident", int(above.size), best)
    if area_frac[best] < min_box_area_frac:
        return Decision(False, "too_small", 1, best)
    return Decision(True, "kept", 1, best)
