"""The certification report: VRA at many radii from one pass, Lipschitz constants, throughput, JSON output."""

import copy
import itertools
import json
import math

import pytest
import torch
from conftest import float32_estimate_slack
from hypothesis import given, settings
from hypothesis import strategies as st

import gloro
from gloro.data import load_digits
from gloro.evaluation import STANDARD_RADII, certification_report, certify_all, radius_label, vra_at_radii

EPSILON = 0.3


@pytest.fixture(scope="module")
def trained():
    """2C2F trained briefly on digits (not frozen: the report computes the sound constants itself)."""
    x, y = load_digits("train")
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=1), 0.45, eval_epsilon=EPSILON, seed=1)
    gloro.train(net, x, y, gloro.TrainingRecipe(epochs=6, batch_size=64, seed=1), progress=False)
    return net.eval(), load_digits("test")


def test_report_agrees_with_evaluate_and_is_json(trained):
    net, (x, y) = trained
    report = certification_report(net, x, y, batch_size=100)
    quick = gloro.evaluate(net, x, y)
    metrics = report.metrics
    json.dumps(metrics, allow_nan=False)
    for key in ("clean_accuracy", "vra", "rejection_rate", "epsilon"):
        assert metrics[key] == quick[key]
    assert metrics["num_examples"] == len(y) == len(report.radius)
    assert report.vra_at([EPSILON]) == [quick["vra"]]
    assert vra_at_radii(quick["radius"], quick["correct"], [EPSILON]) == [quick["vra"]]
    assert torch.equal(report.correct, report.predictions == y)
    assert metrics["vra"] <= metrics["clean_accuracy"]
    assert metrics["rejection_rate"] == pytest.approx(1 - float(report.certified.double().mean()))
    row = report.row()
    assert "vra_at_radii" not in row and "layer_bounds" not in row and row["vra"] == quick["vra"]
    assert all(isinstance(value, int | float | str) for value in row.values())


def test_standard_radii_for_images_and_monotone_vra(trained):
    net, (x, y) = trained
    metrics = certification_report(net, x, y).metrics
    rows = metrics["vra_at_radii"]
    assert [row["radius"] for row in rows] == list(STANDARD_RADII)
    assert [row["radius_label"] for row in rows] == ["36/255", "72/255", "108/255", "255/255"]
    values = [row["vra"] for row in rows]
    assert values == sorted(values, reverse=True)
    radii = torch.linspace(0, 1.2, 61).tolist()
    curve = certification_report(net, x, y, radii=radii).metrics["vra_at_radii"]
    vras = [row["vra"] for row in curve]
    assert all(a >= b for a, b in itertools.pairwise(vras))
    # at radius 0 a correct point is certified unless its top gap is within rounding of a tie
    assert metrics["clean_accuracy"] - 0.01 <= vras[0] <= metrics["clean_accuracy"]


def test_lipschitz_constants_and_throughput(trained):
    net, (x, y) = trained
    iterates = [buffer.clone() for buffer in net.buffers()]
    metrics = certification_report(net, x, y, batch_size=64).metrics
    assert all(torch.equal(a, b) for a, b in zip(iterates, net.buffers())), "the report must not move iterates"
    assert metrics["lipschitz_sound"] == pytest.approx(float(net.sub_lipschitz(sound=True)), rel=1e-12)
    estimate = math.prod(row["estimate"] for row in net.bound_report())
    assert metrics["lipschitz_power_iteration"] == pytest.approx(estimate)
    # power iteration approaches the norm from below, up to float32's rounding; the sound bound never lies under it
    slack = math.prod(1 + float32_estimate_slack(layer, bound) for layer, bound in zip(net.layers, net.bounds))
    assert metrics["lipschitz_ratio"] >= 1 / slack
    assert metrics["lipschitz_ratio"] == pytest.approx(metrics["lipschitz_sound"] / estimate)
    assert len(metrics["layer_bounds"]) == len(net.layers) - 1
    for key in ("forward_points_per_second", "certify_points_per_second", "certify_slowdown"):
        assert 0 < metrics[key] < math.inf
    assert metrics["forward_seconds"] > 0 and metrics["certify_seconds"] > 0
    assert metrics["sound_constants_seconds"] >= 0
    assert metrics["batch_size"] == 64 and metrics["device"] == "cpu"
    assert not net.training  # left in the mode it was given


def test_frozen_net_reports_the_same_certificates(trained):
    net, (x, y) = trained
    live = certification_report(net, x, y)
    frozen = copy.deepcopy(net).freeze()
    again = certification_report(frozen, x, y)
    assert torch.equal(live.certified, again.certified)
    assert torch.allclose(live.radius, again.radius)
    certificate = certify_all(frozen, x, batch_size=7)
    assert torch.equal(certificate.certified, again.certified)


def test_dense_nets_get_no_image_radii_unless_asked():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    net = gloro.GloroNet(model, 0.1)
    x, y = torch.rand(20, 4), torch.randint(0, 3, (20,))
    assert certification_report(net, x, y).metrics["vra_at_radii"] == []
    rows = certification_report(net, x, y, radii=[0.0, 0.05]).metrics["vra_at_radii"]
    assert [row["radius_label"] for row in rows] == ["0", "0.05"]


def test_bad_inputs_are_rejected(trained):
    net, (x, y) = trained
    with pytest.raises(ValueError, match="as many labels"):
        certification_report(net, x, y[:-1])
    with pytest.raises(ValueError, match="epsilon must be"):
        certification_report(net, x, y, epsilon=-1.0)
    with pytest.raises(ValueError, match="epsilon must be"):
        vra_at_radii(torch.ones(3), torch.ones(3, dtype=torch.bool), [-0.5])
    with pytest.raises(ValueError, match="1-D of one length"):
        vra_at_radii(torch.ones(3), torch.ones(4, dtype=torch.bool), [0.1])


def test_radius_labels():
    assert radius_label(36 / 255) == "36/255" and radius_label(1.0) == "255/255"
    assert radius_label(0.3) == "0.3" and radius_label(1.58) == "1.58" and radius_label(0.141) == "0.141"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.booleans()), min_size=1, max_size=40),
    st.lists(st.floats(0, 6, allow_nan=False), min_size=1, max_size=10),
)
def test_vra_at_radii_is_non_increasing_and_bounded_by_accuracy(points, radii):
    radius = torch.tensor([r for r, _ in points], dtype=torch.float64)
    correct = torch.tensor([c for _, c in points])
    radii = sorted(radii)
    values = vra_at_radii(radius, correct, radii)
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert all(0 <= v <= float(correct.double().mean()) for v in values)
    assert vra_at_radii(radius, correct, [0.0]) == [float(correct.double().mean())]
