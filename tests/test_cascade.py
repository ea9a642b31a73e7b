"""Losses and the cascade's building blocks: known answers and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sc_imagenet.matching.backbones.base import Features
from sc_imagenet.matching.cascade import CascadeGenerator, CascadeSettings, grid_masks, window_box
from sc_imagenet.matching.losses import adaptive_pool, contrastive_loss, pixel_bce_loss
from sc_imagenet.matching.mvam import TokenAdapter, correlation_4d


def _volume(a: torch.Tensor, b: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return correlation_4d(a, b, grid, grid)


def test_adaptive_pool_prefers_matching_pairs() -> None:
    torch.manual_seed(0)
    f = torch.randn(2, 16, 8)
    same = _volume(f, f, (4, 4))
    other = _volume(f, torch.randn(2, 16, 8), (4, 4))
    assert torch.allclose(adaptive_pool(same), torch.ones(2))
    assert (adaptive_pool(other) < 0.9).all()
    assert contrastive_loss(same, other) < 0 < contrastive_loss(other, same)


def test_adaptive_pool_respects_foreground() -> None:
    v = torch.zeros(1, 2, 2, 2, 2)
    v[0, 0, 0, 1, 1] = 1.0  # the only good match is from source cell 0 to target cell 3
    fg_s = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    fg_t = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert adaptive_pool(v, fg_s, fg_t).item() == pytest.approx(1.0)
    assert adaptive_pool(v, fg_s, 1 - fg_t).item() == pytest.approx(0.0)
    assert adaptive_pool(v, torch.zeros_like(fg_s), torch.zeros_like(fg_t)).item() == pytest.approx(0.25)


def test_pixel_bce_is_lower_when_the_volume_peaks_at_the_label() -> None:
    grid = (6, 6)
    good = torch.full((1, *grid, *grid), -1.0)
    good[0, 2, 3, 4, 1] = 1.0
    bad = torch.full((1, *grid, *grid), -1.0)
    bad[0, 2, 3, 0, 5] = 1.0
    src_idx = torch.tensor([[2 * 6 + 3]])
    trg = torch.tensor([[[1.0, 4.0]]])  # (col, row)
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert pixel_bce_loss(good, src_idx, trg, valid) < pixel_bce_loss(bad, src_idx, trg, valid)
    assert pixel_bce_loss(good, src_idx, trg, torch.zeros_like(valid)).item() == 0.0


def test_window_box_stays_inside_the_image() -> None:
    assert window_box(np.array([2.0, 2.0]), (8.0, 8.0), 5, (100, 60)) == (0, 0, 40, 40)
    assert window_box(np.array([58.0, 99.0]), (8.0, 8.0), 5, (100, 60)) == (20, 60, 60, 100)
    x0, y0, x1, y1 = window_box(np.array([30.0, 50.0]), (8.0, 8.0), 5, (100, 60))
    assert (x1 - x0, y1 - y0) == (40, 40) and x0 == 10 and y0 == 30


def test_grid_masks_average_cells() -> None:
    m = np.zeros((40, 40), np.float32)
    m[:20, :20] = 1
    g = grid_masks([m], (2, 2), torch.device("cpu"))
    assert torch.allclose(g, torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    assert grid_masks(None, (2, 2), torch.device("cpu")) is None


@pytest.mark.parametrize("levels", [("region",), ("pixel",), ("region", "pixel"), ("image", "bogus")])
def test_levels_need_the_image_level(levels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="level"):
        CascadeSettings(levels=levels)
    assert CascadeSettings(levels=("image",)).dense_level == "image"


def test_pixel_ce_mode_ranks_and_rejects_unknown_modes() -> None:
    grid = (4, 4)
    good = torch.zeros((1, *grid, *grid))
    good[0, 1, 1, 2, 3] = 1.0
    bad = torch.zeros((1, *grid, *grid))
    bad[0, 1, 1, 0, 0] = 1.0
    args = (torch.tensor([[5]]), torch.tensor([[[3.0, 2.0]]]), torch.ones(1, 1, dtype=torch.bool))
    assert pixel_bce_loss(good, *args, mode="ce") < pixel_bce_loss(bad, *args, mode="ce")
    with pytest.raises(ValueError, match="bce"):
        pixel_bce_loss(good, *args, mode="hinge")


def test_token_adapter_starts_as_the_backbone_metric_and_learns() -> None:
    """A fresh pixel level (β = 0, adapter W = 0) is exactly the backbone's cosine volume; the adapter
    gets gradients from the pixel loss at once (its zero weight sits on the residual, not in a gate)."""
    torch.manual_seed(0)
    grid = (3, 4)
    src = Features(torch.randn(2, 12, 8), grid, torch.randn(2, 8))
    trg = Features(torch.randn(2, 12, 8), grid, torch.randn(2, 8))
    model = CascadeGenerator(8, CascadeSettings(mvam={"dim": 8, "heads": 2, "agg_channels": 4}))
    assert set(model.adapter) == {"pixel"}
    v = model.volume("pixel", src, trg)
    assert torch.allclose(v, correlation_4d(src.tokens, trg.tokens, grid, grid), atol=1e-6)
    loss = pixel_bce_loss(v, torch.tensor([[0], [5]]), torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]]),
                          torch.ones(2, 1, dtype=torch.bool), mode="ce")
    loss.backward()
    assert model.adapter["pixel"].linear.weight.grad.abs().sum() > 0
    x = torch.randn(5, 8)
    assert torch.equal(TokenAdapter(8)(x), x)


def test_adapter_levels_are_validated_and_optional() -> None:
    with pytest.raises(ValueError, match="adapter_levels"):
        CascadeSettings(adapter_levels=("pixels",))
    model = CascadeGenerator(8, CascadeSettings(levels=("image",), adapter_levels=("pixel",),
                                                mvam={"dim": 8, "heads": 2, "agg_channels": 4}))
    assert len(model.adapter) == 0  # no pixel level trained: nothing to adapt


def test_the_cascade_gets_the_config_settings_unchanged() -> None:
    """`TrainConfig` inherits the cascade's fields (one definition, `matching/settings.py`); the model keeps
    an immutable copy of exactly those values, and a bad value is a config error naming the field."""
    from pydantic import ValidationError

    from sc_imagenet.config import ConfigError, TrainConfig, load_config
    from sc_imagenet.matching.settings import CascadeConfig, GeneratorConfig

    cfg = TrainConfig.model_validate({"levels": ["pixel", "image"], "foreground": "none", "window": 3, "lr": 0.5,
                                      "mvam": {"dim": 8, "heads": 2, "agg_channels": 4}})
    model = CascadeGenerator(8, cfg)
    assert isinstance(model.settings, CascadeSettings)
    assert model.settings.model_dump() == cfg.model_dump(include=set(CascadeConfig.model_fields))
    assert not model.settings.use_foreground and model.settings.level_order == ("image", "pixel")
    assert list(model.mvam) == ["image", "pixel"]  # modules built in cascade order, whatever the config's order
    with pytest.raises(ValidationError, match="frozen"):
        model.settings.window = 4
    # a checkpoint's settings (a TrainConfig dump) rebuild the generator; training-only keys are ignored
    assert GeneratorConfig.from_settings(cfg.model_dump(mode="json")).levels == ["pixel", "image"]
    with pytest.raises(ConfigError, match=r"train\.levels: .*image level is needed"):
        load_config("demo", {"train": {"levels": ["region", "pixel"]}})
