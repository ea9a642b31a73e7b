"""MVAM: gated cross-attention (Eq. 1), 4D cosine volume, 4D window-attention volume aggregation."""

from __future__ import annotations

import itertools

import pytest
import torch

from sc_imagenet.matching.mvam import MVAM, ConvTokenAdapter, GatedCrossAttention, correlation_4d
from sc_imagenet.matching.volume import (
    VolumeAggregator,
    avg_pool4d,
    depth_to_space4d,
    space_to_depth4d,
    window_partition4d,
    window_reverse4d,
)


def _tokens(B: int, grid: tuple[int, int], C: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, grid[0] * grid[1], C, generator=g)


def _inputs(B: int, grid_s: tuple[int, int], grid_t: tuple[int, int], C: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    F_s = torch.randn(B, grid_s[0] * grid_s[1], C, generator=g)
    F_t = torch.randn(B, grid_t[0] * grid_t[1], C, generator=g)
    T_s, T_t = torch.randn(B, C, generator=g), torch.randn(B, C, generator=g)
    return F_s, F_t, T_s, T_t


def _randomise_output(module: torch.nn.Module) -> None:
    """Give zero-initialised redistribution layers random weights so every path carries gradient."""
    for m in module.modules():
        if isinstance(m, VolumeAggregator):
            torch.nn.init.normal_(m.redistribute.weight, std=0.1)
            torch.nn.init.normal_(m.redistribute.bias, std=0.1)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("grid_s", "grid_t"),
    [((5, 5), (5, 5)), ((3, 7), (3, 7)), ((4, 6), (7, 3)), ((1, 1), (2, 5)), ((9, 9), (9, 9)), ((28, 28), (28, 28))],
)
@pytest.mark.parametrize("in_dim", [32, 128])
def test_mvam_shapes(grid_s, grid_t, in_dim):
    torch.manual_seed(0)
    m = MVAM(in_dim, dim=128, heads=4).eval()
    F_s, F_t, T_s, T_t = _inputs(2, grid_s, grid_t, in_dim)
    with torch.no_grad():
        v = m(F_s, F_t, T_s, T_t, grid_s, grid_t)
    assert v.shape == (2, *grid_s, *grid_t)
    assert torch.isfinite(v).all()


@pytest.mark.parametrize(("window", "depth", "downsample"), [(2, 1, 2), (3, 2, 2), (2, 2, 1), (3, 1, 3), (1, 1, 2)])
@pytest.mark.parametrize("dims", [(5, 5, 5, 5), (3, 7, 4, 6), (1, 1, 1, 1), (2, 3, 5, 7)])
@pytest.mark.parametrize("pooling", ["avg", "unshuffle"])
def test_aggregator_shapes_nonzero_init(window, depth, downsample, dims, pooling):
    torch.manual_seed(0)
    agg = VolumeAggregator(channels=8, heads=2, window=window, depth=depth, downsample=downsample, pooling=pooling)
    _randomise_output(agg)
    v = torch.randn(2, *dims)
    out = agg(v)
    assert out.shape == v.shape
    assert torch.isfinite(out).all()
    assert not torch.equal(out, v)


@pytest.mark.parametrize("pooling", ["avg", "unshuffle"])
@pytest.mark.parametrize("dims", [(5, 5, 5, 5), (7, 3, 6, 4), (28, 28, 28, 28)])
def test_zero_initialised_aggregator_is_identity(dims, pooling):
    torch.manual_seed(0)
    agg = VolumeAggregator(channels=16, window=3, depth=2, pooling=pooling)
    v = torch.randn(1, *dims)
    assert torch.equal(agg(v), v)


def test_mvam_without_aggregation_returns_raw_volume():
    torch.manual_seed(0)
    m = MVAM(32, dim=32, use_aggregation=False)
    F_s, F_t, T_s, T_t = _inputs(2, (4, 5), (6, 3), 32)
    assert m.aggregator is None
    assert torch.equal(m(F_s, F_t, T_s, T_t, (4, 5), (6, 3)), m.correlate(F_s, F_t, T_s, T_t, (4, 5), (6, 3)))


def test_mvam_without_cross_attention_is_cosine_of_inputs():
    m = MVAM(16, use_cross_attention=False, use_aggregation=False)
    F_s, F_t, T_s, T_t = _inputs(1, (3, 4), (5, 2), 16)
    v = m(F_s, F_t, T_s, T_t, (3, 4), (5, 2))
    assert torch.allclose(v, correlation_4d(F_s, F_t, (3, 4), (5, 2)))


# --------------------------------------------------------------------------- gates


@pytest.mark.parametrize(("gate", "width"), [("scalar", 1), ("channel", 64), ("none", 1)])
def test_gates_in_unit_interval(gate, width):
    torch.manual_seed(0)
    m = GatedCrossAttention(in_dim=48, dim=64, heads=4, gate=gate)
    F_s, F_t, T_s, T_t = _inputs(3, (4, 4), (2, 5), 48)
    G_s, G_t = m.gates(F_s * 10, F_t, T_s, T_t)
    assert G_s.shape == (3, 16, width)
    assert G_t.shape == (3, 10, width)
    if gate == "none":
        assert torch.equal(G_s, torch.ones_like(G_s))
    else:
        assert ((G_s > 0) & (G_s < 1)).all()
        assert ((G_t > 0) & (G_t < 1)).all()


def test_gate_depends_on_other_images_global_token():
    torch.manual_seed(0)
    m = GatedCrossAttention(in_dim=16, dim=16, heads=2)
    F_s, F_t, T_s, T_t = _inputs(1, (3, 3), (3, 3), 16)
    G_s, _ = m.gates(F_s, F_t, T_s, T_t)
    G_s2, _ = m.gates(F_s, F_t, T_s + 5, T_t)  # changing T_s must not move G_s
    G_s3, _ = m.gates(F_s, F_t, T_s, -T_t)
    assert torch.allclose(G_s, G_s2)
    assert not torch.allclose(G_s, G_s3)


def test_cross_attention_output_width_and_symmetry():
    torch.manual_seed(0)
    m = GatedCrossAttention(in_dim=24, dim=32, heads=4).eval()
    F_s, F_t, T_s, T_t = _inputs(2, (3, 4), (5, 5), 24)
    R_s, R_t = m(F_s, F_t, T_s, T_t)
    assert R_s.shape == (2, 12, 32) and R_t.shape == (2, 25, 32)
    Q_t, Q_s = m(F_t, F_s, T_t, T_s)  # same weights in both directions
    assert torch.allclose(R_s, Q_s, atol=1e-6) and torch.allclose(R_t, Q_t, atol=1e-6)


# --------------------------------------------------------------------------- correlation


def test_correlation_of_identical_features_has_unit_diagonal():
    F = _tokens(2, (4, 6), 32)
    v = correlation_4d(F, F, (4, 6), (4, 6))
    assert v.shape == (2, 4, 6, 4, 6)
    diag = v.reshape(2, 24, 24).diagonal(dim1=1, dim2=2)
    assert torch.allclose(diag, torch.ones_like(diag), atol=1e-6)
    assert (v <= 1 + 1e-6).all() and (v >= -1 - 1e-6).all()


def test_correlation_layout_is_row_major():
    F_s = _tokens(1, (3, 4), 8, seed=1)
    F_t = _tokens(1, (2, 5), 8, seed=2)
    v = correlation_4d(F_s, F_t, (3, 4), (2, 5))
    i, j, k, l_ = 2, 1, 1, 3
    expected = torch.cosine_similarity(F_s[0, i * 4 + j], F_t[0, k * 5 + l_], dim=0)
    assert torch.allclose(v[0, i, j, k, l_], expected, atol=1e-6)


def test_swapping_source_and_target_transposes_volume():
    F_s, F_t, T_s, T_t = _inputs(2, (3, 5), (4, 2), 16)
    v = correlation_4d(F_s, F_t, (3, 5), (4, 2))
    w = correlation_4d(F_t, F_s, (4, 2), (3, 5))
    assert torch.allclose(w, v.permute(0, 3, 4, 1, 2), atol=1e-6)
    torch.manual_seed(0)
    m = MVAM(16, dim=32).eval()  # zero-initialised aggregator + symmetric cross-attention
    with torch.no_grad():
        v = m(F_s, F_t, T_s, T_t, (3, 5), (4, 2))
        w = m(F_t, F_s, T_t, T_s, (4, 2), (3, 5))
    assert torch.allclose(w, v.permute(0, 3, 4, 1, 2), atol=1e-5)


# --------------------------------------------------------------------------- training behaviour


@pytest.mark.parametrize("gate", ["scalar", "channel"])
def test_gradients_reach_every_parameter(gate):
    torch.manual_seed(0)
    m = MVAM(24, dim=32, heads=4, agg_channels=8, window=2, depth=2, gate=gate)
    _randomise_output(m)
    F_s, F_t, T_s, T_t = _inputs(2, (5, 6), (4, 5), 24)
    v = m(F_s, F_t, T_s, T_t, (5, 6), (4, 5))
    (v.square().mean() + v[:, 1, 2].sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_with_zero_init_are_finite_and_train_the_output_layer():
    torch.manual_seed(0)
    m = MVAM(24, dim=32)
    F_s, F_t, T_s, T_t = _inputs(2, (5, 5), (5, 5), 24)
    m(F_s, F_t, T_s, T_t, (5, 5), (5, 5)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.aggregator is not None
    assert m.aggregator.redistribute.weight.grad.abs().sum() > 0


def test_deterministic():
    def build_and_run():
        torch.manual_seed(123)
        m = MVAM(16, dim=32, agg_channels=8, depth=2)
        _randomise_output(m)
        F_s, F_t, T_s, T_t = _inputs(2, (6, 5), (5, 7), 16, seed=4)
        m.eval()
        with torch.no_grad():
            return m(F_s, F_t, T_s, T_t, (6, 5), (5, 7))

    a, b = build_and_run(), build_and_run()
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- reshaping helpers


def test_avg_pool4d_matches_brute_force_with_odd_sizes():
    x = torch.randn(2, 5, 3, 4, 7, 3)
    f = 2
    out = avg_pool4d(x, f)
    assert out.shape == (2, 3, 2, 2, 4, 3)
    for a, b, c, d in itertools.product(range(3), range(2), range(2), range(4)):
        block = x[:, a * f : a * f + f, b * f : b * f + f, c * f : c * f + f, d * f : d * f + f]
        assert torch.allclose(out[:, a, b, c, d], block.mean(dim=(1, 2, 3, 4)), atol=1e-6)


def test_space_depth_roundtrip_and_window_roundtrip():
    v = torch.randn(2, 4, 6, 2, 8)
    assert torch.equal(depth_to_space4d(space_to_depth4d(v, 2), 2), v)
    x = torch.randn(2, 4, 6, 2, 8, 3)
    w = window_partition4d(x, 2)
    assert w.shape == (2, 2 * 3 * 1 * 4, 16, 3)
    assert torch.equal(window_reverse4d(w, 2, (4, 6, 2, 8)), x)
    # the first window holds the 2×2×2×2 corner block, row-major
    assert torch.equal(w[0, 0], x[0, :2, :2, :2, :2].reshape(16, 3))


# --------------------------------------------------------------------------- empty input and errors


def test_empty_inputs_give_empty_outputs():
    torch.manual_seed(0)
    agg = VolumeAggregator()
    assert agg(torch.zeros(2, 0, 5, 5, 5)).shape == (2, 0, 5, 5, 5)
    assert agg(torch.zeros(0, 3, 3, 3, 3)).shape == (0, 3, 3, 3, 3)
    m = MVAM(8, dim=16)
    F_s, F_t, T_s, T_t = _inputs(2, (0, 4), (3, 3), 8)
    assert m(F_s, F_t, T_s, T_t, (0, 4), (3, 3)).shape == (2, 0, 4, 3, 3)
    F_s, F_t, T_s, T_t = _inputs(2, (3, 3), (2, 0), 8)
    assert m(F_s, F_t, T_s, T_t, (3, 3), (2, 0)).shape == (2, 3, 3, 2, 0)
    F_s, F_t, T_s, T_t = _inputs(0, (3, 3), (3, 3), 8)
    assert m(F_s, F_t, T_s, T_t, (3, 3), (3, 3)).shape == (0, 3, 3, 3, 3)


def test_shape_errors():
    m = MVAM(8, dim=16)
    F_s, F_t, T_s, T_t = _inputs(2, (3, 3), (3, 3), 8)
    with pytest.raises(ValueError, match=r"\(B, h_s, w_s, h_t, w_t\)"):
        VolumeAggregator()(torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        m(F_s[0], F_t, T_s, T_t, (3, 3), (3, 3))
    with pytest.raises(ValueError, match="channels"):
        m(F_s[..., :4], F_t, T_s, T_t, (3, 3), (3, 3))
    with pytest.raises(ValueError, match="grid"):
        m(F_s, F_t, T_s, T_t, (3, 4), (3, 3))
    with pytest.raises(ValueError, match="T_s"):
        m(F_s, F_t, T_s[:, :4], T_t, (3, 3), (3, 3))
    with pytest.raises(ValueError, match="batch"):
        correlation_4d(F_s, F_t[:1], (3, 3), (3, 3))
    with pytest.raises(ValueError, match="divisible"):
        GatedCrossAttention(8, dim=30, heads=4)


class TestConvTokenAdapter:
    def test_starts_as_identity(self) -> None:
        x = torch.randn(2, 12, 8)
        adapter = ConvTokenAdapter(8)
        assert torch.equal(adapter(x, (3, 4)), x) and torch.equal(adapter(x[:, 0]), x[:, 0])

    def test_mixes_in_the_neighbouring_cells(self) -> None:
        adapter = ConvTokenAdapter(2)
        with torch.no_grad():
            adapter.conv.weight[0, 1, 1, 2] = 1.0  # channel 0 += channel 1 of the right-hand neighbour
            adapter.conv.weight[1, 1, 1, 1] = 2.0  # channel 1 += 2 × its own channel 1 (the centre tap)
        x = torch.zeros(1, 6, 2)
        x[0, 1, 1] = 1.0  # cell (row 0, col 1) of a 2×3 grid
        y = adapter(x, (2, 3))
        assert y[0, 0, 0] == 1.0 and y[0, 1, 1] == 3.0 and y[0, 0, 1] == 0.0
        assert torch.equal(adapter(x[:, 1]), torch.tensor([[0.0, 3.0]]))  # a global token: centre tap only

    def test_needs_its_grid(self) -> None:
        with pytest.raises(ValueError, match="grid"):
            ConvTokenAdapter(4)(torch.zeros(1, 6, 4))
        with pytest.raises(ValueError, match="odd"):
            ConvTokenAdapter(4, kernel=2)
