"""The pipeline's printed timings: rounds interleaved and repeated past the timer's noise, medians."""

import statistics
import time

import pytest
import torch

import gloro
import gloro.evaluation
from gloro.certify import create_certifier
from gloro.evaluation import certification_report
from gloro.timing import MIN_ROUNDS, MIN_SECONDS, interleaved_rounds, median_ratio, repeated_seconds


def test_interleaved_rounds_alternate_the_order_and_run_each_side_long_enough():
    calls = []
    seconds = interleaved_rounds(
        {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.01))},
        min_seconds=0.05,
        min_rounds=3,
    )
    rounds = len(seconds["a"])
    assert rounds == len(seconds["b"]) >= 3 and calls.count("a") == calls.count("b") == rounds
    assert sum(seconds["b"]) >= 0.05 and rounds >= 5  # the quick side waits for the slow one's total too
    assert calls[:4] == ["a", "b", "b", "a"]  # each side goes first in turn
    assert len(interleaved_rounds({"x": lambda: None}, min_seconds=10.0, max_rounds=7)["x"]) == 7
    with pytest.raises(ValueError, match="min_rounds"):
        interleaved_rounds({"x": lambda: None}, min_rounds=0)
    with pytest.raises(ValueError, match="at least one side"):
        interleaved_rounds({})


def test_repeated_seconds_runs_a_slow_call_once_and_a_quick_one_until_the_total_is_reached():
    calls = []
    assert repeated_seconds(0.5, lambda: calls.append(1) or 0.1, min_seconds=0.2) == [0.5] and not calls
    assert repeated_seconds(0.05, lambda: 0.04, min_seconds=0.2) == [0.05, 0.04, 0.04, 0.04, 0.04]
    assert median_ratio([2.0, 3.0, 30.0], [1.0, 1.0, 1.0]) == 3.0  # one disturbed round does not move it


def test_certification_throughput_is_a_median_of_interleaved_passes_over_the_split(monkeypatch):
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.3, seed=0).freeze()
    x, y = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randint(0, 10, (64,))
    timed = {}

    def recorded(sides, **settings):
        timed.update(interleaved_rounds(sides, **settings))
        return timed

    monkeypatch.setattr(gloro.evaluation, "interleaved_rounds", recorded)
    metrics = certification_report(net, x, y, batch_size=16).metrics
    assert set(timed) == {"forward", "certify"} and metrics["timing_rounds"] == len(timed["forward"]) >= MIN_ROUNDS
    assert all(sum(seconds) >= MIN_SECONDS for seconds in timed.values())  # each side long enough to measure
    assert metrics["forward_seconds"] == statistics.median(timed["forward"])
    assert metrics["certify_seconds"] == statistics.median(timed["certify"])
    assert metrics["certify_slowdown"] == median_ratio(timed["certify"], timed["forward"])


def test_a_quick_certifier_is_timed_over_repeated_calls_with_the_same_certificate(monkeypatch):
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.3, seed=0).freeze()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    certifier = create_certifier("global")
    once = certifier(net, x, 0.3)
    calls = []
    original = type(certifier).__call__
    monkeypatch.setattr(type(certifier), "__call__", lambda self, *args: calls.append(1) or original(self, *args))
    timed = certifier.timed(net, x, 0.3)
    assert len(calls) > 1  # a 32-point global certification takes far less than 0.2 s
    assert torch.equal(timed.certified, once.certified) and torch.equal(timed.radius, once.radius)
    assert 0 < timed.seconds < 0.2


def test_ratio_quartiles_pair_the_rounds_and_bracket_the_median():
    from gloro.timing import ratio_quartiles

    numerator, denominator = [2.0, 3.0, 8.0, 4.0, 5.0], [1.0, 1.0, 2.0, 1.0, 1.0]  # ratios 2, 3, 4, 4, 5
    low, high = ratio_quartiles(numerator, denominator)
    assert low == 3.0 and high == 4.0 and low <= median_ratio(numerator, denominator) <= high
    assert ratio_quartiles([2.0], [4.0]) == (0.5, 0.5)
