"""AOL layers, dense and conv: certified with the bound of the weight they compute, never below its exact
norm, also when the rescaling is wrong; the claim is only the training estimate; the rounding model covers the
layers and the channel-moving reshapes of the comparison's conv net; digits AOL nets' certificates survive the
attack, the local certifier's included."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_floating_point import box_points
from test_residual import assert_box_offsets_cover_the_rounding, assert_trained_certificates_survive_pgd
from torch import nn

import gloro
from gloro.architectures import ArchitectureSpec, initialise
from gloro.audit import audit_soundness
from gloro.certify import create_certifier
from gloro.conv_norms import explicit_conv_matrix
from gloro.families.aol import AOLConv2d, AOLDense, aol_conv_net
from gloro.layer_bounds import bound_for
from gloro.layers import UnsupportedLayerError


def exact_norm(layer: AOLDense) -> float:
    """‖P D̂‖₂ of the weight the layer computes, from a float64 SVD less its own slack (a few n·u)."""
    weight = layer.rescaled_weight().detach().double()
    return float(torch.linalg.matrix_norm(weight, 2)) / (1 + 16 * max(weight.shape) * 2.0**-53)


@pytest.mark.parametrize(("features_in", "features_out"), [(6, 6), (9, 4), (5, 12)])
def test_the_sound_bound_is_never_below_the_computed_weights_norm_and_the_claim_is_the_estimate(
    features_in, features_out
):
    torch.manual_seed(features_in * features_out)
    layer = AOLDense(features_in, features_out)
    with torch.no_grad():
        layer.raw.weight.normal_()
    bound = bound_for(layer, (features_in,))
    assert exact_norm(layer) <= float(bound.sound(layer))
    assert exact_norm(layer) <= 1.0  # the construction holds for these weights, in float32 rounding's reach
    assert float(bound.estimate(layer, 10)) == 1.0  # training takes the claim


def exact_conv_norm(layer: AOLConv2d, input_shape) -> float:
    """The computed kernel's conv at `input_shape` (zero padding), from a float64 SVD less its own slack."""
    padding = layer.raw.padding
    matrix = explicit_conv_matrix(layer.rescaled_weight(), input_shape, (1, 1), padding)
    return float(torch.linalg.matrix_norm(matrix, 2)) / (1 + 16 * max(matrix.shape) * 2.0**-53)


@settings(max_examples=15, deadline=None)
@given(
    channels_in=st.integers(1, 4),
    channels_out=st.integers(1, 4),
    kernel=st.sampled_from([1, 3, 5]),
    size=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_a_conv_layers_sound_bound_is_never_below_its_exact_norm_which_the_construction_keeps_at_most_one(
    channels_in, channels_out, kernel, size, seed
):
    layer = AOLConv2d(channels_in, channels_out, kernel)
    with torch.no_grad():
        layer.raw.weight.normal_(generator=torch.Generator().manual_seed(seed))
    shape = (channels_in, size, size)
    bound = bound_for(layer, shape)
    assert exact_conv_norm(layer, shape) <= float(bound.sound(layer))
    # ≤ 1 in exact arithmetic; the computed float32 kernel is within a few roundings (rsqrt, products) of it, and
    # with one input channel and a 1×1 kernel the construction is tight to 1e-7, inside float32's reach
    assert exact_conv_norm(layer, shape) <= 1.0 + 16 * 2.0**-24
    assert float(bound.estimate(layer, 10)) == 1.0


def test_a_conv_rescaling_that_does_not_do_its_job_gets_its_true_bound_not_one(monkeypatch):
    layer = AOLConv2d(3, 3, 3, start="orthogonal")
    honest = AOLConv2d.rescaled_weight
    monkeypatch.setattr(AOLConv2d, "rescaled_weight", lambda self: 2.5 * honest(self))
    net = gloro.GloroNet(nn.Sequential(layer, nn.Flatten(), nn.Linear(48, 3)), 0.1, input_shape=(3, 4, 4))
    assert exact_conv_norm(layer, (3, 4, 4)) > 1.2  # the claim of 1 is false for this layer
    assert float(net.sound_constants().sub_lipschitz) >= exact_conv_norm(layer, (3, 4, 4))
    net.train()
    assert float(net.sub_lipschitz()) == 1.0


def test_crown_refuses_a_reshape_that_moves_entries_rather_than_chain_the_wrong_matrices():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.PixelUnshuffle(2), nn.Flatten(), nn.Linear(32, 3)
    )
    net = gloro.GloroNet(model, 0.1, input_shape=(1, 4, 4))
    with pytest.raises(UnsupportedLayerError, match="moves entries"):
        create_certifier("crown")(net, torch.rand(2, 1, 4, 4), 0.1)


def test_a_rescaling_that_does_not_do_its_job_gets_its_true_bound_not_one(monkeypatch):
    torch.manual_seed(0)
    layer = AOLDense(8, 8)
    honest = AOLDense.rescaled_weight
    monkeypatch.setattr(AOLDense, "rescaled_weight", lambda self: 2.5 * honest(self))
    net = gloro.GloroNet(torch.nn.Sequential(layer, torch.nn.Linear(8, 3)), 0.1, input_shape=(8,))
    assert exact_norm(layer) > 2
    assert float(net.sound_constants().sub_lipschitz) >= exact_norm(layer)  # what certificates use
    assert float(net.sub_lipschitz(sound=True)) >= exact_norm(layer)  # what the reports print as the sound K
    net.train()
    assert float(net.sub_lipschitz()) == 1.0  # what the construction claims: Table 1 flags the gap


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_an_aol_nets_rounding(dtype):
    net = gloro.GloroNet(gloro.create_model("AOL-D4", (1, 4, 4), 10, seed=3, init="orthogonal"), 0.3)
    assert_box_offsets_cover_the_rounding(
        net, box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :4, :4], dtype
    )


def test_an_aol_net_trained_on_digits_is_certified_soundly():
    net = gloro.GloroNet(gloro.create_model("AOL-D4", (1, 8, 8), 10, seed=0, init="orthogonal"), 0.3, seed=0)
    assert_trained_certificates_survive_pgd(net, "aol", epochs=6, certified=20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_an_aol_conv_nets_rounding(dtype):
    """Channel padding, channel selection and space-to-depth carried through the rounding model."""
    model = gloro.create_model("AOL-XS", (1, 8, 8), 10, seed=3, init="orthogonal")
    with torch.no_grad():  # away from the identity start, so that every layer rounds
        for layer in model.modules():
            if isinstance(layer, AOLConv2d):
                layer.raw.weight.add_(
                    0.1 * torch.randn(layer.raw.weight.shape, generator=torch.Generator().manual_seed(1))
                )
    net = gloro.GloroNet(model, 0.3)
    assert_box_offsets_cover_the_rounding(
        net, box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :8, :8], dtype
    )


def test_an_aol_conv_net_trained_on_digits_is_certified_soundly_by_the_global_and_local_bounds():
    from gloro.data import load_dataset

    spec = ArchitectureSpec("AOL-XS", (1, 8, 8), 10)
    model = nn.Sequential(*aol_conv_net(spec, width=8, per_block=2))  # AOL-XS with 2 convs a block, not 5
    initialise(model, "orthogonal", torch.Generator().manual_seed(0))
    net = gloro.GloroNet(model, 0.3, seed=0, input_shape=(1, 8, 8))
    assert_trained_certificates_survive_pgd(net, "aol", epochs=3, certified=20)
    images = load_dataset("digits", "test", progress=False).images.float()[:30] / 16.0
    local = create_certifier("local")(net, images, 0.3)
    report = audit_soundness(net, images, 0.3, certificate=local, progress=False, steps=20)
    assert report["certified"] > 3 and report["violations"] == 0
