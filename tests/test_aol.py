"""AOL layers: certified with the bound of the weight they compute, never below its exact norm, also when the
rescaling is wrong; the claim is only the training estimate; the rounding model covers the layer; a digits
AOL net's certificates survive the attack."""

import pytest
import torch
from test_floating_point import box_points
from test_residual import assert_box_offsets_cover_the_rounding, assert_trained_certificates_survive_pgd

import gloro
from gloro.families.aol import AOLDense
from gloro.layer_rules import bound_for


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
