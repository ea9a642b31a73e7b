"""SPair-71k (Min et al., 2019): 70,958 pairs of 18 PASCAL categories (test split: 12,234).

    <root>/Layout/large/{trn,val,test}.txt      one pair id per line: `<n>-<src>-<trg>:<category>`
    <root>/PairAnnotation/<split>/<pair id>.json
    <root>/JPEGImages/<category>/<image>.jpg

A pair's JSON holds `src_kps` / `trg_kps` (K × 2 lists of `[x, y]`, only the keypoints annotated in
both images, in the same order), `kps_ids` (their numbers in the category's keypoint list, strings),
`src_bndbox` / `trg_bndbox` (`[x1, y1, x2, y2]`), `src_imname`, `trg_imname`, `src_imsize`,
`category`, and the difficulty flags (`viewpoint_variation`, `scale_variation`, `truncation`,
`occlusion`, `mirror`). Image names come from `src_imname` / `trg_imname`; a file without them gets
HPF's reading of the pair id (`<src>.jpg`, `<trg>.jpg`). Keypoints are taken as published, like every
public loader does (no shift). PCK length: max(x2 − x1, y2 − y1) of the TARGET box (`trg_bndbox`).

The project's own release (`<out>/export/SC-ImageNet`, splits trn and val) has this layout too and
can be scored with `--benchmark spair --split val`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sc_imagenet.evaluate.benchmarks.base import (
    Benchmark,
    BenchmarkError,
    BenchmarkPair,
    BenchmarkSpec,
    bbox_length,
    keypoint_array,
    read_json,
    register_benchmark,
    require_dir,
    require_file,
)

LAYOUT_DIR = "Layout/large"
ANNOTATION_DIR = "PairAnnotation"
IMAGE_DIR = "JPEGImages"
REQUIRED_KEYS = ("src_kps", "trg_kps", "trg_bndbox", "category")
THRESHOLD_RULE = "α × max side of the target bounding box (trg_bndbox)"


def read_layout(path: Path) -> list[str]:
    """The pair ids of a split file (blank lines ignored)."""
    require_file(path, "SPair-71k split file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"{path} cannot be read: {exc}") from None
    ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        raise BenchmarkError(f"{path} lists no pairs")
    return ids


def _names_from_id(pair_id: str) -> tuple[str, str]:
    parts = pair_id.split(":")[0].split("-")
    if len(parts) < 3:
        raise BenchmarkError(f"pair id {pair_id!r} is not `<n>-<src>-<trg>:<category>`")
    return parts[1] + ".jpg", parts[2] + ".jpg"


def _kp_ids(data: dict, n: int, where: str) -> np.ndarray:
    ids = data.get("kps_ids")
    if ids is None:
        return np.arange(n, dtype=np.int64)
    try:
        out = np.array([int(v) for v in ids], np.int64)
    except (TypeError, ValueError):
        raise BenchmarkError(f"{where}: kps_ids must be integers, got {ids!r}") from None
    if len(out) != n:
        raise BenchmarkError(f"{where}: {len(out)} kps_ids for {n} keypoints")
    return out


def read_pair(path: Path, pair_id: str) -> BenchmarkPair:
    data = read_json(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BenchmarkError(f"{path} lacks {', '.join(missing)}")
    src_kps = keypoint_array(data["src_kps"], f"{path} src_kps")
    trg_kps = keypoint_array(data["trg_kps"], f"{path} trg_kps")
    if len(src_kps) != len(trg_kps):
        raise BenchmarkError(f"{path}: {len(src_kps)} src_kps but {len(trg_kps)} trg_kps")
    category = data["category"]
    if not isinstance(category, str) or not category or "/" in category or category in (".", ".."):
        raise BenchmarkError(f"{path}: category must be a folder name, got {category!r}")
    if "src_imname" in data and "trg_imname" in data:
        names = (str(data["src_imname"]), str(data["trg_imname"]))
    else:
        names = _names_from_id(pair_id)
    for name in names:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise BenchmarkError(f"{path}: image name must be a file name, got {name!r}")
    return BenchmarkPair(pair_id, category, f"{IMAGE_DIR}/{category}/{names[0]}", f"{IMAGE_DIR}/{category}/{names[1]}",
                         src_kps.astype(np.float32), trg_kps.astype(np.float32), np.ones(len(src_kps), bool),
                         _kp_ids(data, len(src_kps), str(path)), bbox_length(data["trg_bndbox"], f"{path} trg_bndbox"))


def load(root: Path, split: str, limit: int | None, seed: int) -> Benchmark:
    """The split's pairs; with `limit`, only the first `limit` annotations are read."""
    del seed
    ids = read_layout(root / LAYOUT_DIR / f"{split}.txt")
    ann_dir = require_dir(root / ANNOTATION_DIR / split, "SPair-71k annotation folder")
    require_dir(root / IMAGE_DIR, "SPair-71k image folder")
    pairs = [read_pair(ann_dir / f"{pid}.json", pid) for pid in (ids if limit is None else ids[:limit])]
    return Benchmark("spair", root, split, "spair-71k", THRESHOLD_RULE, pairs, len(ids))


register_benchmark(BenchmarkSpec(
    "spair", load, ("test", "val", "trn"),
    "SPair-71k: Layout/large/<split>.txt, PairAnnotation/<split>/, JPEGImages/<category>/"))
