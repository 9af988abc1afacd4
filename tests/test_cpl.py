"""CPL layers (a third 1-Lipschitz family, one module of layers plus a method entry): the sound bound is never
below the layer's real Lipschitz constant, also when its power-iterated ‖W‖ is still far below the true one and
the construction's 1 fails; training advances that estimate; the rounding model covers the layers; CPL's
method trains nets whose certificates survive the attack."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_floating_point import box_points
from test_residual import assert_box_offsets_cover_the_rounding, assert_trained_certificates_survive_pgd
from test_sll import computed_norm_slack, largest_jacobian_norm
from torch import nn

import gloro
from gloro.architectures import ArchitectureSpec, initialise
from gloro.families.conv_net import comparison_conv_net
from gloro.families.cpl import CPLConv2d, CPLDense
from gloro.layer_bounds import bound_for


def converged(layer: CPLDense, steps: int = 200) -> CPLDense:
    """The layer after `steps` training forward passes: its power iteration run to (near) convergence."""
    layer.train()
    for _ in range(steps):
        layer(torch.zeros(1, layer.down.in_features, dtype=layer.down.weight.dtype))
    return layer.eval()


@pytest.mark.parametrize(("features", "inner"), [(6, 6), (8, 3), (5, 12)])
def test_the_sound_bound_is_never_below_the_layers_jacobian(features, inner):
    torch.manual_seed(features * inner)
    layer = converged(CPLDense(features, inner).double())
    with torch.no_grad():
        layer.down.bias.normal_()
    sound = float(bound_for(layer, (features,)).sound(layer))
    assert largest_jacobian_norm(layer, features, 20, seed=inner) <= sound
    assert 1.0 <= sound < 1 + 1e-6  # with ‖W‖ converged, the construction's 1 holds up to rounding


def test_training_forward_passes_bring_the_norm_estimate_to_the_true_norm_from_below():
    torch.manual_seed(2)
    layer = CPLDense(10, 7).double()
    true = float(torch.linalg.matrix_norm(layer.down.weight.detach(), 2))
    before = float(layer.norm_estimate().detach())
    layer.eval()(torch.zeros(1, 10, dtype=torch.float64))
    with torch.no_grad():
        layer.train()(torch.zeros(1, 10, dtype=torch.float64))
    assert float(layer.norm_estimate().detach()) == before  # evaluation and no-grad passes leave it alone
    after = float(converged(layer).norm_estimate().detach())
    assert before <= true * (1 + 1e-12) and after <= true * (1 + 1e-12)
    assert after >= true * (1 - 1e-6)


def test_a_norm_estimate_below_the_true_norm_gets_its_true_bound_not_one():
    """With v set to W's weakest direction, ‖Wv‖ is far below ‖W‖₂ and the layer expands: the claimed 1 is
    wrong, and the sound bound is above what the layer really does."""
    torch.manual_seed(0)
    layer = CPLDense(6, 6).double().eval()
    with torch.no_grad():
        layer.down.bias.fill_(1.0)  # every ReLU active near 0: J = I − (2/‖Wv‖²)·WᵀW there
        layer.vector.copy_(torch.linalg.svd(layer.down.weight).Vh[-1])
    zero = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], torch.zeros(6, dtype=torch.float64))
    observed = max(
        largest_jacobian_norm(layer, 6, 30, seed=1), float(torch.linalg.matrix_norm(zero, 2)) / computed_norm_slack(6)
    )
    sound = float(bound_for(layer, (6,)).sound(layer))
    assert observed > 1.5
    assert observed <= sound


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_a_cpl_nets_rounding(dtype):
    net = gloro.GloroNet(gloro.create_model("CPL-D4", (1, 4, 4), 10, seed=3), 0.3)
    for layer in net.model:
        if isinstance(layer, CPLDense):
            converged(layer)
    assert_box_offsets_cover_the_rounding(
        net, box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :4, :4], dtype
    )


def test_a_cpl_net_trained_on_digits_is_certified_soundly():
    """CPL's method on CPL-D4 for a few epochs: it certifies points, and PGD changes none of them."""
    net = gloro.GloroNet(gloro.create_model("CPL-D4", (1, 8, 8), 10, seed=0), 0.3, seed=0)
    assert_trained_certificates_survive_pgd(net, "cpl", epochs=6, certified=20)


def converged_conv(layer: CPLConv2d, steps: int = 300) -> CPLConv2d:
    """The conv layer after `steps` training forward passes (gradients on), in evaluation mode."""
    layer.train()
    for _ in range(steps):
        layer(torch.zeros(layer.vector.shape, dtype=layer.down.weight.dtype))
    return layer.eval()


def conv_matrix_norm(layer: CPLConv2d) -> float:
    """‖W‖₂ of the layer's zero-padded conv at its vector's size, from the explicit matrix (float64)."""
    shape = layer.vector.shape
    matrix = torch.autograd.functional.jacobian(
        lambda v: F.conv2d(v.view(shape), layer.down.weight, None, 1, layer.down.padding).flatten(),
        torch.zeros(shape.numel(), dtype=torch.float64),
    )
    return float(torch.linalg.matrix_norm(matrix.detach(), 2))


@settings(max_examples=12, deadline=None)
@given(
    channels=st.integers(1, 4),
    inner=st.integers(1, 5),
    kernel=st.sampled_from([1, 3]),
    size=st.integers(1, 5),
    trained=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_conv_layers_sound_bound_is_never_below_its_jacobian(channels, inner, kernel, size, trained, seed):
    """With u converged (the construction's 1 nearly holds) or at its flat start (‖Wu‖ can be far below ‖W‖₂,
    and the layer expands), the sound bound at the layer's input shape is above every Jacobian norm found."""
    torch.manual_seed(seed)
    layer = CPLConv2d(channels, inner, kernel, (size, size)).double()
    with torch.no_grad():
        layer.down.weight.normal_()
        layer.down.bias.normal_()
    layer = converged_conv(layer) if trained else layer.eval()
    shape = (channels, size, size)
    assert largest_jacobian_norm(layer, shape, points=10, seed=seed) <= float(bound_for(layer, shape).sound(layer))


def test_conv_training_passes_bring_the_norm_estimate_to_the_true_norm_from_below():
    torch.manual_seed(3)
    layer = CPLConv2d(3, 4, 3, (5, 5)).double()
    true = conv_matrix_norm(layer)
    before = float(layer.norm_estimate().detach())
    with torch.no_grad():
        layer.train()(torch.zeros(1, 3, 5, 5, dtype=torch.float64))
    layer.eval()(torch.zeros(1, 3, 5, 5, dtype=torch.float64))
    assert float(layer.norm_estimate().detach()) == before  # evaluation and no-grad passes leave it alone
    after = float(converged_conv(layer).norm_estimate().detach())
    assert before <= true * (1 + 1e-12) and after <= true * (1 + 1e-12)
    assert after >= true * (1 - 1e-6)


def test_a_conv_layers_norm_estimate_survives_a_checkpoint(tmp_path):
    """The iterate is part of the net's state: a saved and reloaded net computes with the σ̂ it was trained with."""
    net = gloro.GloroNet(gloro.create_model("CPL-XS", (1, 8, 8), 10, seed=1), 0.3)
    net.train()
    net(torch.rand(8, 1, 8, 8)).sum().backward()  # one training pass moves every layer's u
    net.eval()
    gloro.save(net, tmp_path / "cpl.pt", input_divisor=1.0)
    loaded = gloro.load(tmp_path / "cpl.pt")
    x = torch.rand(16, 1, 8, 8)
    layers = [layer for layer in net.model if isinstance(layer, CPLConv2d)]
    assert layers and all(
        not torch.equal(layer.vector, torch.full_like(layer.vector, layer.vector.flatten()[0])) for layer in layers
    )
    reloaded = [layer for layer in loaded.model if isinstance(layer, CPLConv2d)]
    assert all(torch.equal(a.vector, b.vector) for a, b in zip(layers, reloaded, strict=True))
    assert torch.equal(net(x), loaded(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_a_cpl_conv_nets_rounding(dtype):
    net = gloro.GloroNet(gloro.create_model("CPL-XS", (1, 4, 4), 10, seed=3), 0.3)
    for layer in net.model:
        if isinstance(layer, CPLConv2d):
            converged_conv(layer, steps=50)
    assert_box_offsets_cover_the_rounding(
        net, box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :4, :4], dtype
    )


def test_a_cpl_conv_net_trained_on_digits_is_certified_soundly():
    model = nn.Sequential(
        *comparison_conv_net(
            ArchitectureSpec("CPL-XS", (1, 8, 8), 10), 8, lambda c, k, position, size: CPLConv2d(c, c, k, size), 2
        )
    )
    initialise(model, "glorot_uniform", torch.Generator().manual_seed(0))
    net = gloro.GloroNet(model, 0.3, seed=0, input_shape=(1, 8, 8))
    # CPL's convs learn slower than SLL's here (one global step 2/σ̂² per layer): 10 epochs where SLL's take 3
    assert_trained_certificates_survive_pgd(net, "cpl", epochs=10, certified=20, learning_rate=0.01)
