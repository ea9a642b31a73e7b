"""Tests of the correspondence evaluation: PCK arithmetic, pair sampling, methods, the runner and CLI."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sc_imagenet.evaluate import (
    METHODS,
    EvalPair,
    PCKAccumulator,
    dense_pck,
    evaluate,
    from_flow,
    from_matcher,
    identity_transfer,
    mutual_nn,
    mutual_nn_transfer,
    nearest_neighbour_transfer,
    pck,
    register_method,
    sample_eval_pairs,
    sample_object_points,
)
from sc_imagenet.evaluate import pairs as pairs_module
from sc_imagenet.evaluate.methods import Method, soft_argmax_3x3, transfer_by_matches
from sc_imagenet.evaluate.pairs import READABLE_BROKEN
from sc_imagenet.evaluate.run import main
from sc_imagenet.matching.backbones import Backbone, Features, create_backbone
from sc_imagenet.matching.geometry import cell_centers
from sc_imagenet.synth import SynthConfig, generate_dataset, load_groundtruth, true_correspondence

SMALL = SynthConfig(seed=5, images_per_category=6)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate") / "data"
    generate_dataset(root, SMALL, progress=False)
    return root


@pytest.fixture(scope="module")
def pairs(root: Path) -> list[EvalPair]:
    return sample_eval_pairs(root, 30, seed=0)


class PatchPixels(Backbone):
    """A tiny test backbone: the image resized to 64×64, each 8×8 patch's centred pixels as its token."""

    name = "test-patch-pixels"

    def __init__(self, input_size: int = 64, patch_size: int = 8) -> None:
        super().__init__()
        self.input_size, self.patch_size, self.out_dim = input_size, patch_size, 3 * patch_size**2

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        size = (self.input_size, self.input_size)
        return torch.cat([F.interpolate(torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255, size=size,
                                        mode="bilinear", antialias=True) for im in images])

    def forward(self, x: torch.Tensor) -> Features:
        g = self.input_size // self.patch_size
        tokens = F.unfold(x, self.patch_size, stride=self.patch_size).transpose(1, 2)  # (B, g*g, C)
        tokens = tokens - tokens.mean(-1, keepdim=True)
        return Features(tokens=tokens, grid=(g, g), global_token=tokens.mean(1))


def oracle(root: Path, pairs: Sequence[EvalPair]) -> Method:
    """Perfect transfer from the ground truth; relies on `evaluate` visiting the pairs in order."""
    it: Iterator[EvalPair] = iter(pairs)

    def transfer(src_rgb: np.ndarray, trg_rgb: np.ndarray, pts: np.ndarray) -> np.ndarray:
        p = next(it)
        assert src_rgb.shape[:2] == p.src_hw and trg_rgb.shape[:2] == p.trg_hw
        xy, valid = true_correspondence(root, p.src_id, p.trg_id, pts)
        return np.where(valid[:, None], xy, np.nan).astype(np.float32)

    return transfer


# --- PCK arithmetic -------------------------------------------------------------------------------

BOX = np.array([10, 20, 110, 70], np.float32)  # w = 100, h = 50: threshold unit 100 px


def test_pck_perfect_prediction() -> None:
    pts = np.random.default_rng(0).uniform(0, 100, (7, 2)).astype(np.float32)
    assert pck(pts, pts, BOX) == {"n": 7, "pck@0.05": 1.0, "pck@0.1": 1.0}


def test_pck_threshold_is_alpha_times_max_side_of_target_box() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 200, (50, 2))
    angle = rng.uniform(0, 2 * np.pi, 50)
    unit = np.stack([np.cos(angle), np.sin(angle)], 1)
    off = true + unit * (0.1 * 100 + 1e-3)
    assert pck(off, true, BOX, alphas=(0.1, 0.2)) == {"n": 50, "pck@0.1": 0.0, "pck@0.2": 1.0}
    assert pck(true + unit * (0.1 * 100 - 1e-3), true, BOX, alphas=(0.1,))["pck@0.1"] == 1.0
    # the max side decides: a tall box (w = 30, h = 200) gives a 20 px unit at α = 0.1
    tall = np.array([0, 0, 30, 200])
    assert pck(true + unit * 19.9, true, tall, alphas=(0.1,))["pck@0.1"] == 1.0
    assert pck(true + unit * 20.1, true, tall, alphas=(0.1,))["pck@0.1"] == 0.0


def test_pck_valid_mask_nan_and_empty() -> None:
    true = np.zeros((4, 2))
    pred = np.array([[0, 0], [np.nan, 0], [50, 50], [0, 1]], np.float32)
    assert pck(pred, true, BOX, alphas=(0.1,)) == {"n": 4, "pck@0.1": 0.5}
    assert pck(pred, true, BOX, alphas=(0.1,), valid=[True, False, False, True]) == {"n": 2, "pck@0.1": 1.0}
    assert np.isnan(pck(pred, true, BOX, valid=np.zeros(4, bool))["pck@0.05"])
    with pytest.raises(ValueError):
        pck(pred[:3], true, BOX)


def test_accumulator_per_keypoint_headline_and_per_pair_mean() -> None:
    acc = PCKAccumulator(alphas=(0.1,))
    acc.add(np.zeros((3, 2)), np.zeros((3, 2)), BOX)  # 3/3 correct
    acc.add(np.full((1, 2), 99.0), np.zeros((1, 2)), BOX)  # 0/1
    acc.add(np.zeros((2, 2)), np.zeros((2, 2)), BOX, valid=[False, False])  # no valid point: per-pair skips it
    assert acc.summary() == {"pck@0.1": 0.75, "pck_per_pair@0.1": 0.5}
    assert (acc.n_pairs, acc.n_points) == (3, 4)


# --- pairs ----------------------------------------------------------------------------------------


def test_pairs_deterministic_pure_distinct(root: Path, pairs: list[EvalPair]) -> None:
    again = sample_eval_pairs(root, 30, seed=0)
    assert [(p.src_id, p.trg_id) for p in again] == [(p.src_id, p.trg_id) for p in pairs]
    other = sample_eval_pairs(root, 30, seed=1)
    assert [(p.src_id, p.trg_id) for p in other] != [(p.src_id, p.trg_id) for p in pairs]
    assert len(pairs) == 30
    gt = load_groundtruth(root)
    keys = set()
    for p in pairs:
        src, trg = gt.image(p.src_id), gt.image(p.trg_id)
        assert p.src_id != p.trg_id
        assert src["wnid"] == trg["wnid"] == p.wnid and src["kind"] == "object"
        assert src["n_instances"] == trg["n_instances"] == 1
        assert src["broken"] in READABLE_BROKEN and trg["broken"] in READABLE_BROKEN
        assert (p.src_path, p.trg_path) == (src["rel_path"], trg["rel_path"])
        keys.add(frozenset((p.src_id, p.trg_id)))
    assert len(keys) == len(pairs)
    assert len({p.wnid for p in pairs}) > 1


def test_pair_keypoints_match_groundtruth(root: Path, pairs: list[EvalPair]) -> None:
    gt = load_groundtruth(root)
    for p in pairs:
        s_row, t_row = gt.instance_rows(p.src_id).iloc[0], gt.instance_rows(p.trg_id).iloc[0]
        n = len(p.keypoint_names)
        assert p.src_kps.shape == p.trg_kps.shape == (n, 2) and p.src_kps.dtype == np.float32
        np.testing.assert_array_equal(p.src_kps.reshape(-1), s_row["keypoints"])
        np.testing.assert_array_equal(p.valid, np.asarray(s_row["keypoint_visible"]) &
                                      np.asarray(t_row["keypoint_visible"]))
        np.testing.assert_array_equal(p.trg_bbox, t_row["bbox"])
        assert p.n_valid >= 1


def test_pairs_exhaust_small_pool_and_multi_instance(root: Path) -> None:
    everything = sample_eval_pairs(root, 10_000, seed=3)
    gt = load_groundtruth(root)
    img = gt.images
    single = img[(img.kind == "object") & (img.n_instances == 1) & img.broken.isin(sorted(READABLE_BROKEN))]
    upper = sum(n * (n - 1) // 2 for n in single.groupby("wnid").size())
    assert 0 < len(everything) <= upper
    assert len({frozenset((p.src_id, p.trg_id)) for p in everything}) == len(everything)
    multi = sample_eval_pairs(root, 10_000, seed=3, single_instance_only=False)
    assert len(multi) > len(everything)
    assert sample_eval_pairs(root, 0) == []
    held_out = {p.src_id for p in everything[:5]}
    assert not held_out & {i for p in sample_eval_pairs(root, 50, exclude=held_out) for i in (p.src_id, p.trg_id)}


def test_pairs_lazy_sampling_for_large_pools(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs_module, "_PERMUTE_MAX", 0)  # force the draw-with-rejection path
    drawn = sample_eval_pairs(root, 20, seed=2)
    assert len(drawn) == 20 and len({frozenset((p.src_id, p.trg_id)) for p in drawn}) == 20
    assert all(p.src_id != p.trg_id and p.src_id.split("_")[0] == p.trg_id.split("_")[0] == p.wnid for p in drawn)
    assert [(p.src_id, p.trg_id) for p in drawn] == [(p.src_id, p.trg_id) for p in sample_eval_pairs(root, 20, 2)]


def test_missing_groundtruth_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="_groundtruth"):
        sample_eval_pairs(tmp_path, 5)
    assert main(["--root", str(tmp_path), "--method", "identity"]) == 2
    assert "_groundtruth" in capsys.readouterr().err


def test_both_evaluation_clis_name_checkpoints_alike(tmp_path: Path) -> None:
    """`--generator` is the trained generator and `--backbone-checkpoint` the backbone's weights in
    `sc-imagenet eval` and in `python -m sc_imagenet.evaluate`; neither has an ambiguous `--checkpoint`."""
    from sc_imagenet.cli import make_parser

    flags = ["--generator", "g.pt", "--backbone-checkpoint", "w.pt"]
    args = make_parser().parse_args(["eval", "--benchmark", "spair", "--root", str(tmp_path), *flags])
    assert (args.generator, args.backbone_checkpoint) == (Path("g.pt"), Path("w.pt"))
    assert main(["--root", str(tmp_path), *flags]) == 2  # parsed; stops at the missing _groundtruth/
    for argv in (["eval", "--benchmark", "spair", "--root", str(tmp_path), "--checkpoint", "g.pt"],
                 ["--root", str(tmp_path), "--checkpoint", "w.pt"]):
        with pytest.raises(SystemExit):
            (make_parser().parse_args if argv[0] == "eval" else main)(argv)


# --- oracle, identity, dense ----------------------------------------------------------------------


def test_oracle_scores_near_one_and_identity_low(root: Path, pairs: list[EvalPair]) -> None:
    res = evaluate(oracle(root, pairs), pairs, root)
    assert res["pck@0.1"] >= 0.99 and res["n_pairs"] == len(pairs)
    assert res["n_keypoints"] == sum(p.n_valid for p in pairs)
    ident = evaluate(identity_transfer, pairs, root)
    assert ident["pck@0.1"] < 0.3


def test_dense_pck_oracle_and_points(root: Path, pairs: list[EvalPair]) -> None:
    p = pairs[0]
    pts = sample_object_points(root, p.src_id, 64, seed=0)
    np.testing.assert_array_equal(pts, sample_object_points(root, p.src_id, 64, seed=0))
    mask = load_groundtruth(root).visible_mask(p.src_id, 0)
    assert pts.shape == (64, 2) and mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    true, valid = true_correspondence(root, p.src_id, p.trg_id, pts)
    assert valid.sum() > 32  # most object points have a visible counterpart in a single-instance target
    assert dense_pck(root, p.src_id, p.trg_id, pts, true, p.trg_bbox)["pck@0.05"] == 1.0
    res = evaluate(oracle(root, pairs[:5]), pairs[:5], root, dense_points=40)
    assert res["dense_pck@0.05"] == 1.0 and 0 < res["n_dense_points"] <= 200


# --- methods --------------------------------------------------------------------------------------


def test_mutual_nn_pairs_are_mutual() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.3, 0.7], [0.1, 0.6, 0.2]])
    s, t = mutual_nn(sim)
    assert s.tolist() == [0, 2, 3] and t.tolist() == [0, 2, 1]  # row 1's best (col 0) prefers row 0
    rnd = torch.randn(50, 40, generator=torch.Generator().manual_seed(0))
    s, t = mutual_nn(rnd)
    assert len(s) >= 1
    assert (rnd[s].argmax(1).numpy() == t).all() and (rnd[:, t].argmax(0).numpy() == s).all()
    fwd, bwd = rnd.argmax(1).numpy(), rnd.argmax(0).numpy()
    assert set(s.tolist()) == {i for i in range(50) if bwd[fwd[i]] == i}


def test_transfer_by_matches_uses_nearest_match_offset() -> None:
    src = np.array([[10, 10], [90, 50]], np.float32)
    scaled = (src + 0.5) * 2 - 0.5  # the same normalised position in a target twice the size
    trg = scaled + np.array([[4, 4], [40, 0]], np.float32)
    pts = np.array([[12, 9], [80, 60]], np.float32)
    out = transfer_by_matches(pts, src, trg, (100, 100), (200, 200))
    expect = (pts + 0.5) * 2 - 0.5 + np.array([[4, 4], [40, 0]])
    np.testing.assert_allclose(out, expect, atol=1e-4)
    empty = transfer_by_matches(pts, np.zeros((0, 2)), np.zeros((0, 2)), (100, 100), (200, 200))
    np.testing.assert_allclose(empty, (pts + 0.5) * 2 - 0.5, atol=1e-4)


def test_from_matcher_and_from_flow_adapters() -> None:
    src_rgb, trg_rgb = np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60, 3), np.uint8)
    shift = np.array([5.0, -3.0], np.float32)

    def match(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.random.default_rng(0).uniform(0, 39, (k, 2)).astype(np.float32)
        return s, s + shift, np.ones(k, np.float32)

    pts = np.array([[3, 4], [30, 20]], np.float32)
    np.testing.assert_allclose(from_matcher(match, k=16)(src_rgb, trg_rgb, pts), pts + shift, atol=1e-4)

    grid = (4, 6)
    centres = cell_centers(grid, (40, 60))

    def flow(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        return grid, centres + shift

    on_centres = centres[[0, 7, 23]]
    np.testing.assert_allclose(from_flow(flow)(src_rgb, trg_rgb, on_centres), on_centres + shift, atol=1e-4)
    mid = np.array([[17.0, 12.0]], np.float32)  # between cells: bilinear interpolation of a shift is a shift
    np.testing.assert_allclose(from_flow(flow, mode="bilinear")(src_rgb, trg_rgb, mid), mid + shift, atol=1e-4)
    # displacement keeps a point's offset inside its cell; `cell` snaps it to the cell's target centre
    off = centres[[7]] + np.array([[3.0, -2.0]], np.float32)
    np.testing.assert_allclose(from_flow(flow, mode="displacement")(src_rgb, trg_rgb, off), off + shift, atol=1e-4)
    np.testing.assert_allclose(from_flow(flow, mode="cell")(src_rgb, trg_rgb, off), centres[[7]] + shift, atol=1e-4)
    big = np.zeros((80, 120, 3), np.uint8)  # a target twice the size: the sub-cell offset scales with it
    np.testing.assert_allclose(from_flow(flow, mode="displacement")(src_rgb, big, off),
                               centres[[7]] + shift + np.array([[6.0, -4.0]]), atol=1e-4)
    with pytest.raises(ValueError, match="flow mode"):
        from_flow(flow, mode="nearest")  # type: ignore[arg-type]


def test_soft_argmax_refinement() -> None:
    grid = (3, 3)
    flat = torch.zeros(1, 9)
    flat[0, 4] = 1.0
    np.testing.assert_allclose(soft_argmax_3x3(flat, torch.tensor([4]), grid), [[1.0, 1.0]], atol=1e-5)
    flat[0, 5] = 1.0  # a tie with the right neighbour: halfway
    np.testing.assert_allclose(soft_argmax_3x3(flat, torch.tensor([4]), grid), [[1.5, 1.0]], atol=1e-5)
    corner = torch.zeros(1, 9)  # off-grid neighbours are ignored: uniform over the 4 in-grid cells
    np.testing.assert_allclose(soft_argmax_3x3(corner, torch.tensor([0]), grid), [[0.5, 0.5]], atol=1e-5)


def test_nn_and_mnn_run_on_synthetic_pairs(root: Path, pairs: list[EvalPair]) -> None:
    bb = create_backbone("dense-sift")
    for method in (nearest_neighbour_transfer(bb), nearest_neighbour_transfer(bb, refine=True),
                   mutual_nn_transfer(bb)):
        res = evaluate(method, pairs[:4], root, dense_points=20)
        for key in ("pck@0.05", "pck@0.1", "pck_per_pair@0.1", "dense_pck@0.1"):
            assert 0.0 <= res[key] <= 1.0
        assert res["pck@0.05"] <= res["pck@0.1"] and res["n_pairs"] == 4


def test_nn_recovers_a_pure_translation() -> None:
    """Same image content shifted by whole cells: NN and MNN move points by exactly that shift."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # 64×80, 8 px blocks
    src, trg = big[:, :64], big[:, 16:]  # target = source shifted left by 2 cells (16 px)
    bb = PatchPixels()
    pts = np.array([[20.0, 12.0], [44.0, 36.0], [60.0, 60.0]], np.float32)  # columns ≥ 16: visible in both
    for method in (nearest_neighbour_transfer(bb), mutual_nn_transfer(bb)):
        out = method(src, trg, pts)
        assert np.abs(out - (pts - [16, 0])).max() <= 4.0  # within half a cell (cell centres vs points)


def test_registry_and_cli_table(root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert {"nn", "nn-refine", "mnn", "identity"} <= set(METHODS)
    with pytest.raises(ValueError):
        register_method("nn", METHODS["nn"])
    out_json = tmp_path / "res.json"
    assert main(["--root", str(root), "--method", "identity", "--pairs", "8", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "identity" in text and "pck@0.1" in text and out_json.is_file()
