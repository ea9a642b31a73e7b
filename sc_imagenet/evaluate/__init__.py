"""Correspondence evaluation on the synthetic ground truth: pairs, PCK, baseline methods (docs/evaluate.md).

    pairs = sample_eval_pairs(root, 100, seed=0)
    result = evaluate(nearest_neighbour_transfer(create_backbone("dense-sift")), pairs, root)
    result["pck@0.1"]

Coordinates everywhere: float32 (N, 2) (x, y) in original-image pixels, pixel centres at integers.
"""

from sc_imagenet.evaluate import matcher as _matcher  # noqa: F401  (registers "matcher")
from sc_imagenet.evaluate.generator import evaluate_generator_vs_mnn, generator_transfer  # registers "generator"
from sc_imagenet.evaluate.methods import (
    Method,
    from_flow,
    from_matcher,
    hough_flow,
    hough_one_to_one_transfer,
    identity_transfer,
    mutual_nn,
    mutual_nn_transfer,
    nearest_neighbour_flow,
    nearest_neighbour_transfer,
)
from sc_imagenet.evaluate.pairs import EvalPair, sample_eval_pairs, sample_object_points
from sc_imagenet.evaluate.pck import PCKAccumulator, dense_pck, pck
from sc_imagenet.evaluate.registry import METHODS, MethodContext, register_method
from sc_imagenet.evaluate.run import evaluate

__all__ = [
    "METHODS",
    "EvalPair",
    "Method",
    "MethodContext",
    "PCKAccumulator",
    "dense_pck",
    "evaluate",
    "evaluate_generator_vs_mnn",
    "from_flow",
    "from_matcher",
    "generator_transfer",
    "hough_flow",
    "hough_one_to_one_transfer",
    "identity_transfer",
    "mutual_nn",
    "mutual_nn_transfer",
    "nearest_neighbour_flow",
    "nearest_neighbour_transfer",
    "pck",
    "register_method",
    "sample_eval_pairs",
    "sample_object_points",
]
