"""Sweep the `select` settings on a finished synthetic build (through `consistency`) and print the
quality figures of each, without writing anything: how settings are chosen on a VALIDATION build
(a synthetic dataset with another seed) before the reported figures are taken from the demo.

    python benchmarks/select_sweep.py --build /tmp/demo-val [--thresholds 0.05 0.1 0.2] [--keypoints 32]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

from sc_imagenet.config import read_resolved_config
from sc_imagenet.dataset.quality import TruthOracle, evaluate_dataset
from sc_imagenet.io.manifest import category_shards
from sc_imagenet.stages.select import category_edges, category_images, ranked_images, select_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--keypoints", type=int, nargs="+", default=[32])
    parser.add_argument("--rank-by", nargs="+", default=["loop3"])
    parser.add_argument("--point-order", nargs="+", default=["score", "consistency"])
    args = parser.parse_args()
    cfg = read_resolved_config(args.build)
    root = Path(cfg.data.root) if cfg.data.root else args.build / "data"
    inputs = {s: args.build / "manifests" / s for s in ("consistency", "label", "single_instance")}
    wnids = category_shards(inputs["consistency"])
    edges = pd.concat([category_edges(inputs, w) for w in wnids], ignore_index=True)
    oracle = TruthOracle(root)
    s = cfg.select
    print(f"{len(edges)} edges, {edges['scores'].map(len).mean():.1f} candidates per edge on average")
    rows = []
    for rank_by in args.rank_by:
        images = ranked_images(inputs["consistency"], rank_by, "category", s.fraction, cfg.seed)
        images_of = category_images(images)
        for keypoints, threshold, order in itertools.product(args.keypoints, args.thresholds, args.point_order):
            chosen = pd.DataFrame([r for w in wnids for r in select_pairs(
                edges[edges["wnid"] == w], images_of(w), set(), rank_by, keypoints, s.pairs_per_image, threshold,
                cfg.seed, order)])
            q = evaluate_dataset(oracle, edges, images, chosen, s.fraction, keypoints, threshold, cfg.seed, order)
            ex, top = q["exported"], q["exported_pairs_unfiltered_topk"]
            rows.append({"rank_by": rank_by, "order": order, "keypoints": keypoints, "threshold": threshold,
                         "pairs": ex.get("pairs", 0), "exported_pck@0.1": ex.get("strict_pck@0.1"),
                         "ci95": ex.get("strict_pck@0.1_ci95"), "on_object": ex.get("on_object"),
                         "same_pairs_topk_pck@0.1": top.get("strict_pck@0.1"),
                         "raw_topk_pck@0.1": q["raw_topk"].get("strict_pck@0.1"), "spearman": q["spearman"]})
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
