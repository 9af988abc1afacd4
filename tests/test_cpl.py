"""CPL layers (a third 1-Lipschitz family, one module of layers plus a method entry): the sound bound is never
below the layer's real Lipschitz constant, also when its power-iterated ‖W‖ is still far below the true one and
the construction's 1 fails; training advances that estimate; the rounding model covers the layers; CPL's
method trains nets whose certificates survive the attack."""

import pytest
import torch
from test_floating_point import box_points
from test_residual import assert_box_offsets_cover_the_rounding, assert_trained_certificates_survive_pgd
from test_sll import computed_norm_slack, largest_jacobian_norm

import gloro
from gloro.families.cpl import CPLDense
from gloro.layer_rules import bound_for


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
