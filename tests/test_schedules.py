"""Schedules of ε, λ and the learning rate against the values the facts file computed (§2.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gloro.schedules import (
    SCHEDULES,
    Constant,
    DecayAfterHalf,
    Linear,
    LogarithmicHalf,
    MultiStep,
    Step,
    schedule_from_config,
    schedule_to_config,
)

CIFAR_EPSILON = 0.141 * 1.1  # train ε = eval ε × overcompensate_eps


# ---------------------------------------------------------------------------------------------- LogarithmicHalf


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 0.00155), (100, 0.0562), (200, 0.0966), (400, 0.1551), (401, 0.1551), (799, 0.1551), (5000, 0.1551)],
)
def test_logarithmic_half_matches_the_cifar_values(epoch, expected):
    schedule = LogarithmicHalf(final=CIFAR_EPSILON, epochs=800)
    assert schedule(epoch) == pytest.approx(expected, rel=1e-2)


def test_logarithmic_half_is_final_from_half_on_and_below_it_before():
    schedule = LogarithmicHalf(final=CIFAR_EPSILON, epochs=800)
    assert all(schedule(e) == CIFAR_EPSILON for e in range(400, 800))
    assert all(schedule(e) < CIFAR_EPSILON for e in range(400))
    # The formula: final·ln((e − e^0.01)·t/400 + e^0.01), evaluated independently at a few epochs.
    for e in (0, 37, 250, 399):
        by_hand = CIFAR_EPSILON * math.log((math.e - math.exp(0.01)) * e / 400 + math.exp(0.01))
        assert schedule(e) == pytest.approx(by_hand, rel=1e-12)
    assert schedule(0) == pytest.approx(0.01 * CIFAR_EPSILON, rel=1e-9)  # ln(e^0.01) = 0.01


@settings(deadline=None)
@given(
    final=st.floats(1e-4, 10.0),
    epochs=st.integers(2, 2000),
    a=st.integers(0, 3000),
    b=st.integers(0, 3000),
)
def test_logarithmic_half_is_non_decreasing_and_bounded(final, epochs, a, b):
    schedule = LogarithmicHalf(final=final, epochs=epochs)
    low, high = sorted((a, b))
    assert schedule(low) <= schedule(high) + 1e-12 * final
    assert 0 < schedule(low) <= final * (1 + 1e-12)


# ----------------------------------------------------------------------------------------------- DecayAfterHalf


@pytest.mark.parametrize(
    ("initial", "final", "epochs", "expected_last"),
    [
        (1e-3, 1e-6, 500, 1.03e-6),  # MNIST 0.3
        (1e-3, 5e-6, 300, 5.18e-6),  # MNIST 1.58
        (2.5e-4, 5e-7, 250, 5.25e-7),  # Tiny-ImageNet
        (1e-3, 1e-6, 800, 1.02e-6),  # CIFAR-10
    ],
)
def test_decay_after_half_matches_the_facts(initial, final, epochs, expected_last):
    schedule = DecayAfterHalf(initial, final, epochs)
    assert schedule(epochs - 1) == pytest.approx(expected_last, rel=1e-2)
    # Never decays before half: the official tools' shadowed 'decay_after_half' string decayed from epoch 0.
    assert all(schedule(e) == initial for e in range(math.ceil(epochs / 2)))
    assert schedule(epochs // 2 + 1) < initial
    # Reaches exactly `final` at epoch = epochs (the formula's end point).
    assert schedule(epochs) == pytest.approx(final, rel=1e-9)


def test_decay_after_half_mnist_first_half_and_midpoint():
    schedule = DecayAfterHalf(1e-3, 1e-6, 500)
    assert [schedule(e) for e in (0, 1, 100, 249)] == [1e-3] * 4
    assert schedule(250) == pytest.approx(1e-3)
    # Halfway through the decay: the geometric mean of initial and final.
    assert schedule(375) == pytest.approx(math.sqrt(1e-3 * 1e-6), rel=1e-9)


@settings(deadline=None)
@given(
    initial=st.floats(1e-5, 1.0),
    ratio=st.floats(1.5, 1e4),
    epochs=st.integers(2, 2000),
    a=st.integers(0, 2000),
    b=st.integers(0, 2000),
)
def test_decay_after_half_is_non_increasing(initial, ratio, epochs, a, b):
    schedule = DecayAfterHalf(initial, initial / ratio, epochs)
    low, high = sorted((min(a, epochs - 1), min(b, epochs - 1)))
    assert schedule(high) <= schedule(low) * (1 + 1e-12)
    assert initial / ratio * (1 - 1e-9) <= schedule(high) <= initial


# ------------------------------------------------------------------------------------------- Linear, Constant


def test_linear_is_numpy_linspace_then_end():
    schedule = Linear(0.0, 2.0, 500)
    reference = np.linspace(0.0, 2.0, 500)
    for epoch in range(500):
        assert schedule(epoch) == pytest.approx(reference[epoch], abs=1e-12)
    assert schedule(499) == 2.0
    assert all(schedule(e) == 2.0 for e in (500, 501, 10_000))


@settings(deadline=None)
@given(start=st.floats(-10, 10), end=st.floats(-10, 10), epochs=st.integers(2, 600), epoch=st.integers(0, 800))
def test_linear_matches_linspace_for_any_parameters(start, end, epochs, epoch):
    schedule = Linear(start, end, epochs)
    expected = np.linspace(start, end, epochs)[epoch] if epoch < epochs else end
    assert schedule(epoch) == pytest.approx(expected, abs=1e-9)


def test_constant():
    assert [Constant(1.2)(e) for e in (0, 7, 1000)] == [1.2, 1.2, 1.2]


# ------------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "schedule",
    [
        Constant(0.5),
        Linear(0.5, 20.0, 500),
        LogarithmicHalf(CIFAR_EPSILON, 800),
        LogarithmicHalf(1.0, 10, start_fraction=0.05),
        DecayAfterHalf(2.5e-4, 5e-7, 250),
    ],
)
def test_config_round_trip(schedule):
    config = schedule_to_config(schedule)
    assert config["kind"] in SCHEDULES
    rebuilt = schedule_from_config(config)
    assert rebuilt == schedule
    assert type(rebuilt) is type(schedule)
    assert [rebuilt(e) for e in range(0, 900, 37)] == [schedule(e) for e in range(0, 900, 37)]


def test_config_from_mapping_uses_defaults():
    schedule = schedule_from_config({"kind": "logarithmic_half", "final": 0.2, "epochs": 10})
    assert schedule == LogarithmicHalf(0.2, 10, 0.01)


@pytest.mark.parametrize("number", [1.2, 3, 0.0])
def test_config_accepts_a_bare_number(number):
    schedule = schedule_from_config(number)
    assert isinstance(schedule, Constant)
    assert schedule(0) == schedule(123) == float(number)


def test_config_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="exponential") as error:
        schedule_from_config({"kind": "exponential", "start": 1.0})
    assert "linear" in str(error.value)  # lists the known kinds


def test_config_rejects_a_missing_kind():
    with pytest.raises(ValueError, match="kind"):
        schedule_from_config({"start": 0.0, "end": 1.0, "epochs": 5})


def test_config_rejects_an_unknown_parameter():
    with pytest.raises(ValueError, match="stop"):
        schedule_from_config({"kind": "linear", "start": 0.0, "stop": 1.0, "end": 1.0, "epochs": 5})


def test_config_rejects_a_missing_parameter():
    with pytest.raises(ValueError, match="epochs"):
        schedule_from_config({"kind": "decay_after_half", "initial": 1e-3, "final": 1e-6})


# ---------------------------------------------------------------------------------------------- Step, MultiStep


def test_step_matches_the_kw_and_bcp_learning_rates():
    """KW: StepLR(10, 0.5) from the end of a 20-epoch ramp; BCP CIFAR after its 10 warm-up epochs (t = e + 10):
    1e-3 until t = 139, halved every 10 epochs from 140, 1.5625e-5 for t = 190-199."""
    kw = Step(initial=1e-3, factor=0.5, every=10, start=20)
    assert [kw(e) for e in (0, 19, 29, 30, 39, 40, 59)] == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4]
    bcp = Step(initial=1e-3, factor=0.5, every=10, start=120)
    assert bcp(119) == bcp(129) == 1e-3 and bcp(130) == 5e-4 and bcp(189) == pytest.approx(1.5625e-5)  # t = 199


def test_multistep_holds_each_milestone_epoch_and_drops_after_it():
    """BCP's MNIST rate (facts: 3e-4 for epochs 0-21, 3e-5 for 22-30, 3e-6 for 31-40, 3e-7 after)."""
    schedule = MultiStep(initial=3e-4, factor=0.1, milestones=(21, 30, 40))
    expected = {0: 3e-4, 21: 3e-4, 22: 3e-5, 30: 3e-5, 31: 3e-6, 40: 3e-6, 41: 3e-7, 59: 3e-7}
    for epoch, value in expected.items():
        assert schedule(epoch) == pytest.approx(value, rel=1e-12)


def test_step_and_multistep_reject_malformed_parameters():
    with pytest.raises(ValueError, match="every >= 1"):
        Step(initial=1e-3, factor=0.5, every=0)
    with pytest.raises(ValueError, match="increasing"):
        schedule_from_config({"kind": "multistep", "initial": 1.0, "factor": 0.1, "milestones": [3, 1]})
    round_trip = schedule_to_config(
        schedule_from_config({"kind": "multistep", "initial": 1.0, "factor": 0.1, "milestones": [1, 3]})
    )
    assert round_trip == {"kind": "multistep", "initial": 1.0, "factor": 0.1, "milestones": [1, 3]}
