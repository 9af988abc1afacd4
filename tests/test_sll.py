"""SLL layers, dense and conv: the sound bound proven from the weights is never below the layer's real Lipschitz
constant, also when the construction's T is wrong; the rounding model covers the layers; the row-normalised head
is certified with the weights it computes; SLL's loss and method train nets whose certificates survive the
attack."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_floating_point import box_points
from test_residual import assert_box_offsets_cover_the_rounding, assert_trained_certificates_survive_pgd
from torch import nn

import gloro
from gloro.architectures import ArchitectureSpec, initialise
from gloro.families.conv_net import comparison_conv_net
from gloro.families.sll import SLLConv2d, SLLDense, sll_bound
from gloro.layer_bounds import bound_for
from gloro.layers import normalized_linear
from gloro.methods.offset import offset_cross_entropy


def computed_norm_slack(size: int) -> float:
    """How far above the exact ‖J‖₂ a float64 SVD of a size×size J may land (backward stable: a few n·u)."""
    return 1 + 16 * size * 2.0**-53


def largest_jacobian_norm(layer: nn.Module, shape: int | tuple[int, ...], points: int, seed: int) -> float:
    """The largest ‖J(x)‖₂ of the layer at random inputs of `shape` (float64), each computed one less its SVD's
    slack."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    size = math.prod(shape)
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for _ in range(points):
        x = torch.randn(size, generator=generator, dtype=torch.float64) * 3
        jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, *shape)).flatten(), x)
        largest = max(largest, float(torch.linalg.matrix_norm(jacobian, 2)) / computed_norm_slack(size))
    return largest


@pytest.mark.parametrize(("features", "inner"), [(6, 6), (8, 3), (5, 12)])
def test_the_sound_bound_is_never_below_the_layers_jacobian(features, inner):
    torch.manual_seed(features * inner)
    layer = SLLDense(features, inner).double()
    with torch.no_grad():
        layer.log_q.normal_()
        layer.down.bias.normal_()
    sound = float(bound_for(layer, (features,)).sound(layer))
    assert largest_jacobian_norm(layer, features, 20, seed=inner) <= sound
    assert sound >= 1.0


def test_a_construction_whose_t_is_too_large_gets_its_true_bound_not_one(monkeypatch):
    """Scaling T up breaks SLL's condition: the layer is no longer 1-Lipschitz, and the bound must say so."""
    torch.manual_seed(0)
    layer = SLLDense(6, 6).double()
    with torch.no_grad():
        layer.down.bias.fill_(1.0)  # every ReLU active near 0: J = I − 2WᵀTW there
    honest = SLLDense.scale
    monkeypatch.setattr(SLLDense, "scale", lambda self: 3 * honest(self))
    observed = largest_jacobian_norm(layer, 6, 30, seed=1)
    zero = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], torch.zeros(6, dtype=torch.float64))
    observed = max(observed, float(torch.linalg.matrix_norm(zero, 2)) / computed_norm_slack(6))
    sound = sll_bound(layer.down.weight, layer.scale(), layer.up_weight())
    assert observed > 1.5  # the broken construction really expands
    assert observed <= sound


def test_the_bound_covers_any_computed_weight_not_only_the_constructions():
    """The bound is proven for V as the layer computes it: for V = −2WᵀT exactly it is the construction's 1, and
    for a V moved away from that it stays above ‖I + V D W‖ with every ReLU active (D = I) or some off."""
    torch.manual_seed(1)
    layer = SLLDense(8, 8)
    weight, scale = layer.down.weight.detach().double(), layer.scale().detach().double()
    exact_v = -2 * weight.T * scale[None, :]
    assert sll_bound(weight, scale, exact_v) < 1 + 1e-9  # the construction's 1, up to the bound's own rounding
    for bump in (1e-3, 0.5):
        moved = exact_v.clone()
        moved[0, :] += bump
        sound = sll_bound(weight, scale, moved)
        for active in (torch.ones(8), (torch.arange(8) % 2).double()):
            jacobian = torch.eye(8, dtype=torch.float64) + moved @ torch.diag(active.double()) @ weight
            assert float(torch.linalg.matrix_norm(jacobian, 2)) / computed_norm_slack(8) <= sound


def test_a_row_normalised_head_is_certified_with_the_rows_it_computes():
    model = torch.nn.Sequential(torch.nn.Flatten(), SLLDense(16, 16), normalized_linear(16, 4))
    net = gloro.GloroNet(model, 0.1, input_shape=(1, 4, 4))
    with torch.no_grad():
        net.head.parametrizations.weight.original.mul_(7.0)
    rows = net.head.weight
    assert torch.allclose(rows.norm(dim=1), torch.ones(4, dtype=rows.dtype))
    k = net.lipschitz_constant()
    expected = net.sound_constants().sub_lipschitz * torch.cdist(rows.double(), rows.double())
    assert (k >= expected * (1 - 1e-12)).all() and (k <= 2 * float(net.sound_constants().sub_lipschitz) * 1.0001).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_an_sll_nets_rounding(dtype):
    net = gloro.GloroNet(gloro.create_model("SLL-D4", (1, 4, 4), 10, seed=3), 0.3)
    assert_box_offsets_cover_the_rounding(
        net, box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :4, :4], dtype
    )


def test_the_offset_cross_entropy_asks_the_label_to_lead_by_the_offset():
    logits, labels = torch.randn(32, 10), torch.randint(0, 10, (32,))
    assert torch.allclose(offset_cross_entropy(logits, labels, 0.0, 1.0), F.cross_entropy(logits, labels))
    shifted = logits.clone()
    shifted[torch.arange(32), labels] -= 0.7
    expected = 0.25 * F.cross_entropy(shifted / 0.25, labels)
    assert torch.allclose(offset_cross_entropy(logits, labels, 0.7, 0.25), expected)
    assert offset_cross_entropy(logits, labels, 1.0, 0.25) > offset_cross_entropy(logits, labels, 0.0, 0.25)


def test_an_sll_net_trained_on_digits_is_certified_soundly():
    """SLL's method on SLL-D4 for a few epochs: it certifies points, and PGD changes none of them."""
    net = gloro.GloroNet(gloro.create_model("SLL-D4", (1, 8, 8), 10, seed=0), 0.3, seed=0)
    assert_trained_certificates_survive_pgd(net, "sll", epochs=6, certified=20)


@settings(max_examples=12, deadline=None)
@given(
    channels=st.integers(1, 4),
    inner=st.integers(1, 5),
    kernel=st.sampled_from([1, 3]),
    size=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_a_conv_layers_sound_bound_is_never_below_its_jacobian(channels, inner, kernel, size, seed):
    torch.manual_seed(seed)
    layer = SLLConv2d(channels, inner, kernel).double()
    with torch.no_grad():
        layer.down.weight.normal_()
        layer.down.bias.normal_()
        layer.log_q.normal_()
    shape = (channels, size, size)
    bound = float(bound_for(layer, shape).sound(layer))
    assert largest_jacobian_norm(layer, shape, points=10, seed=seed) <= bound


def test_a_conv_construction_whose_t_is_too_large_gets_its_true_bound_not_one(monkeypatch):
    torch.manual_seed(0)
    layer = SLLConv2d(3, 4).double()
    with torch.no_grad():
        layer.down.bias.fill_(10.0)  # every ReLU active at these points: J = I − 2WᵀTW
    honest = SLLConv2d.scale
    monkeypatch.setattr(SLLConv2d, "scale", lambda self: 10 * honest(self))  # the conv's T is looser than dense
    shape = (3, 4, 4)
    jacobian = largest_jacobian_norm(layer, shape, points=20, seed=1)
    assert jacobian > 1.5  # the layer is no longer 1-Lipschitz
    assert float(bound_for(layer, shape).sound(layer)) >= jacobian
    assert float(bound_for(layer, shape).estimate(layer, 10)) == 1.0  # the claim, for training only


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_an_sll_conv_nets_rounding(dtype):
    net = gloro.GloroNet(gloro.create_model("SLL-XS", (1, 4, 4), 10, seed=3), 0.3)
    assert_box_offsets_cover_the_rounding(
        net, box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :4, :4], dtype
    )


def test_an_sll_conv_net_trained_on_digits_is_certified_soundly():
    model = nn.Sequential(*comparison_conv_net(ArchitectureSpec("SLL-XS", (1, 8, 8), 10), 8, sll_conv, per_block=2))
    initialise(model, "glorot_uniform", torch.Generator().manual_seed(0))
    net = gloro.GloroNet(model, 0.3, seed=0, input_shape=(1, 8, 8))
    assert_trained_certificates_survive_pgd(net, "sll", epochs=3, certified=20, learning_rate=0.01)


def sll_conv(channels: int, kernel: int, position: str, size: tuple[int, int]) -> SLLConv2d:
    return SLLConv2d(channels, channels, kernel)
