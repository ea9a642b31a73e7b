"""The trained matcher (`sc-imagenet pretrain`, docs/matcher.md) as the evaluation method `matcher`.

    sc-imagenet eval --benchmark synthetic --root DIR --method matcher nn-refine-disp --matcher runs/pre/matcher.pt
"""

from __future__ import annotations

from pathlib import Path

from sc_imagenet.evaluate.methods import Method
from sc_imagenet.evaluate.registry import MethodContext, register_method


def _factory(ctx: MethodContext) -> Method:
    if ctx.options.get("matcher") is None:
        raise ValueError("the matcher method needs --matcher <DIR>/matcher.pt (written by sc-imagenet pretrain)")
    from sc_imagenet.matcher.predictor import matcher_transfer  # torch network code only when it is asked for

    return matcher_transfer(Path(ctx.options["matcher"]), ctx.device)


register_method("matcher", _factory)
