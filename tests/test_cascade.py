"""Losses and the cascade's building blocks: known answers and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sc_imagenet.matching.backbones.base import Features
from sc_imagenet.matching.cascade import CascadeGenerator, CascadeSettings, grid_masks, window_box
from sc_imagenet.matching.losses import adaptive_pool, contrastive_loss, pixel_level_loss
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
    assert pixel_level_loss(good, src_idx, trg, valid) < pixel_level_loss(bad, src_idx, trg, valid)
    assert pixel_level_loss(good, src_idx, trg, torch.zeros_like(valid)).item() == 0.0


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
    assert pixel_level_loss(good, *args, mode="ce") < pixel_level_loss(bad, *args, mode="ce")
    with pytest.raises(ValueError, match="bce"):
        pixel_level_loss(good, *args, mode="hinge")


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
    loss = pixel_level_loss(v, torch.tensor([[0], [5]]), torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]]),
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


class TestVolumeMix:
    """A level's volume: bounded (default), residual (cos + β·MVAM) or the MVAM output alone (paper)."""

    @staticmethod
    def _pair(seed: int = 0) -> tuple[Features, Features]:
        torch.manual_seed(seed)
        grid = (3, 4)
        return (Features(torch.randn(2, 12, 8), grid, torch.randn(2, 8)),
                Features(torch.randn(2, 12, 8), grid, torch.randn(2, 8)))

    @staticmethod
    def _model(mix: str) -> CascadeGenerator:
        return CascadeGenerator(8, CascadeSettings(volume_mix=mix, adapter_levels=(),
                                                   mvam={"dim": 8, "heads": 2, "agg_channels": 4}))

    def test_bounded_volume_stays_in_range_whatever_beta(self) -> None:
        src, trg = self._pair()
        model = self._model("bounded")
        cos = correlation_4d(src.tokens, trg.tokens, src.grid, trg.grid)
        assert torch.allclose(model.volume("image", src, trg), cos, atol=1e-6)  # β = 0: the backbone's metric
        with torch.no_grad():
            for p in model.mvam["image"].parameters():
                p.mul_(50.0)  # a large MVAM output
            for beta in (1.0, 1e3, -1e3, 1e6):
                model.beta["image"].fill_(beta)
                v = model.volume("image", src, trg)
                assert v.abs().max() <= 1.0 + 1e-6
        # so Eq. 2 is bounded: −AP(pos) + AP(neg) ≥ −2 for every β
        assert contrastive_loss(v, -v) >= -2.0 - 1e-6

    def test_residual_volume_grows_with_beta_and_mvam_is_the_paper(self) -> None:
        src, trg = self._pair(1)
        model = self._model("residual")
        with torch.no_grad():
            model.beta["image"].fill_(1e3)
        assert model.volume("image", src, trg).abs().max() > 10  # unbounded: why `bounded` is the default
        paper = self._model("mvam")
        refined = paper.mvam["image"](src.tokens, trg.tokens, src.global_token, trg.global_token, src.grid, trg.grid)
        assert torch.equal(paper.volume("image", src, trg), refined)

    def test_beta_gets_a_gradient_at_zero(self) -> None:
        src, trg = self._pair(2)
        model = self._model("bounded")
        model.volume("image", src, trg).sum().backward()
        assert model.beta["image"].grad is not None and model.beta["image"].grad.abs() > 0


def test_switches_reach_pmps_and_the_pixel_loss() -> None:
    model = CascadeGenerator(8, CascadeSettings(rhm_appearance="relu", rhm_debias=False, learn_logit_scale=False,
                                                pixel_logit_scale=20.0, mvam={"dim": 8, "heads": 2, "agg_channels": 4}))
    assert model.pmps.appearance == "relu" and model.pmps.debias is False
    assert not model.pixel_log_scale.requires_grad and not model.pixel_bias.requires_grad
    assert float(model.pixel_log_scale.exp()) == pytest.approx(20.0)
    default = CascadeGenerator(8, CascadeSettings(mvam={"dim": 8, "heads": 2, "agg_channels": 4}))
    assert default.pixel_log_scale.requires_grad


def test_enough_regions_for_the_pixel_levels_pseudo_labels() -> None:
    from sc_imagenet.config import ConfigError, load_config

    with pytest.raises(ValueError, match=r"region_pairs × region_matches \(3 × 4\) must be at least pixel_pairs"):
        CascadeSettings(region_pairs=3, region_matches=4, pixel_pairs=16)
    CascadeSettings(region_pairs=3, region_matches=4, pixel_pairs=16, levels=("image", "pixel"))  # no region level
    with pytest.raises(ConfigError, match="train"):
        load_config("demo", {"train": {"region_pairs": 2, "region_matches": 1}})


class TestRegionMatches:
    """The region level's selection inside each region pair (`_region_matches`)."""

    @staticmethod
    def _volumes() -> torch.Tensor:
        torch.manual_seed(3)
        f = torch.nn.functional.normalize(torch.randn(2, 16, 8), dim=-1)
        return correlation_4d(f, f, (4, 4), (4, 4))  # each region matches itself: the identity is best

    def test_pmps_gives_region_matches_one_to_one(self) -> None:
        model = CascadeGenerator(8, CascadeSettings(region_matches=5, use_rhm=False,
                                                    mvam={"dim": 8, "heads": 2, "agg_channels": 4}))
        si, ti, score = model._region_matches(self._volumes(), None, None)
        assert si.shape == ti.shape == score.shape == (2, 5)
        for m in range(2):
            assert len(set(si[m])) == 5 and len(set(ti[m])) == 5  # one-to-one
            assert (si[m] == ti[m]).all()  # the identity matches
            assert (np.diff(score[m]) <= 1e-6).all()  # sorted by confidence

    def test_argmax_gives_one_foreground_pair(self) -> None:
        model = CascadeGenerator(8, CascadeSettings(region_select="argmax", region_matches=1, region_pairs=16,
                                                    mvam={"dim": 8, "heads": 2, "agg_channels": 4}))
        fg = torch.zeros(2, 4, 4)
        fg[:, 2, 3] = 1.0  # only cell 11 is foreground
        si, ti, _ = model._region_matches(self._volumes(), fg, fg)
        assert si.shape == (2, 1) and (si == 11).all() and (ti == 11).all()
