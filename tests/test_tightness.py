"""Empirical lower bounds on the margin Lipschitz constants: never above a sound bound, and not toothless."""

import json

import pytest
import torch
from torch import nn

import gloro
from gloro.certify.local import local_lipschitz
from gloro.tightness import (
    global_tightness,
    local_margin_lipschitz_lower_bound,
    local_tightness,
    margin_lipschitz_lower_bound,
)

EPSILON = 0.3


def linear_net(seed: int = 0) -> tuple[gloro.GloroNet, torch.Tensor]:
    """Linear → Linear head, no activation, and its exact margin Lipschitz constants ‖A ᵀ(w_j − w_i)‖₂."""
    torch.manual_seed(seed)
    first, head = nn.Linear(16, 12), nn.Linear(12, 5)
    net = gloro.GloroNet(nn.Sequential(first, head), 0.1)
    a, w = first.weight.detach().double(), head.weight.detach().double()
    exact = torch.linalg.vector_norm((w[None, :, :] - w[:, None, :]) @ a, dim=-1)
    return net, exact


def test_global_lower_bound_reaches_the_exact_constant_of_a_linear_net():
    net, exact = linear_net()
    lower = margin_lipschitz_lower_bound(net, steps=200, restarts=2)
    off = ~torch.eye(5, dtype=torch.bool)
    assert bool((lower[off] >= 0.95 * exact[off]).all())
    assert bool((lower <= exact * (1 + 1e-9)).all())
    assert bool((lower <= net.lipschitz_constant(sound=True) * (1 + 1e-9)).all())
    assert torch.equal(lower, lower.T) and bool((lower.diagonal() == 0).all())


def test_local_lower_bound_reaches_the_exact_constant_of_a_linear_net():
    net, exact = linear_net(1)
    x = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    predictions, lower = local_margin_lipschitz_lower_bound(net, x, 0.1, steps=100, restarts=2)
    expected = exact[predictions]
    others = torch.arange(5)[None, :] != predictions[:, None]
    assert bool((lower[others] >= 0.95 * expected[others]).all())
    assert bool((lower <= expected * (1 + 1e-9)).all())


def test_global_lower_bound_never_exceeds_the_sound_bound(trained):
    net, (x, _) = trained
    sound = net.lipschitz_constant(sound=True)
    for box in (None, (0.0, 1.0)):
        lower = margin_lipschitz_lower_bound(net, inputs=x, steps=150, restarts=2, box=box)
        off = ~torch.eye(10, dtype=torch.bool)
        assert bool((lower <= sound * (1 + 1e-9)).all())
        assert float((lower[off] / sound[off]).max()) > 0.5  # a real search, not random pairs


def test_local_lower_bound_never_exceeds_the_local_sound_bound(trained):
    net, (x, _) = trained
    points = x[:12]
    predictions, lower = local_margin_lipschitz_lower_bound(net, points, EPSILON, steps=60, restarts=2)
    local = local_lipschitz(net, points, EPSILON).margin_lipschitz[torch.arange(12), predictions]
    assert bool((lower <= local * (1 + 1e-9)).all())
    assert float(lower.max(dim=1).values.min()) > 0  # every point's search found a slope


def test_box_constrained_local_search_stays_sound(trained):
    net, (x, _) = trained
    predictions, lower = local_margin_lipschitz_lower_bound(net, x[:6], EPSILON, steps=40, restarts=2, box=(0.0, 1.0))
    local = local_lipschitz(net, x[:6], EPSILON).margin_lipschitz[torch.arange(6), predictions]
    assert bool((lower <= local * (1 + 1e-9)).all())


def test_reports_are_plain_json_with_ratios_of_at_least_one(trained):
    net, (x, _) = trained
    report = global_tightness(net, inputs=x, steps=50, restarts=2)
    assert len(report["pairs"]) == 45
    assert all(row["sound_over_lower"] is None or row["sound_over_lower"] >= 1 - 1e-9 for row in report["pairs"])
    assert report["max_sound_over_max_lower"] >= 1 - 1e-9
    json.dumps(report, allow_nan=False)
    local = local_tightness(net, x[:5], steps=20, restarts=1)
    assert local["num_points"] == 5 and local["max_lower_over_local"] <= 1 + 1e-9
    assert local["search"]["learning_rate"] == pytest.approx(EPSILON / 20)
    assert all(p["max_lower_over_global"] <= p["max_lower_over_local"] + 1e-12 for p in local["points"])
    json.dumps(local, allow_nan=False)


def test_the_search_leaves_the_model_untouched(trained):
    net, (x, _) = trained

    def state():
        return {
            name: (p.detach().clone(), None if p.grad is None else p.grad.clone()) for name, p in net.named_parameters()
        }

    before = state()
    margin_lipschitz_lower_bound(net, steps=3, restarts=1)
    local_margin_lipschitz_lower_bound(net, x[:2], EPSILON, steps=3, restarts=1)
    for name, (value, grad) in state().items():
        assert torch.equal(value, before[name][0]), name
        assert (grad is None and before[name][1] is None) or torch.equal(grad, before[name][1]), name
    assert not net.training


def test_bad_search_settings_are_rejected(trained):
    net, (x, _) = trained
    with pytest.raises(ValueError, match="restarts"):
        margin_lipschitz_lower_bound(net, restarts=0)
    with pytest.raises(ValueError, match="learning_rate"):
        margin_lipschitz_lower_bound(net, learning_rate=0.0)
    with pytest.raises(ValueError, match="box"):
        margin_lipschitz_lower_bound(net, box=(1.0, 0.0))
    with pytest.raises(ValueError, match="box"):
        local_margin_lipschitz_lower_bound(net, x[:2] + 2, EPSILON, box=(0.0, 1.0))
    with pytest.raises(ValueError, match="epsilon"):
        local_margin_lipschitz_lower_bound(net, x[:2], 0.0)


def test_searching_in_chunks_finds_the_same_pairs_as_all_at_once():
    net, _ = linear_net()
    net.double()  # float64: the chunks' and the whole batch's products then agree to ~1e-15, not to float32's 1e-7
    whole = margin_lipschitz_lower_bound(net, steps=20, restarts=3, batch_size=1000)
    chunked = margin_lipschitz_lower_bound(net, steps=20, restarts=3, batch_size=7)
    assert torch.allclose(whole, chunked, rtol=1e-12, atol=0)
    x = torch.rand(4, 16, dtype=torch.float64)
    _, local_whole = local_margin_lipschitz_lower_bound(net, x, EPSILON, steps=10, batch_size=1000)
    _, local_chunked = local_margin_lipschitz_lower_bound(net, x, EPSILON, steps=10, batch_size=5)
    assert torch.allclose(local_whole, local_chunked, rtol=1e-12, atol=0)


def test_a_sample_of_class_pairs_is_searched_when_there_are_too_many():
    net, exact = linear_net()  # 5 classes: 10 pairs
    lower = margin_lipschitz_lower_bound(net, steps=50, restarts=2, max_pairs=4)
    first, second = torch.triu_indices(5, 5, offset=1)
    searched = ~lower[first, second].isnan()
    assert int(searched.sum()) == 4
    assert bool((lower[first, second][searched] <= exact[first, second][searched] * (1 + 1e-9)).all())
    assert torch.equal(lower.isnan(), lower.T.isnan()) and bool((lower.diagonal() == 0).all())
    report = global_tightness(net, steps=50, restarts=2, max_pairs=4)
    assert report["pairs_searched"] == 4 and report["pairs_total"] == 10 and len(report["pairs"]) == 4
    json.dumps(report, allow_nan=False)
    with pytest.raises(ValueError, match="max_pairs"):
        margin_lipschitz_lower_bound(net, max_pairs=0)
