"""The reference matcher (`sc_imagenet.matcher`, docs/matcher.md): shapes, the soft-argmax flow and the EPE
objective against known answers, the release reader (CATs' padding, boxes, augmentation, bad files), resumable
training, fine-tuning on the benchmarks' labelled splits, and `sc-imagenet pretrain` → `sc-imagenet eval`.

Everything runs on tiny sizes on the CPU: a 64 × 64 frame, a 4 × 4 cost grid, 8-channel CNN stages. The release
is written in a temp folder by the project's own `write_release` from random JPEGs.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
from PIL import Image

from sc_imagenet.cli import main as cli_main
from sc_imagenet.dataset.scimagenet import CATS_MAX_POINTS, ExportPair, ReleaseError, write_release
from sc_imagenet.matcher import functional as fn
from sc_imagenet.matcher.aggregation import CenterPivot4d, CostTransformer
from sc_imagenet.matcher.checkpoint import MatcherCheckpointError, load_matcher, read_matcher
from sc_imagenet.matcher.data import (
    MatcherDataError,
    PairDataset,
    StepBatches,
    TrainingSource,
    load_pairs,
    steps_per_epoch,
)
from sc_imagenet.matcher.model import MatcherNet
from sc_imagenet.matcher.predictor import Matcher
from sc_imagenet.matcher.pretrain import MatcherTrainingError, pretrain
from sc_imagenet.matcher.settings import MatcherConfig, PretrainSettings

TINY = MatcherConfig(input_size=64, grid=4, cnn_channels=[8, 8, 8, 8], proj_dim=8, dim=16, heads=2, depth=1)
FAST = PretrainSettings(batch_size=2, warmup_steps=2, val_pairs=2, checkpoint_every=2, epochs=2)


def quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------- fixtures


def jpeg(path: Path, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, format="JPEG", quality=90)
    return path


def export_pair(src_dir: Path, wnid: str, split: str, a: int, b: int, n_kps: int = 5) -> ExportPair:
    sizes = {i: (60 + 4 * i, 48 + 2 * i) for i in range(8)}
    rng = np.random.default_rng(100 * a + b)
    paths, kps = [], []
    for i in (a, b):
        w, h = sizes[i]
        paths.append(jpeg(src_dir / wnid / f"{wnid}_{i}.JPEG", w, h, seed=i + (0 if wnid.endswith("1") else 50)))
        kps.append(np.column_stack([rng.uniform(12, w - 12, n_kps), rng.uniform(10, h - 10, n_kps)]))
    (sw, sh), (tw, th) = sizes[a], sizes[b]
    return ExportPair(wnid, split, f"{wnid}_{a}", f"{wnid}_{b}", paths[0], paths[1], f"{wnid}/{wnid}_{a}.JPEG",
                      f"{wnid}/{wnid}_{b}.JPEG", (sw, sh), (tw, th), kps[0], kps[1],
                      [8.0, 6.0, sw - 8.0, sh - 6.0], [8.0, 6.0, tw - 8.0, th - 6.0])


def make_release(base: Path) -> Path:
    """2 categories; trn: 4 pairs (images 0-2), val: 2 pairs (images 3-4). The release is SPair-71k's layout,
    so the `spair` reader of `sc-imagenet eval` reads it too."""
    src = base / "images"
    pairs = []
    for wnid in ("n00000001", "n00000002"):
        trn = [(0, 1), (1, 2)] if wnid.endswith("1") else [(0, 1), (2, 0)]
        pairs += [export_pair(src, wnid, "trn", a, b) for a, b in trn]
        pairs.append(export_pair(src, wnid, "val", 3, 4))
    root = base / "export" / "SC-ImageNet"
    write_release(root, pairs, images="copy")
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def pretrained(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrained")
    pretrain(release, out, config=TINY, settings=FAST.model_copy(update={"epochs": 1}), log=quiet)
    return out / "matcher.pt"


# ---------------------------------------------------------------------------------------------- model


class TestShapes:
    def test_cnn_matcher(self) -> None:
        torch.manual_seed(0)
        net = MatcherNet(TINY)
        img = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
        out = net(img, img.flip(0))
        assert out.flow.shape == (3, 2, 4, 4)
        assert out.cost.shape == (3, 16, 16)
        assert torch.isfinite(out.flow).all()
        assert net.cfg.levels == 3 and net.projection(net.features(img)).shape == (3, 3, 8, 4, 4)

    def test_frozen_registry_backbone(self) -> None:
        cfg = TINY.model_copy(update={"features": "dense-sift", "backbone_input_size": 64})
        net = MatcherNet(cfg)  # dense-sift at 64 px: an 8 × 8 token map, resampled to the 4 × 4 grid
        img = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
        assert net(img, img).flow.shape == (2, 2, 4, 4)
        assert cfg.levels == 1
        assert all(not k.startswith("features.backbone.") for k in net.trainable_state())
        assert all(p.requires_grad for p in net.parameters())  # dense-sift has none; everything else learns

    def test_wrong_input_is_an_error(self) -> None:
        net = MatcherNet(TINY)
        with pytest.raises(ValueError, match=r"expected \(B, 3, 64, 64\)"):
            net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 64, 64, dtype=torch.uint8))

    def test_untrained_aggregator_passes_the_cost_through(self) -> None:
        """Zero-initialised heads: before training the matcher is the soft-argmax read-out of its features."""
        torch.manual_seed(0)
        agg = CostTransformer(grid=4, levels=3, app_dim=8, dim=16, depth=2, heads=2, mlp_ratio=2)
        cost = torch.randn(2, 3, 16, 16)
        out = agg(cost, torch.randn(2, 3, 8, 16), torch.randn(2, 3, 8, 16))
        torch.testing.assert_close(out, cost.mean(1))

    def test_centre_pivot_convolution_is_two_2d_convolutions(self) -> None:
        """A delta in one source cell's target map spreads only over that map (and the delta's target cell's
        source map), by the kernels' weights."""
        conv = CenterPivot4d(1, 1, grid=4)
        torch.nn.init.ones_(conv.over_target.weight)
        torch.nn.init.zeros_(conv.over_target.bias)
        torch.nn.init.zeros_(conv.over_source.weight)
        x = torch.zeros(1, 1, 16, 16)
        x[0, 0, 5, 10] = 1.0  # source cell 5 = (1, 1), target cell 10 = (2, 2)
        y = conv(x)[0, 0]
        assert set(torch.nonzero(y)[:, 0].tolist()) == {5}  # only source cell 5's map
        assert sorted(torch.nonzero(y[5])[:, 0].tolist()) == [5, 6, 7, 9, 10, 11, 13, 14, 15]  # 3 × 3 around (2, 2)


class TestSoftArgmaxFlow:
    def test_peaked_cost_gives_the_peak_offsets(self) -> None:
        g, size = 4, 64
        centres = fn.cell_centres(g, size)
        # source cell (r, c) matches target cell (c, r): a transposition
        perm = torch.tensor([(i % g) * g + i // g for i in range(g * g)])
        cost = torch.zeros(1, g * g, g * g)
        cost[0, torch.arange(g * g), perm] = 1.0
        flow = fn.soft_argmax_flow(cost, g, size, temperature=0.01)
        expected = (centres[perm] - centres).T.reshape(2, g, g)
        torch.testing.assert_close(flow[0], expected, atol=1e-3, rtol=0)
        # cell (0, 1) (centre x 23.5, y 7.5) → cell (1, 0) (x 7.5, y 23.5): flow (−16, +16)
        torch.testing.assert_close(flow[0, :, 0, 1], torch.tensor([-16.0, 16.0]), atol=1e-3, rtol=0)

    def test_flat_cost_goes_to_the_frame_centre(self) -> None:
        flow = fn.soft_argmax_flow(torch.zeros(1, 16, 16), 4, 64, temperature=0.02)
        landing = flow[0].reshape(2, -1).T + fn.cell_centres(4, 64)
        torch.testing.assert_close(landing, torch.full((16, 2), 31.5))

    def test_flow_is_read_bilinearly_between_cell_centres(self) -> None:
        flow = torch.zeros(1, 2, 4, 4)
        flow[0, 0, :, 1] = 4.0  # column 1 (centre x 23.5) moves 4 px right; column 0 (x 7.5) not at all
        pts = torch.tensor([[[7.5, 30.0], [23.5, 30.0], [15.5, 30.0], [-0.5, 30.0]]])
        out = fn.transfer_points(flow, pts, 64)
        # halfway between the centres: half the flow; beyond the outer centre: that cell's flow
        torch.testing.assert_close(out[0, :, 0], torch.tensor([7.5, 27.5, 17.5, -0.5]))
        torch.testing.assert_close(out[0, :, 1], pts[0, :, 1])

    def test_frames_round_trip_and_pixel_centres(self) -> None:
        pts = np.array([[0.0, 0.0], [99.0, 49.0], [12.3, 7.7]])
        frame = fn.to_frame(pts, (50, 100), 256)
        np.testing.assert_allclose(frame[0], [0.78, 2.06])  # (0 + ½)·256/100 − ½, (0 + ½)·256/50 − ½
        np.testing.assert_allclose(fn.from_frame(frame, (50, 100), 256), pts, atol=1e-9)


class TestEndPointError:
    def test_known_answers(self) -> None:
        flow = torch.zeros(1, 2, 4, 4)
        flow[0, 0], flow[0, 1] = 3.0, 4.0  # every point moves by (3, 4): 5 px
        kps = torch.tensor([[[10.0, 10.0], [40.0, 20.0]]])
        mask = torch.ones(1, 2, dtype=torch.bool)
        loss, epe = fn.keypoint_epe(flow, kps, kps, mask, 64)
        assert float(loss) == pytest.approx(5.0) and epe[0].tolist() == pytest.approx([5.0, 5.0])
        loss, _ = fn.keypoint_epe(flow, kps, kps + torch.tensor([3.0, 4.0]), mask, 64)
        assert float(loss) == pytest.approx(0.0, abs=1e-6)

    def test_padded_points_are_masked(self) -> None:
        """CATs pads every pair to 40 points with −1: the padding must count nowhere, and the mean is over the
        real points of the whole batch (pairs with more points weigh more)."""
        flow = torch.zeros(2, 2, 4, 4, requires_grad=True)
        src = torch.full((2, CATS_MAX_POINTS, 2), -1.0)
        trg = torch.full((2, CATS_MAX_POINTS, 2), 500.0)  # huge error on every padded point
        src[0, :3] = trg[0, :3] = torch.tensor([20.0, 20.0])
        trg[0, :3] += torch.tensor([6.0, 8.0])  # 10 px each
        src[1, :1] = trg[1, :1] = torch.tensor([30.0, 30.0])  # 0 px
        mask = torch.zeros(2, CATS_MAX_POINTS, dtype=torch.bool)
        mask[0, :3], mask[1, :1] = True, True
        loss, _ = fn.keypoint_epe(flow, src, trg, mask, 64)
        assert float(loss.detach()) == pytest.approx(30.0 / 4)
        loss.backward()
        assert torch.isfinite(flow.grad).all()

    def test_a_batch_without_points_gives_zero(self) -> None:
        flow = torch.zeros(1, 2, 4, 4, requires_grad=True)
        loss, _ = fn.keypoint_epe(flow, torch.zeros(1, 40, 2), torch.ones(1, 40, 2), torch.zeros(1, 40, dtype=bool), 64)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.equal(flow.grad, torch.zeros_like(flow))

    def test_mutual_filter(self) -> None:
        cost = torch.tensor([[[0.9, 0.3], [0.8, -0.5]]])  # row 1's best (0.8) is not column 0's best (0.9)
        out = fn.mutual_filter(cost)
        assert float(out[0, 0, 0]) == pytest.approx(0.9)  # mutual best keeps its value
        assert float(out[0, 1, 0]) == pytest.approx(0.8 * 1.0 * (0.8 / 0.9))
        assert float(out[0, 1, 1]) == 0.0  # negative similarity: no evidence


# ---------------------------------------------------------------------------------------------- data


class TestReleaseReader:
    def test_splits_padding_boxes(self, release: Path) -> None:
        trn = load_pairs(TrainingSource("release", release, "trn"))
        val = load_pairs(TrainingSource("release", release, "val"))
        assert (len(trn), len(val)) == (4, 2)
        ds = PairDataset(trn, size=64)
        item = ds[0]
        assert item["src"].shape == (3, 64, 64) and item["src"].dtype == torch.uint8
        assert item["src_kps"].shape == (CATS_MAX_POINTS, 2) and int(item["n_pts"]) == 5
        assert item["mask"].sum() == 5 and (item["src_kps"][5:] == -1).all()  # CATs' −1 padding
        pair = trn[0]
        h, w = np.asarray(Image.open(pair.trg_image)).shape[:2]
        np.testing.assert_allclose(item["trg_kps"][:5].numpy(), fn.to_frame(pair.trg_kps, (h, w), 64), rtol=1e-5)
        box = pair.trg_box  # the PCK length: the target box's max side, resized into the frame
        assert float(item["threshold"]) == pytest.approx(max((box[2] - box[0]) * 64 / w, (box[3] - box[1]) * 64 / h))

    def test_augmentation_is_seeded_and_keeps_every_point(self, release: Path) -> None:
        ds = PairDataset(load_pairs(TrainingSource("release", release, "trn")), size=64, augment=True)
        a, b, c = ds[(1, 7, 0)], ds[(1, 7, 0)], ds[(1, 7, 1)]
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["src"], c["src"]) or not torch.equal(a["src_kps"], c["src_kps"])
        for seed in range(20):
            item = ds[(seed % 4, seed, 0)]
            real = item["src_kps"][item["mask"]]
            assert ((real >= -0.5) & (real <= 63.5)).all()  # the crop never loses a keypoint

    def test_step_order_is_a_function_of_the_step(self) -> None:
        whole = list(StepBatches(5, 2, seed=3, start=0, stop=9))
        assert steps_per_epoch(5, 2) == 3 and [len(b) for b in whole[:3]] == [2, 2, 1]
        assert sorted(i for b in whole[:3] for i, _, _ in b) == [0, 1, 2, 3, 4]  # every pair once per epoch
        assert list(StepBatches(5, 2, seed=3, start=4, stop=9)) == whole[4:]

    def test_unreadable_image_names_the_file(self, tmp_path: Path) -> None:
        root = make_release(tmp_path)
        pairs = load_pairs(TrainingSource("release", root, "trn"))
        bad = pairs[0].src_image
        bad.write_bytes(b"not an image at all")
        with pytest.raises(MatcherDataError, match=rf"image {bad} \(pair {pairs[0].pair_id}\) cannot be decoded"):
            PairDataset(pairs, size=64)[0]
        # and through pretrain, which stops on it
        with pytest.raises(MatcherDataError, match=str(bad)):
            pretrain(root, tmp_path / "run", config=TINY, settings=FAST.model_copy(update={"augment": False}),
                     log=quiet)

    def test_missing_image_names_the_file(self, tmp_path: Path) -> None:
        root = make_release(tmp_path)
        victim = next((root / "JPEGImages" / "n00000002").iterdir())
        victim.unlink()
        with pytest.raises(ReleaseError, match=f"image {victim} is missing"):
            load_pairs(TrainingSource("release", root, "trn"))

    def test_not_a_release(self, tmp_path: Path) -> None:
        with pytest.raises(MatcherDataError, match="does not exist"):
            load_pairs(TrainingSource("release", tmp_path / "nothing", "trn"))


# ---------------------------------------------------------------------------------------------- training


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_matcher(path)["model"]


class TestResume:
    def test_interrupted_run_resumes_to_the_uninterrupted_weights(self, release: Path, tmp_path: Path) -> None:
        """4 train pairs, batch 2, 2 epochs = 4 steps, a checkpoint every 2. The interrupted run stops (an
        exception, as Ctrl-C) after step 3, so its last checkpoint is step 2; the rerun resumes at step 2 and
        must end with the same weights as the uninterrupted run, bit for bit, and the same log steps."""
        whole = pretrain(release, tmp_path / "whole", config=TINY, settings=FAST, log=quiet)
        assert (whole.steps, whole.total_steps, whole.resumed_from) == (4, 4, None)

        def stop_at_3(step: int, total: int, row: dict) -> None:
            if step == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            pretrain(release, tmp_path / "cut", config=TINY, settings=FAST, log=quiet, on_step=stop_at_3)
        assert read_matcher(tmp_path / "cut" / "matcher.pt")["step"] == 2
        lines: list[str] = []
        again = pretrain(release, tmp_path / "cut", config=TINY, settings=FAST, log=lines.append)
        assert again.resumed_from == 2 and again.steps == 4
        assert "resuming" in lines[0] and "step 2 of 4" in lines[0]
        a, b = weights(tmp_path / "whole" / "matcher.pt"), weights(tmp_path / "cut" / "matcher.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        log_a = pd.read_parquet(tmp_path / "whole" / "train_log.parquet")
        log_b = pd.read_parquet(tmp_path / "cut" / "train_log.parquet")
        assert log_a["step"].tolist() == log_b["step"].tolist() == [1, 2, 3, 4]
        assert log_a["loss"].tolist() == log_b["loss"].tolist()
        assert list(log_a.columns) == ["step", "epoch", "loss", "lr", "seconds", "val_pck@0.05", "val_pck@0.1"]
        assert log_a["val_pck@0.1"].notna().tolist() == [False, True, False, True]  # after each epoch

    def test_more_epochs_continue_and_other_settings_are_refused(self, release: Path, tmp_path: Path) -> None:
        out = tmp_path / "run"
        pretrain(release, out, config=TINY, settings=FAST.model_copy(update={"epochs": 1}), log=quiet)
        done = pretrain(release, out, config=TINY, settings=FAST.model_copy(update={"epochs": 1}), log=quiet)
        assert done.resumed_from == 2 and done.steps == 2  # finished: nothing left to train
        more = pretrain(release, out, settings=FAST, log=quiet)  # the architecture comes from matcher.pt
        assert (more.resumed_from, more.steps) == (2, 4)
        with pytest.raises(MatcherTrainingError, match=r"another run; it differs in: settings\.lr"):
            pretrain(release, out, settings=FAST.model_copy(update={"lr": 1e-3}), log=quiet)
        with pytest.raises(MatcherTrainingError, match="another architecture: grid"):
            pretrain(release, out, config=TINY.model_copy(update={"grid": 2}), settings=FAST, log=quiet)


class TestFineTune:
    def test_init_on_the_release_through_the_spair_reader(self, release: Path, pretrained: Path,
                                                          tmp_path: Path) -> None:
        """The release has SPair-71k's layout, so the `spair` reader's trn split fine-tunes on it; `init` keeps
        the architecture and starts from the weights (a fresh optimizer, step 0)."""
        res = pretrain(TrainingSource("spair", release, "trn"), tmp_path / "ft", pretrained,
                       settings=FAST.model_copy(update={"max_steps": 1}), log=quiet)
        assert (res.steps, res.train_pairs, res.val_pairs) == (1, 4, 2)
        state = read_matcher(tmp_path / "ft" / "matcher.pt")
        assert state["config"] == read_matcher(pretrained)["config"]
        assert state["run"]["init"] == str(pretrained.resolve())
        with pytest.raises(MatcherTrainingError, match="another architecture"):
            pretrain(release, tmp_path / "ft2", pretrained, config=TINY.model_copy(update={"dim": 32}), log=quiet)

    def test_pf_pascal_trn(self, tmp_path: Path, pretrained: Path) -> None:
        root = tmp_path / "PF-PASCAL"
        (root / "JPEGImages").mkdir(parents=True)
        (root / "Annotations" / "bird").mkdir(parents=True)
        rng = np.random.default_rng(0)
        for n in range(3):
            jpeg(root / "JPEGImages" / f"2009_{n}.jpg", 50, 40, seed=n)
            kps = np.column_stack([rng.uniform(5, 45, 6), rng.uniform(5, 35, 6)]) + 1  # MATLAB 1-based
            kps[n] = np.nan  # keypoint n is not visible in image n
            scipy.io.savemat(root / "Annotations" / "bird" / f"2009_{n}.mat", {"kps": kps, "bbox": [[1, 1, 40, 30]]})
        rows = [[f"JPEGImages/2009_{a}.jpg", f"JPEGImages/2009_{b}.jpg", 3, 0] for a, b in [(0, 1), (1, 2), (2, 0)]]
        pd.DataFrame(rows, columns=["source_image", "target_image", "class", "flip"]).to_csv(root / "trn_pairs.csv",
                                                                                             index=False)
        pairs = load_pairs(TrainingSource("pf-pascal", root, "trn"))
        assert [len(p.src_kps) for p in pairs] == [4, 4, 4]  # 6 rows, two NaN in one image or the other
        lines: list[str] = []
        res = pretrain(TrainingSource("pf-pascal", root, "trn"), tmp_path / "ft", pretrained,
                       settings=FAST.model_copy(update={"max_steps": 1}), log=lines.append)
        assert res.steps == 1 and res.val_pairs == 0
        assert any("no validation" in line and "val_pairs.csv" in line for line in lines)

    def test_synthetic_ground_truth(self, tmp_path: Path, pretrained: Path) -> None:
        from sc_imagenet.synth import SynthConfig, generate_dataset

        root = tmp_path / "synth"
        generate_dataset(root, SynthConfig(seed=5, images_per_category=2), progress=False)
        src = TrainingSource("synthetic", root, "all", limit=4, seed=1)
        assert len(load_pairs(src)) == 4 and src.validation() is None
        res = pretrain(src, tmp_path / "ft", pretrained, settings=FAST.model_copy(update={"max_steps": 2}),
                       log=quiet)
        assert res.steps == 2 and math.isfinite(res.last_loss)


class TestPredictor:
    def test_transfer_maps_original_pixels(self, pretrained: Path) -> None:
        matcher = Matcher(load_matcher(pretrained))
        rng = np.random.default_rng(0)
        src, trg = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 70), (90, 30)))
        pts = np.array([[0.0, 0.0], [69.0, 39.0], [35.0, 20.0]])
        pred = matcher(src, trg, pts)
        assert pred.shape == (3, 2) and pred.dtype == np.float32 and np.isfinite(pred).all()
        assert (pred[:, 0] >= -0.5).all() and (pred[:, 0] <= 29.5).all()  # inside the 30 × 90 target
        assert matcher(src, trg, np.zeros((0, 2))).shape == (0, 2)

    def test_bad_checkpoints(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            load_matcher(tmp_path / "none.pt")
        buf = io.BytesIO()
        torch.save({"settings": {}, "model": {}}, buf)  # a generator.pt, say
        (tmp_path / "generator.pt").write_bytes(buf.getvalue())
        with pytest.raises(MatcherCheckpointError, match="is not a matcher checkpoint"):
            load_matcher(tmp_path / "generator.pt")


# ---------------------------------------------------------------------------------------------- commands


class TestCommands:
    def test_pretrain_then_eval_through_the_cli(self, release: Path, pretrained: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        """Fine-tune the tiny matcher on the release with `sc-imagenet pretrain --init`, then score it with
        `sc-imagenet eval --method matcher nn-refine-disp` on the release's val split (SPair layout)."""
        out = tmp_path / "ft"
        assert cli_main(["pretrain", "--release", str(release), "--out", str(out), "--init", str(pretrained),
                         "--epochs", "1", "--batch-size", "2", "--device", "cpu"]) == 0
        summary = capsys.readouterr().out
        assert f"matcher: {out / 'matcher.pt'} at step 2/2" in summary and "val PCK@0.1" in summary
        report = tmp_path / "eval.json"
        assert cli_main(["eval", "--benchmark", "spair", "--root", str(release), "--split", "val",
                         "--method", "matcher", "nn-refine-disp", "--matcher", str(out / "matcher.pt"),
                         "--input-size", "64", "--device", "cpu", "--json", str(report)]) == 0
        doc = json.loads(report.read_text())
        rows = {r["method"]: r for r in doc["results"]}
        assert set(rows) == {"matcher", "nn-refine-disp"}
        assert rows["matcher"]["pairs_scored"] == 2 and 0 <= rows["matcher"]["pck@0.1"] <= 1
        assert rows["matcher"]["matcher"] == str(out / "matcher.pt")
        assert doc["differences"]  # paired differences against the first method

    def test_errors_are_one_line_and_exit_2(self, release: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        cases = [
            (["pretrain", "--out", str(tmp_path / "a")], "--release"),
            (["pretrain", "--benchmark", "pf-willow", "--data", str(tmp_path), "--out", str(tmp_path / "a")],
             "fine-tuning reads spair, pf-pascal, synthetic"),
            (["pretrain", "--release", str(tmp_path / "none"), "--out", str(tmp_path / "a")], "does not exist"),
            (["pretrain", "--release", str(release), "--out", str(tmp_path / "a"), "--grid", "2"], "grid"),
            (["pretrain", "--release", str(release), "--out", str(tmp_path / "a"), "--features", "nope"],
             "unknown backbone 'nope'"),
            (["pretrain", "--release", str(release), "--out", str(tmp_path / "a"), "--init", str(tmp_path / "x.pt")],
             "--init"),
            (["eval", "--benchmark", "spair", "--root", str(release), "--split", "val", "--method", "matcher"],
             "--matcher"),
        ]
        for argv, needle in cases:
            assert cli_main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.startswith("error: ") and needle in err, (argv, err)

    @pytest.mark.slow
    def test_default_architecture_end_to_end(self, release: Path, tmp_path: Path) -> None:
        """The default 256 × 256 / 16 × 16 matcher through both commands (a few seconds per step on a CPU)."""
        out = tmp_path / "pre"
        assert cli_main(["pretrain", "--release", str(release), "--out", str(out), "--max-steps", "2",
                         "--batch-size", "2", "--device", "cpu"]) == 0
        assert cli_main(["eval", "--benchmark", "spair", "--root", str(release), "--split", "val",
                         "--method", "matcher", "--matcher", str(out / "matcher.pt"), "--device", "cpu"]) == 0
