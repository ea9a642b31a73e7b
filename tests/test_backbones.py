"""Backbone registry: checkpoint layouts, pos_embed resampling, strict-load errors, dense-sift answers.

ViTs are tiny (2 blocks, 32 channels) with random weights built here; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sc_imagenet.matching.backbones import (
    BACKBONES,
    Backbone,
    CheckpointError,
    Features,
    create_backbone,
    list_backbones,
)
from sc_imagenet.matching.backbones.checkpoints import remap_state_dict, resample_pos_embed
from sc_imagenet.matching.backbones.dense_sift import DenseSift, rootsift
from sc_imagenet.matching.backbones.vit import VIT_SPECS

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}
VIT_NAMES = sorted(VIT_SPECS)
DINOV2_NAMES = [n for n in VIT_NAMES if "dinov2" in n]


def tiny_state(arch: str, img_size: int = 224, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (every tensor, layerscale gammas included) of a tiny timm `arch` at `img_size`."""
    model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, **TINY)
    g = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


def small_size(name: str) -> int:
    """An input size giving a 4×4 grid: fast, and not the checkpoint's 224 (so pos_embed is resampled)."""
    return 4 * VIT_SPECS[name].patch_size


def images(n: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (50 + 7 * i, 70 - 5 * i, 3), dtype=np.uint8) for i in range(n)]


def textured_image(h: int, w: int, seed: int) -> np.ndarray:
    """RGB uint8 `(h, w, 3)`: smooth colour field plus random ellipses, rectangles and lines."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
    img = np.ascontiguousarray(cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC))
    for _ in range(80):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        kind = int(rng.integers(3))
        if kind == 0:
            axes = (int(rng.integers(3, 30)), int(rng.integers(3, 30)))
            cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        elif kind == 1:
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, (cx, cy), end, color, int(rng.integers(1, 4)))
        else:
            cv2.rectangle(img, (cx, cy), (cx + int(rng.integers(4, 40)), cy + int(rng.integers(4, 40))), color, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def save_plain(state: dict[str, torch.Tensor], folder: Path) -> Path:
    path = folder / "plain.pth"
    torch.save(state, path)
    return path


def assert_weights_equal(bb: Backbone, state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    loaded = bb.model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        if k not in skip:
            assert torch.equal(loaded[k], v), k


# --- checkpoint layouts --------------------------------------------------------------------------------


def _head() -> dict[str, torch.Tensor]:
    return {"head.mlp.0.weight": torch.randn(8, 32), "head.last_layer.weight_g": torch.randn(1, 8)}


def ibot_full(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """iBOT-style: DDP student (`module.backbone.`, masked_embed, heads) + teacher (`backbone.`), args, optimizer."""
    student = {f"module.backbone.{k}": v + 1.0 for k, v in state.items()}  # differs: the teacher must win
    student["module.backbone.masked_embed"] = torch.zeros(1, 32)
    student |= {f"module.{k}": v for k, v in _head().items()}
    teacher = {f"backbone.{k}": v for k, v in state.items()} | _head()
    return {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 800,
        "args": argparse.Namespace(arch="vit_base", patch_size=16, lr=5e-4, teacher_temp=[0.04, 0.07]),
        "ibot_loss": {"center": torch.zeros(1, 8)},
    }


def ibot_teacher_only(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """iBOT's released `checkpoint_teacher.pth` style: `state_dict` wrapper, `module.backbone.` prefix."""
    return {"state_dict": {f"module.backbone.{k}": v for k, v in state.items()} | {"module.head.w": torch.ones(2)}}


def dino_full(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """DINO-style: `backbone.`-prefixed teacher + heads, student under `module.`, args."""
    return {
        "teacher": {f"backbone.{k}": v for k, v in state.items()} | _head(),
        "student": {f"module.backbone.{k}": -v for k, v in state.items()},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", out_dim=65536),
    }


def student_only(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"student": {f"module.backbone.{k}": v for k, v in state.items()} | _head(), "epoch": 3}


def model_wrapper(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"model": {f"module.{k}": v for k, v in state.items()}}


LAYOUTS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, Any]]] = {
    "ibot-full": ibot_full,
    "ibot-teacher-only": ibot_teacher_only,
    "dino-full": dino_full,
    "student-only": student_only,
    "model-wrapper": model_wrapper,
}


@pytest.fixture(scope="module")
def ibot_state() -> dict[str, torch.Tensor]:
    return tiny_state(VIT_SPECS["ibot-vit-base-16"].arch)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_full_checkpoint_layouts_load_exactly(layout: str, ibot_state: dict, tmp_path: Path) -> None:
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](ibot_state), path)
    kw = {"input_size": 224, "arch_overrides": TINY}
    bb = create_backbone("ibot-vit-base-16", checkpoint=path, **kw)
    assert_weights_equal(bb, ibot_state)
    ref = create_backbone("ibot-vit-base-16", checkpoint=save_plain(ibot_state, tmp_path), **kw)
    imgs = images()
    a, b = bb.encode(imgs), ref.encode(imgs)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.global_token, b.global_token)


def test_safetensors_layout(ibot_state: dict, tmp_path: Path) -> None:
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in ibot_state.items()}, str(path))
    bb = create_backbone("dino-vit-base-16", checkpoint=path, input_size=224, arch_overrides=TINY)
    assert_weights_equal(bb, ibot_state)


@pytest.mark.parametrize("name", DINOV2_NAMES)
@pytest.mark.parametrize("chunked", [False, True], ids=["flat", "chunked-blocks"])
def test_dinov2_layout_with_mask_token(name: str, chunked: bool, tmp_path: Path) -> None:
    state = tiny_state(VIT_SPECS[name].arch, img_size=518)  # DINOv2's own 37×37 grid
    ckpt = dict(state, mask_token=torch.zeros(1, 32))
    if chunked:  # DINOv2 training checkpoints, one block per chunk here: blocks.<chunk>.<global index>.*
        ckpt = {re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.\1.", k): v for k, v in ckpt.items()}
        assert "blocks.1.1.ls2.gamma" in ckpt
    torch.save(ckpt, tmp_path / "dinov2.pth")
    bb = create_backbone(name, checkpoint=tmp_path / "dinov2.pth", input_size=518, arch_overrides=TINY)
    assert_weights_equal(bb, state)
    assert "blocks.0.ls1.gamma" in state  # layerscale has the same name in DINOv2 and timm


def test_original_naming_matches_timm() -> None:
    """DINO/iBOT (and DINOv2, plus layerscale) name their ViT parameters exactly as timm does."""
    per_block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    original = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                "norm.bias"}
    original |= {f"blocks.{i}.{m}.{p}" for i in range(2) for m in per_block for p in ("weight", "bias")}
    for name in VIT_NAMES:
        expected = original | ({f"blocks.{i}.ls{j}.gamma" for i in range(2) for j in (1, 2)} if "dinov2" in name
                               else set())
        model = timm.create_model(VIT_SPECS[name].arch, pretrained=False, num_classes=0, **TINY)
        assert set(model.state_dict()) == expected, name


def test_remap_state_dict_rules() -> None:
    t = torch.zeros(1)
    ckpt = {"teacher": {"module.backbone.blocks.0.norm1.weight": t, "backbone.module.norm.bias": t,
                        "head.last_layer.weight": t, "backbone.head.mlp.0.bias": t, "mask_token": t,
                        "backbone.masked_embed": t, "blocks.1.3.ls1.gamma": t, "step": 5},
            "student": {"x": t}}
    assert set(remap_state_dict(ckpt)) == {"blocks.0.norm1.weight", "norm.bias", "blocks.3.ls1.gamma"}
    assert set(remap_state_dict({"model": {"state_dict": {"module.cls_token": t}}})) == {"cls_token"}
    with pytest.raises(CheckpointError, match="cls_token"):
        remap_state_dict({"cls_token": t, "module.cls_token": t})


# --- pos_embed resampling ------------------------------------------------------------------------------


def test_pos_embed_same_size_is_bit_identical(ibot_state: dict, tmp_path: Path) -> None:
    pe = ibot_state["pos_embed"]
    assert resample_pos_embed(pe, 1, (14, 14)) is pe
    bb = create_backbone("ibot-vit-base-16", checkpoint=save_plain(ibot_state, tmp_path), input_size=224,
                         arch_overrides=TINY)
    assert torch.equal(bb.model.pos_embed, pe)


def test_pos_embed_resampled_to_larger_input(ibot_state: dict, tmp_path: Path) -> None:
    # a pos_embed linear in the cell centres' coordinates: bicubic resampling must keep it linear
    g, c = 14, 32
    centres = (torch.arange(g) + 0.5) / g
    ramp = (centres[:, None, None] * torch.linspace(-1, 1, c) + centres[None, :, None] * 0.5).reshape(1, g * g, c)
    state = dict(ibot_state, pos_embed=torch.cat([ibot_state["pos_embed"][:, :1], ramp], dim=1))
    bb = create_backbone("ibot-vit-base-16", checkpoint=save_plain(state, tmp_path), input_size=320,
                         arch_overrides=TINY)
    assert_weights_equal(bb, state, skip=("pos_embed",))
    pe = bb.model.pos_embed
    assert pe.shape == (1, 1 + 20 * 20, c)
    assert torch.equal(pe[:, :1], state["pos_embed"][:, :1])  # cls position kept
    new = (torch.arange(20) + 0.5) / 20
    expected = (new[:, None, None] * torch.linspace(-1, 1, c) + new[None, :, None] * 0.5)
    got = pe[0, 1:].reshape(20, 20, c)
    # torch's bicubic (a = -0.75) is only first-order accurate: close to linear away from the borders,
    # where a transposed or shuffled grid would be off by up to ~0.7
    torch.testing.assert_close(got[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-2, rtol=0)
    ref = F.interpolate(ramp.reshape(1, g, g, c).permute(0, 3, 1, 2), size=(20, 20), mode="bicubic",
                        align_corners=False)
    assert torch.equal(got, ref[0].permute(1, 2, 0))
    feats = bb.encode(images(1))
    assert feats.grid == (20, 20) and feats.tokens.shape == (1, 400, c)


def test_pos_embed_shrinks_dinov2_grid(tmp_path: Path) -> None:
    state = tiny_state(VIT_SPECS["dinov2-vit-small-14"].arch, img_size=518)
    torch.save(state, tmp_path / "d.pth")
    bb = create_backbone("dinov2-vit-small-14", checkpoint=tmp_path / "d.pth", input_size=224, arch_overrides=TINY)
    assert bb.model.pos_embed.shape == (1, 1 + 16 * 16, 32)
    assert bb.encode(images(1)).grid == (16, 16)


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VIT_NAMES)
def test_missing_checkpoint_errors_say_nothing_is_downloaded(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Nothing is downloaded"):
        create_backbone(name)
    with pytest.raises(FileNotFoundError, match=r"does not exist.*Nothing is downloaded"):
        create_backbone(name, checkpoint=tmp_path / "absent.pth")


def test_mismatched_checkpoint_lists_keys(ibot_state: dict, tmp_path: Path) -> None:
    bad = {k: v for k, v in ibot_state.items() if not k.startswith("blocks.1.")}
    bad |= {f"extra.{i}": torch.zeros(1) for i in range(12)}
    bad["norm.weight"] = torch.zeros(5)
    torch.save({"teacher": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        create_backbone("ibot-vit-base-16", checkpoint=tmp_path / "bad.pth", arch_overrides=TINY)
    msg = str(err.value)
    assert "12 missing keys [blocks.1.attn.proj.bias" in msg
    assert "12 unexpected keys [extra.0, extra.1" in msg and "(+2 more)" in msg
    assert "1 shape mismatches [norm.weight: checkpoint (5,) vs model (32,)]" in msg
    assert str(tmp_path / "bad.pth") in msg


def test_wrong_architecture_is_a_clear_mismatch(tmp_path: Path) -> None:
    torch.save(tiny_state(VIT_SPECS["dinov2-vit-small-14"].arch), tmp_path / "v2.pth")
    with pytest.raises(CheckpointError, match=r"4 unexpected keys \[blocks.0.ls1.gamma"):
        create_backbone("dino-vit-small-16", checkpoint=tmp_path / "v2.pth", arch_overrides=TINY)


def test_input_size_must_be_a_patch_multiple(tmp_path: Path) -> None:
    torch.save(tiny_state(VIT_SPECS["dinov2-vit-small-14"].arch), tmp_path / "v2.pth")
    with pytest.raises(ValueError, match=r"input_size 230 must be a positive multiple of the patch size 14 \(e\.g\."):
        create_backbone("dinov2-vit-small-14", checkpoint=tmp_path / "v2.pth", input_size=230, arch_overrides=TINY)
    with pytest.raises(ValueError, match="arch_overrides may not set"):
        create_backbone("dinov2-vit-small-14", checkpoint=tmp_path / "v2.pth", arch_overrides={"pretrained": True})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_backbone("dense-sift", input_size=100)


def test_preprocess_rejects_non_rgb() -> None:
    bb = create_backbone("dense-sift")
    with pytest.raises(ValueError, match=r"image 1: expected RGB uint8"):
        bb.preprocess([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="expected input"):
        bb(torch.zeros(1, 3, 32, 32))


# --- layer selection ---------------------------------------------------------------------------------------


def test_intermediate_layer_tokens(ibot_state: dict, tmp_path: Path) -> None:
    path = save_plain(ibot_state, tmp_path)
    kw = {"checkpoint": path, "input_size": 64, "arch_overrides": TINY}
    last, first = create_backbone("ibot-vit-base-16", **kw), create_backbone("ibot-vit-base-16", layer=0, **kw)
    assert create_backbone("ibot-vit-base-16", layer=-2, **kw).layer == 0
    x = last.preprocess(images())
    # block 0's raw output, by hand: patch embedding + positions, then the first block
    m = first.model
    tokens = m.patch_embed(x)
    seq = torch.cat([m.cls_token.expand(len(x), -1, -1), tokens], dim=1) + m.pos_embed
    with torch.no_grad():
        ref = m.blocks[0](seq)
    f0 = first(x)
    torch.testing.assert_close(f0.tokens, ref[:, 1:])
    torch.testing.assert_close(f0.global_token, ref[:, 0])
    assert not torch.allclose(last(x).tokens, f0.tokens)
    with pytest.raises(ValueError, match="layer 2 out of range for 2 blocks"):
        create_backbone("ibot-vit-base-16", layer=2, **kw)


# --- the registry, parametrised --------------------------------------------------------------------------


def build_tiny(name: str, tmp_path: Path) -> Backbone:
    """Every registered name, small and weight-free or with a tiny random checkpoint."""
    if name == "dense-sift":
        return create_backbone(name, input_size=64)
    if name in VIT_SPECS:
        path = save_plain(tiny_state(VIT_SPECS[name].arch), tmp_path)
        return create_backbone(name, checkpoint=path, input_size=small_size(name), arch_overrides=TINY)
    raise AssertionError(f"add a tiny builder for new backbone {name!r} to this test")


def test_registry_exports() -> None:
    assert set(list_backbones()) == set(BACKBONES) == {"dense-sift", *VIT_NAMES}
    assert {"ibot-vit-base-16", "dino-vit-small-16", "dino-vit-base-16", "dinov2-vit-small-14",
            "dinov2-vit-base-14"} <= set(VIT_NAMES)
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("resnet-50")


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_contract(name: str, tmp_path: Path) -> None:
    bb = build_tiny(name, tmp_path)
    side = bb.input_size // bb.patch_size
    x = bb.preprocess(images(3))
    assert x.shape == (3, 3, bb.input_size, bb.input_size) and x.dtype == torch.float32
    feats = bb.encode(images(3))
    assert isinstance(feats, Features)
    assert feats.grid == (side, side)
    assert feats.tokens.shape == (3, side * side, bb.out_dim)
    assert feats.global_token.shape == (3, bb.out_dim)
    assert not feats.tokens.requires_grad and not feats.global_token.requires_grad
    assert all(not p.requires_grad for p in bb.parameters()) and not bb.training
    assert bb.device == torch.device("cpu")
    again = bb.encode(images(3))
    assert torch.equal(feats.tokens, again.tokens)  # deterministic
    # batch composition does not change an image's tokens
    torch.testing.assert_close(bb.encode(images(3)[:1]).tokens[0], feats.tokens[0], atol=1e-5, rtol=1e-4)
    empty = bb.encode([])
    assert empty.tokens.shape == (0, side * side, bb.out_dim) and empty.global_token.shape == (0, bb.out_dim)


# --- dense-sift ----------------------------------------------------------------------------------------------


def test_dense_sift_defaults_and_normalisation() -> None:
    bb = create_backbone("dense-sift")
    assert isinstance(bb, DenseSift) and len(list(bb.parameters())) == 0
    assert (bb.patch_size, bb.input_size, bb.out_dim) == (8, 224, 128 * 3)
    feats = bb.encode([textured_image(300, 400, 0), textured_image(224, 224, 1)])
    assert feats.grid == (28, 28) and feats.tokens.shape == (2, 784, 384)
    torch.testing.assert_close(feats.tokens.norm(dim=-1), torch.ones(2, 784))
    assert (feats.tokens >= 0).all()  # RootSIFT of histograms
    torch.testing.assert_close(feats.global_token, feats.tokens.mean(dim=1))
    flat = bb.encode([np.full((64, 64, 3), 128, np.uint8)]).tokens
    assert torch.equal(flat, torch.zeros_like(flat))  # no gradient anywhere: zero tokens, never NaN


def test_rootsift() -> None:
    d = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(rootsift(d), [[0.5, np.sqrt(0.75), 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rootsift(d)[0]), 1.0)  # L1 then sqrt gives unit L2 norm


def shift_match_fraction(bb: Backbone, k: int, seed: int, photometric: bool) -> float:
    """Fraction of cells of a copy shifted left by k cells whose nearest neighbour is the true cell."""
    p, s = bb.patch_size, bb.input_size
    canvas = textured_image(s, s + k * p, seed)
    a, b = canvas[:, :s], canvas[:, k * p : k * p + s]  # b's column j shows a's column j + k
    if photometric:  # contrast, brightness, noise and JPEG
        rng = np.random.default_rng(seed)
        b = np.clip(b * 0.8 + 20 + rng.normal(0, 6, b.shape), 0, 255).astype(np.uint8)
        b = cv2.imdecode(cv2.imencode(".jpg", b, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_UNCHANGED)
    feats = bb.encode([a, b])
    h, w = feats.grid
    nn = (feats.tokens[1] @ feats.tokens[0].T).argmax(dim=1).reshape(h, w).numpy()
    ii, jj = np.mgrid[0:h, 0:w]
    valid = jj + k < w  # cells whose true match exists in a
    return float((nn[valid] == (ii * w + jj + k)[valid]).mean())


@pytest.mark.parametrize("k", [1, 3, 5])
def test_dense_sift_shift_known_answer(k: int) -> None:
    bb = create_backbone("dense-sift")
    assert shift_match_fraction(bb, k, seed=k, photometric=False) >= 0.95  # measured 0.977-1.0 (all cells)


def test_dense_sift_shift_with_photometric_change() -> None:
    bb = create_backbone("dense-sift")
    assert shift_match_fraction(bb, 3, seed=0, photometric=True) >= 0.9  # measured 0.979-0.99 (4 seeds)


def test_dense_sift_follows_device_and_is_deep_copyable() -> None:
    bb = copy.deepcopy(create_backbone("dense-sift", input_size=32))
    assert bb.device == torch.device("cpu")
    assert bb.encode(images(1)).tokens.device == torch.device("cpu")
    assert create_backbone("dense-sift", spans=(8,)).out_dim == 128
