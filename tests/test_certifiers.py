"""Every certifier behind one interface: registered by name, sound against attacks, and BCP and KW checked
against independent computations (an exact ball ∩ box maximum, PGD, sampled points, the authors' library)."""

import copy
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gloro
from gloro.attack import pgd_l2
from gloro.certify import Certificate, create_certifier, list_certifiers
from gloro.certify.bcp import ball_box_maximum, bcp_margins, propagate
from gloro.certify.kw import check_kw_model, kw_margins
from gloro.layers import UnsupportedLayerError

EPSILON = 0.3


@pytest.fixture(scope="module")
def certificates(trained):
    net, (x, _) = trained
    return {name: create_certifier(name)(net, x, EPSILON) for name in list_certifiers()}


def float64_margins(net: gloro.GloroNet, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """z_i − z_c of the real-valued net, evaluated in float64 on a copy of the model."""
    with torch.no_grad():
        logits = copy.deepcopy(net.model).double()(x.double())
    return logits - logits.gather(1, classes[:, None])


def test_the_registry_knows_every_certifier_and_names_them_on_a_typo():
    assert set(list_certifiers()) >= {"global", "local", "crown", "kw", "bcp"}
    with pytest.raises(ValueError, match="unknown certifier 'bpc'; known certifiers: bcp, crown, global, kw, local"):
        create_certifier("bpc")
    with pytest.raises(ValueError, match="solver_iterations must be >= 1"):
        create_certifier("bcp", solver_iterations=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        create_certifier("global", batch_size=0)


@pytest.mark.parametrize("name", list_certifiers())
def test_each_certifier_certifies_the_nets_own_predictions(name, trained, certificates):
    net, (x, y) = trained
    certificate = certificates[name]
    assert isinstance(certificate, Certificate) and certificate.method == name and certificate.epsilon == EPSILON
    with torch.no_grad():
        assert torch.equal(certificate.predictions, net.predict_clean(x).argmax(1))
    assert certificate.certified.dtype == torch.bool and len(certificate) == len(x)
    assert 0.4 <= certificate.vra(y) <= (certificate.predictions == y).double().mean().item()
    assert (certificate.radius is None) == (name not in ("global", "local"))
    row = certificate.to_row(y)
    assert row["certifier"] == name and row["sec_per_point"] > 0 and json.loads(row["settings"]) == certificate.settings
    assert len(certificate.point_rows()) == len(x)


@pytest.mark.parametrize("name", list_certifiers())
def test_no_certified_point_falls_to_strong_pgd(name, trained, certificates):
    net, (x, _) = trained
    certificate = certificates[name]
    chosen = certificate.certified
    predictions = certificate.predictions[chosen]
    adversarial = pgd_l2(net.model, x[chosen], predictions, EPSILON, steps=100, restarts=3, seed=1)
    with torch.no_grad():
        flipped = net.predict_clean(adversarial).argmax(1) != predictions
    assert int(flipped.sum()) == 0, f"{name}: certified points broken by PGD: {flipped.nonzero().flatten().tolist()}"


def test_bcp_and_kw_certify_every_point_the_global_bound_does(certificates):
    """BCP's ball alone is the global bound; KW's polytope lies inside the Lipschitz ball of the margins."""
    global_certified = certificates["global"].certified
    for name in ("bcp", "kw"):
        missed = global_certified & ~certificates[name].certified
        assert int(missed.sum()) == 0, f"{name} misses globally certified points {missed.nonzero().flatten().tolist()}"
    assert int(certificates["kw"].certified.sum()) > int(global_certified.sum())  # KW is the tighter relaxation


def exact_ball_box_maximum(c: torch.Tensor, rho: float, lo: torch.Tensor, hi: torch.Tensor) -> float:
    """max cᵀδ over ‖δ‖ ≤ ρ, lo ≤ δ ≤ hi, independently: δ(τ) = clip(c/τ, lo, hi) (KKT), τ by bisection."""
    c, lo, hi = c.double(), lo.double(), hi.double()
    clipped_box = torch.where(c > 0, hi, lo)
    if float(clipped_box.norm()) <= rho:  # the box corner is inside the ball
        return float((c * clipped_box).sum())
    low, high = 1e-12, 1e12
    for _ in range(400):
        tau = (low * high) ** 0.5
        if float(torch.clamp(c / tau, lo, hi).norm()) > rho:
            low = tau
        else:
            high = tau
    return float((c * torch.clamp(c / high, lo, hi)).sum())


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.floats(0.01, 3.0), st.integers(0, 2**31 - 1))
def test_ball_box_bound_is_never_below_the_exact_maximum_and_tight_at_the_fixed_point(d, rho, seed):
    generator = torch.Generator().manual_seed(seed)
    c = torch.randn(d, generator=generator, dtype=torch.float64)
    lo = -torch.rand(d, generator=generator, dtype=torch.float64) * rho
    hi = torch.rand(d, generator=generator, dtype=torch.float64) * rho
    exact = exact_ball_box_maximum(c, rho, lo, hi)
    bound = float(
        ball_box_maximum(
            c.view(1, 1, d),
            torch.tensor(rho, dtype=torch.float64).view(1, 1, 1),
            lo.view(1, 1, d),
            hi.view(1, 1, d),
            d + 1,
        )
    )
    assert bound >= exact - 1e-12 * max(1.0, abs(exact))  # the bisection itself rounds at ~1e-15
    assert bound <= exact + 1e-9 * max(1.0, abs(exact))
    # one solver step still gives a bound, only a looser one
    loose = float(
        ball_box_maximum(
            c.view(1, 1, d), torch.tensor(rho, dtype=torch.float64).view(1, 1, 1), lo.view(1, 1, d), hi.view(1, 1, d), 1
        )
    )
    assert loose >= exact - 1e-12 * max(1.0, abs(exact))


def test_bcp_margin_bounds_hold_at_pgd_points_and_sampled_points(trained):
    net, (x, _) = trained
    x = x[:64]
    with torch.no_grad():
        classes = net.predict_clean(x).argmax(1)
        _, bounds = bcp_margins(net, x, classes, EPSILON, sound=True)
    # every other class pushed up by a targeted attack on the margin: the bound must stay above what it finds
    for target in range(net.num_classes):
        chosen = classes != target
        adversarial = pgd_l2(net.model, x[chosen], classes[chosen], EPSILON, steps=50, restarts=2, seed=target)
        found = float64_margins(net, adversarial, classes[chosen])
        assert bool((found <= bounds[chosen]).all())
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn((len(x), 32, *x.shape[1:]), generator=generator, dtype=torch.float64)
    direction /= direction.flatten(2).norm(dim=2)[..., None, None, None]
    samples = (x.double()[:, None] + EPSILON * direction).flatten(0, 1)  # on the sphere, where bounds are tightest
    found = float64_margins(net, samples, classes.repeat_interleave(32))
    assert bool((found <= bounds.repeat_interleave(32, 0)).all())


def test_kw_certifies_only_what_the_library_bounds_below_the_offsets_and_agrees_with_it_in_float32(
    trained, certificates
):
    """The certifier never certifies a point whose KW dual bound (the authors' library on a float64 copy of
    the net) plus the point's rounding allowance b_j (its ball's, `RoundingModel.ball_pairs`) reaches 0; against
    the library run as its authors run it, in float32, it differs only where that bound lies within the
    box-wide O_ij/2 plus the float32 dual's own rounding of zero."""
    net, (x, _) = trained
    kw = certificates["kw"]
    predictions = kw.predictions
    model = copy.deepcopy(net.model).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        margins32 = kw_margins(model, x.contiguous(), predictions, EPSILON).double()
        margins64 = kw_margins(copy.deepcopy(model).double(), x.double().contiguous(), predictions, EPSILON)
    others = torch.ones_like(margins64, dtype=torch.bool).scatter(1, predictions[:, None], False)
    half_offsets = net.margin_offsets()[predictions] / 2
    ball = net.sound_constants().rounding.ball_pairs(x, torch.full((len(x),), EPSILON), predictions)

    def worst(margins: torch.Tensor) -> torch.Tensor:
        return margins.masked_fill(~others, float("-inf")).amax(1)

    # the guarantee: a certified point's exact-dual bound, less its rounding allowance, is below zero
    unsafe = kw.certified & (worst(margins64 + ball) >= 0)
    assert not unsafe.any(), f"certified beyond the float64 dual less b_j: {unsafe.nonzero().flatten().tolist()}"
    # float32's rounding of the dual, as measured here, lies well inside the allowance the certifier subtracts
    rounding32 = float((margins32 - margins64)[others].abs().max())
    assert rounding32 <= float(ball[others].min())
    # agreement: outside the band [−(O/2 + rounding), rounding] the float32 library decides as the certifier does
    worst32, band = worst(margins32), half_offsets.masked_fill(~others, 0).amax(1) + rounding32
    assert bool(kw.certified[worst32 < -band].all()), "the library certifies with room to spare, the certifier not"
    assert not kw.certified[worst32 > rounding32].any(), "the certifier certifies what the float32 library rejects"
    assert bool((worst32 < -band).any()) and bool((worst32 > rounding32).any())  # both sides are exercised


def test_kw_refuses_a_point_whose_dual_bound_lies_within_the_rounding_allowance(trained, certificates):
    """At the radius where the exact dual bound of some margin sits at −b_j/4, inside the point's own allowance,
    the float32 net may flip in the ball: the certifier must refuse the point that one ignoring rounding accepts."""
    net, (x, _) = trained
    index = int(certificates["kw"].certified.nonzero()[0])
    point, prediction = x[index : index + 1], certificates["kw"].predictions[index : index + 1]
    model = copy.deepcopy(net.model).double().to(memory_format=torch.contiguous_format)
    others = torch.ones(1, net.num_classes, dtype=torch.bool).scatter(1, prediction[:, None], False)
    rounding = net.sound_constants().rounding

    def bounds(epsilon: float) -> torch.Tensor:
        with torch.no_grad():
            return kw_margins(model, point.double().contiguous(), prediction, epsilon).masked_fill(~others, -math.inf)

    def quarter(epsilon: float) -> torch.Tensor:
        return rounding.ball_pairs(point, torch.tensor([epsilon]), prediction) / 4

    low, high = EPSILON, 10.0  # certified at ε; at 10 some bound is far above zero
    assert float((bounds(low) + quarter(low)).max()) < 0 < float((bounds(high) + quarter(high)).max())
    for _ in range(60):  # bisection for the radius where max_j (bound_j + b_j/4) crosses zero
        middle = (low + high) / 2
        low, high = (middle, high) if float((bounds(middle) + quarter(middle)).max()) < 0 else (low, middle)
    assert float(bounds(high).max()) < 0 and float((bounds(high) + 4 * quarter(high)).max()) > 0  # inside b
    assert not bool(create_certifier("kw")(net, point, high).certified[0])


def test_kw_rejects_what_the_library_cannot_bound_with_the_reason():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))
    net = gloro.GloroNet(model, 0.1, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"\(H \+ 2p − k\) = 7 is not divisible by the stride"):
        check_kw_model(net)
    pooled = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(UnsupportedLayerError, match="KW .* bounds Linear, Conv2d, ReLU and Flatten layers, not Avg"):
        create_certifier("kw")(gloro.GloroNet(pooled, 0.1, input_shape=(1, 8, 8)), torch.rand(2, 1, 8, 8), 0.1)


def test_bcp_rejects_layers_it_does_not_propagate():
    model = nn.Sequential(nn.Linear(4, 4), gloro.MinMax(), nn.Linear(4, 3))
    with pytest.raises(UnsupportedLayerError, match="BCP here propagates through"):
        create_certifier("bcp")(gloro.GloroNet(model, 0.1), torch.rand(2, 4), 0.1)


@pytest.mark.parametrize("epsilon", [0.05, EPSILON, 1.0])
def test_bcp_ball_and_box_contain_the_features_of_sampled_points(trained, epsilon):
    """Every penultimate feature vector reachable from the ε-ball lies in BCP's box and in its ball."""
    net, (x, _) = trained
    x = x[:32]
    with torch.no_grad():
        mu, rho, lower, upper = propagate(net.layers[:-1], x, epsilon, net.layer_bounds(sound=True), torch.float64)
        generator = torch.Generator().manual_seed(1)
        direction = torch.randn((len(x), 64, *x.shape[1:]), generator=generator, dtype=torch.float64)
        direction /= direction.flatten(2).norm(dim=2)[..., None, None, None]
        scale = torch.rand((len(x), 64, 1, 1, 1), generator=generator, dtype=torch.float64)
        scale[:, ::2] = 1.0  # half on the sphere
        samples = (x.double()[:, None] + epsilon * scale * direction).flatten(0, 1)
        features = copy.deepcopy(net.model).double()[:-1](samples)
    lower, upper, mu = (t.repeat_interleave(64, 0) for t in (lower, upper, mu))
    assert bool((features >= lower).all()) and bool((features <= upper).all())
    assert bool(((features - mu).norm(dim=1) <= rho.repeat_interleave(64)).all())
    assert bool((upper - lower < 2 * rho.repeat_interleave(64)[:, None]).any())  # the box is tighter somewhere


def extreme_activations(prefix: nn.Module, x: torch.Tensor, units: torch.Tensor, epsilon: float, sign: float):
    """PGD (normalised steps, float64) for sign·h_unit over points strictly inside B(x, ε): returns h there."""
    radius = epsilon * (1 - 1e-9)  # strictly inside, so the value found is one the ball reaches
    flat_index = torch.arange(len(x))
    delta = torch.zeros_like(x, requires_grad=True)
    for step in range(40):
        value = sign * prefix(x + delta).flatten(1)[flat_index, units]
        (gradient,) = torch.autograd.grad(value.sum(), delta)
        with torch.no_grad():
            norm = gradient.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, *[1] * (x.dim() - 1))
            delta += radius * (0.5 if step < 20 else 0.05) * gradient / norm
            delta *= (radius / delta.flatten(1).norm(dim=1).clamp_min(radius)).view(-1, *[1] * (x.dim() - 1))
    with torch.no_grad():
        return prefix(x + delta).flatten(1)[flat_index, units]


@pytest.mark.parametrize("epsilon", [0.05, EPSILON])
def test_bcp_boxes_contain_what_an_attack_on_each_unit_reaches(trained, epsilon):
    """Layer by layer, units pushed to their extremes over the ball by PGD stay inside BCP's box (for an affine
    first layer the attack is exact, so a box even slightly too tight fails)."""
    net, (x, _) = trained
    x = x[:6].double()
    trace = []
    with torch.no_grad():
        propagate(net.layers[:-1], x.float(), epsilon, net.layer_bounds(sound=True), torch.float64, trace)
    model = copy.deepcopy(net.model).double()
    generator = torch.Generator().manual_seed(2)
    for depth, (_, _, lower, upper) in enumerate(trace, start=1):
        width = lower[0].numel()
        units = torch.randint(width, (len(x), 24), generator=generator).flatten()
        centers = x.repeat_interleave(24, 0)
        prefix = model[:depth]
        lowest = extreme_activations(prefix, centers, units, epsilon, -1.0)
        highest = extreme_activations(prefix, centers, units, epsilon, 1.0)
        rows = torch.arange(len(x)).repeat_interleave(24)
        assert bool((lower.flatten(1)[rows, units] <= lowest).all()), f"layer {depth}: box above a reached value"
        assert bool((upper.flatten(1)[rows, units] >= highest).all()), f"layer {depth}: box below a reached value"


def test_the_audit_fails_a_planted_certificate_without_radii(trained, tmp_path):
    """A certifier that claims every point (no radius) is caught: every flip inside the ε-ball is a violation."""
    from gloro.audit import SoundnessError, audit_soundness

    net, (x, _) = trained
    with torch.no_grad():
        predictions = net.predict_clean(x).argmax(1)
    planted = Certificate(predictions, torch.ones(len(x), dtype=torch.bool), None, EPSILON, "planted")
    with pytest.raises(SoundnessError, match="the planted certificate is unsound"):
        audit_soundness(net, x, certificate=planted, steps=20, restarts=1, progress=False)
    honest = create_certifier("bcp")(net, x, EPSILON)
    summary = audit_soundness(net, x, certificate=honest, steps=20, restarts=1, progress=False)
    assert summary["certifier"] == "bcp" and summary["violations"] == 0 and summary["certified"] > 100


def test_compared_certifiers_are_timed_side_by_side_on_the_points_the_slowest_certifies_in_its_time(
    trained, monkeypatch
):
    """The time ratios of the certification cost table: every certifier on the same points in interleaved
    rounds (a quick one repeated within each round), the certificates from one call on all the points."""
    from gloro.certify import base, compare

    net, (x, y) = trained
    calls = {}
    original = base.Certifier.__call__

    def counted(self, net, images, *args, **kwargs):
        calls.setdefault(self.name, []).append(len(images))
        return original(self, net, images, *args, **kwargs)

    monkeypatch.setattr(base.Certifier, "__call__", counted)
    rows = compare.compare_certifiers(net, x[:60], y[:60], EPSILON, ["global", "local"])
    rows = {row["certifier"]: row for row in rows}
    assert rows["global"]["time_over_first"] == 1.0 and rows["local"]["timed_points"] == 60
    assert (
        rows["local"]["time_over_first_q1"] <= rows["local"]["time_over_first"] <= rows["local"]["time_over_first_q3"]
    )
    assert calls["local"] == [60] * (1 + compare.ROUNDS)  # one call for the certificate, one per round
    assert len(calls["global"]) >= 1 + compare.ROUNDS and len(calls["global"]) % compare.ROUNDS == 1
    full = {name: create_certifier(name)(net, x[:60], EPSILON) for name in ("global", "local")}
    for name, certificate in full.items():  # the rounds leave the certificates as one call gives them
        assert rows[name]["certified"] == int(certificate.certified.sum())
    assert rows["local"]["vra"] >= rows["global"]["vra"]

    calls.clear()
    monkeypatch.setattr(compare, "CALL_SECONDS", 0.0)  # slower than allowed: one point timed, the same for all
    rows = {
        row["certifier"]: row for row in compare.compare_certifiers(net, x[:60], y[:60], EPSILON, ["global", "local"])
    }
    assert rows["local"]["timed_points"] == 1 and calls["local"][1:] == [1] * compare.ROUNDS
    assert set(calls["global"][1:]) == {1} and calls["global"][0] == calls["local"][0] == 60
