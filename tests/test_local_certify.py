"""Local Lipschitz certification: sound on every ball, never looser than the global bound, and compared with it."""

import copy
import json
import math

import pytest
import torch
from torch import nn

import gloro
from gloro.attack import pgd_l2
from gloro.certify.compare import compare_certifiers
from gloro.certify.crown import certify_crown
from gloro.certify.local import LocalPlan, certify_local, local_lipschitz
from gloro.certify.masked_operator import masked_spectral_norms, side_gram
from gloro.gloro_net import flatten_sequential
from gloro.layers import UnsupportedLayerError

EPSILON = 0.3


@pytest.fixture(scope="module")
def comparison(trained):
    net, (x, y) = trained
    return {row["certifier"]: row for row in compare_certifiers(net, x, y, EPSILON, ["global", "local", "crown"])}


def uniform_in_balls(center: torch.Tensor, epsilon: float, count: int, seed: int) -> torch.Tensor:
    """`count` points per center: half uniform in the ball, half on its sphere (where bounds are tightest)."""
    generator = torch.Generator().manual_seed(seed)
    x = center.repeat_interleave(count, 0).double()
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    direction /= direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    radius = torch.rand(len(x), generator=generator, dtype=torch.float64).pow(1 / x[0].numel())
    radius[::2] = 1.0
    return x + epsilon * radius.view(-1, *[1] * (x.dim() - 1)) * direction


def affine_outputs(net: gloro.GloroNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Every affine layer's output before the head, computed in float64 on a copy of the model."""
    outputs, h = [], x.double()
    for layer in flatten_sequential(copy.deepcopy(net.model).double())[:-1]:
        h = layer(h)
        if isinstance(layer, nn.Linear | nn.Conv2d | nn.AvgPool2d):
            outputs.append(h)
    return outputs


def test_local_certifies_every_point_the_global_one_does(comparison):
    local, reference, crown = comparison["local"], comparison["global"], comparison["crown"]
    assert local["num_points"] == 360 and local["first_not_certified"] == 0
    assert local["vra"] >= reference["vra"] >= 0.4
    assert local["vra"] <= local["clean_accuracy"]
    assert local["sec_per_point"] > 0 and reference["sec_per_point"] > 0
    json.dumps(comparison, allow_nan=False)  # plain JSON rows, no NaN or infinity
    assert crown["vra"] <= crown["clean_accuracy"] and crown["sec_per_point"] > 0


def test_local_bound_is_tighter_than_the_global_one_where_relus_are_off(trained):
    """The cap at the global K_ij makes "local ≤ global" hold by construction; what can fail is that the
    local bound gains anything: on a trained net, points with ReLUs proven off get a strictly smaller K."""
    net, (x, _) = trained
    bounds = local_lipschitz(net, x, EPSILON)
    global_k = net.lipschitz_constant(sound=True)
    off_diagonal = ~torch.eye(len(global_k), dtype=torch.bool)
    tighter = (bounds.margin_lipschitz[:, off_diagonal] < global_k[off_diagonal]).all(1)
    assert bool((bounds.dropped_units > 0).any())
    assert float(tighter.double().mean()) > 0.5


def test_no_locally_certified_point_falls_to_strong_pgd(trained):
    """Points certified by the local Lipschitz bound or by CROWN keep their prediction under 100-step PGD."""
    net, (x, _) = trained
    local, crown = certify_local(net, x, EPSILON), certify_crown(net, x, EPSILON)
    assert torch.equal(local.predictions, crown.predictions)
    certified = local.certified | crown.certified
    predictions = local.predictions[certified]
    assert int(local.certified.sum()) > 100 and int(crown.certified.sum()) > 100
    adversarial = pgd_l2(net.model, x[certified], predictions, EPSILON, steps=100, restarts=3)
    assert float((adversarial - x[certified]).flatten(1).norm(dim=1).max()) <= EPSILON * (1 + 1e-5)
    with torch.no_grad():
        flipped = net.predict_clean(adversarial).argmax(1) != predictions
    assert int(flipped.sum()) == 0, f"locally certified points broken by PGD: {flipped.nonzero().flatten().tolist()}"


def test_pre_activation_and_margin_bounds_hold_on_sampled_points_of_the_ball(trained):
    net, (x, _) = trained
    centers = x[:16]
    bounds, crown = local_lipschitz(net, centers, EPSILON), certify_crown(net, centers, EPSILON)
    samples = uniform_in_balls(centers, EPSILON, 64, seed=0)
    with torch.no_grad():
        outputs = affine_outputs(net, samples)
        logits = flatten_sequential(copy.deepcopy(net.model).double())[-1](outputs[-1].clamp_min(0))
    for (lower, upper), (crown_lower, crown_upper), z in zip(bounds.pre_activation, crown.pre_activation, outputs):
        lower, upper = lower.repeat_interleave(64, 0), upper.repeat_interleave(64, 0)
        assert bool((z >= lower - 1e-9).all()) and bool((z <= upper + 1e-9).all())
        crown_lower, crown_upper = crown_lower.repeat_interleave(64, 0), crown_upper.repeat_interleave(64, 0)
        # CROWN keeps the tighter of its own and the Lipschitz walk's bounds, widened by its rounding tolerance
        slack = 1e-9 * (1 + lower.flatten(1).abs() + upper.flatten(1).abs())
        assert bool((crown_lower >= lower.flatten(1) - slack).all())
        assert bool((crown_upper <= upper.flatten(1) + slack).all())
        # and they hold with no tolerance at all: the widening covers their float64 rounding
        assert bool((z.flatten(1) >= crown_lower).all()) and bool((z.flatten(1) <= crown_upper).all())
    top = crown.predictions.repeat_interleave(64)
    margins = logits.gather(1, top[:, None]) - logits
    bounds_per_sample = crown.margin_lower_bounds.repeat_interleave(64, 0).nan_to_num(posinf=0.0)  # +∞ at j
    assert bool((margins >= bounds_per_sample - 1e-9).all())


def test_tiny_balls_drop_every_clearly_negative_relu_and_tighten_k(trained):
    """At ε = 1e-6 each unit with z(x0) < −1e-3 is far from its ReLU boundary: all must be dropped, none other."""
    net, (x, _) = trained
    bounds = local_lipschitz(net, x, 1e-6)
    with torch.no_grad():
        relu_inputs = affine_outputs(net, x)  # in 2C2F every affine layer before the head feeds a ReLU
    clearly_off = sum((z < -1e-3).flatten(1).sum(1) for z in relu_inputs)
    negative = sum((z < 0).flatten(1).sum(1) for z in relu_inputs)
    assert bool((bounds.dropped_units >= clearly_off).all()) and bool((bounds.dropped_units <= negative).all())
    assert float(bounds.dropped_units.double().mean()) >= 10  # many units dropped per point
    assert bool((bounds.sub_lipschitz < net.sub_lipschitz(sound=True)).all())


def test_hand_built_net_gets_its_exact_local_constant():
    """y = W2 relu(W1 x + b): a unit far below zero on the ball is deleted, leaving one row of W1."""
    first, head = nn.Linear(2, 2), nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))  # rows of norm 5 and 1
        first.bias.copy_(torch.tensor([-100.0, 0.0]))  # unit 0 is off on any small ball near the origin
        head.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    net = gloro.GloroNet(nn.Sequential(first, nn.ReLU(), head), 0.1)
    x = torch.tensor([[0.5, 0.5]])
    bounds = local_lipschitz(net, x, 0.1)
    # on the ball only unit 1 remains: K = ‖(1, 0)‖ = 1 and the head distance is |2 − 0| = 2
    assert int(bounds.dropped_units[0]) == 1
    assert float(bounds.sub_lipschitz[0]) == pytest.approx(1.0)
    assert float(bounds.margin_lipschitz[0, 0, 1]) == pytest.approx(2.0)
    global_k = float(net.lipschitz_constant()[0, 1])
    assert global_k == pytest.approx(float(torch.linalg.matrix_norm(first.weight.detach().double(), 2)) * math.sqrt(5))
    lower, upper = bounds.pre_activation[0]
    # the first layer's exact ℓ2-ball bounds z(x0) ± ε‖w_k‖, tighter than the box [0.4, 0.6]² would give
    assert (float(lower[0, 0]), float(upper[0, 0])) == pytest.approx((-96.5 - 0.5, -96.5 + 0.5))


def test_crown_is_exact_on_a_linear_net():
    """Without ReLUs the margin is affine, so its minimum over the ball is y_j(x0) − y_i(x0) − ε‖∇‖ exactly."""
    torch.manual_seed(5)
    first, head = nn.Linear(6, 5), nn.Linear(5, 4)
    net = gloro.GloroNet(nn.Sequential(first, head), 0.1)
    x = torch.rand(3, 6)
    crown = certify_crown(net, x, 0.2)
    a, w = first.weight.detach().double(), head.weight.detach().double()
    logits = net.predict_clean(x).detach().double()
    for n in range(3):
        j = int(crown.predictions[n])
        for i in range(4):
            if i != j:
                expected = logits[n, j] - logits[n, i] - 0.2 * torch.linalg.vector_norm((w[j] - w[i]) @ a)
                assert float(crown.margin_lower_bounds[n, i]) == pytest.approx(float(expected), abs=1e-6)


def test_crown_rejects_minmax_networks():
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, activation="minmax", seed=0), 0.3)
    with pytest.raises(UnsupportedLayerError, match="MinMax"):
        certify_crown(net, torch.rand(2, 1, 8, 8), 0.1)


@pytest.mark.parametrize("kept", [0.0, 0.3, 0.6, 0.95, 1.0])
def test_masked_spectral_norms_match_an_svd_of_the_masked_matrix(kept):
    """Both ways of building the masked Gram (from the kept units, or the full Gram minus the masked-out ones)
    give the masked matrix's norm, never below it, on both eigenvalue routes (n below and above 64)."""
    generator = torch.Generator().manual_seed(0)
    for shape in [(7, 11), (11, 7), (30, 45), (150, 200), (200, 150)]:  # the last two reach LAPACK's top-only path
        matrix = torch.randn(shape, generator=generator, dtype=torch.float64)
        rows = (torch.rand((5, shape[0]), generator=generator) < kept).double()
        cols = (torch.rand((5, shape[1]), generator=generator) < kept).double()
        expected = torch.linalg.matrix_norm(matrix * rows[:, :, None] * cols[:, None, :], ord=2)
        norms = masked_spectral_norms(matrix, side_gram(matrix), rows, cols)
        assert torch.allclose(norms, expected, rtol=1e-10, atol=1e-6)  # above by at most the rounding slack
        assert (norms >= expected).all()  # no tolerance below the exact norm


@pytest.mark.parametrize("activation", ["relu", "minmax"])
def test_conv_fallback_bounds_are_sound_and_no_looser_than_global(activation):
    """Forcing the Frobenius / Schur fallback (no explicit matrices) still bounds the exact masked norms."""
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, activation=activation, seed=3), 0.3).eval()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    exact = local_lipschitz(net, x, 0.05, LocalPlan(net))
    fallback = local_lipschitz(net, x, 0.05, LocalPlan(net, max_entries=0))
    assert bool((fallback.layer_bounds >= exact.layer_bounds).all())
    assert bool((fallback.margin_lipschitz <= net.lipschitz_constant() * (1 + 1e-12)).all())
    if activation == "minmax":  # MinMax units are never dropped: the local bound is the global one
        assert int(exact.dropped_units.sum()) == 0
        assert torch.allclose(exact.margin_lipschitz, net.lipschitz_constant().expand_as(exact.margin_lipschitz))


def test_average_pooling_nets_get_sound_bounds():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)
    )
    net = gloro.GloroNet(model, 0.1, input_shape=(1, 8, 8)).eval()
    centers = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    bounds = local_lipschitz(net, centers, 0.2)
    assert bool((bounds.margin_lipschitz <= net.lipschitz_constant() * (1 + 1e-12)).all())
    samples = uniform_in_balls(centers, 0.2, 64, seed=4)
    with torch.no_grad():
        outputs = affine_outputs(net, samples)
    for (lower, upper), z in zip(bounds.pre_activation, outputs):
        lower, upper = lower.repeat_interleave(64, 0), upper.repeat_interleave(64, 0)
        assert bool((z >= lower - 1e-9).all()) and bool((z <= upper + 1e-9).all())


def test_local_certificate_radius_is_capped_at_epsilon_and_predicts_what_the_net_does(trained):
    net, (x, _) = trained
    certificate = certify_local(net, x[:50], EPSILON)
    assert bool((certificate.radius <= EPSILON).all())
    assert torch.equal(certificate.predictions, net.predict_clean(x[:50]).argmax(1))


def test_bad_arguments_are_rejected(trained):
    net, (x, _) = trained
    with pytest.raises(ValueError, match="epsilon"):
        local_lipschitz(net, x[:2], -0.1)
