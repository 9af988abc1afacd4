"""The steady cost of a training step (Table 1's s/epoch and time ratio): timed on a copy, on the same batches
for both sides, after warm-up, in rounds long enough to rise above the timer, and the ratio in the right
direction."""

import math
import time

import pytest
import torch
from torch import nn

import gloro
from gloro.bench.experiment import cost_reference
from gloro.data import load_digits
from gloro.step_cost import ROUNDS, WARMUP_STEPS, SteadySteps, steady_cost, time_steps


def dense_net(seed: int = 0) -> gloro.GloroNet:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return gloro.GloroNet(model, 0.3, input_shape=(1, 8, 8), eval_epsilon=0.3, seed=seed)


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")


class Sleeper:
    """A side whose step takes a known time, recording how many batches each call asked for."""

    def __init__(self, seconds_per_step: float, batch_size: int, batch_count: int = 100) -> None:
        self.seconds_per_step, self.batch_size, self.batch_count = seconds_per_step, batch_size, batch_count
        self.calls: list[int] = []

    def __call__(self, batches: int = 1) -> None:
        self.calls.append(batches)
        time.sleep(self.seconds_per_step * min(batches, self.batch_count))


def test_a_side_with_three_times_the_work_per_image_costs_about_three_times_as_much():
    quick, slow = Sleeper(0.002, batch_size=32), Sleeper(0.003, batch_size=16)  # 3x the seconds per image
    costs = time_steps({"quick": quick, "slow": slow}, round_seconds=0.02, rounds=4)
    assert [len(costs[name].seconds_per_image) for name in costs] == [4, 4]
    ratio = costs["slow"].median / costs["quick"].median
    assert 3 / 1.5 < ratio < 3 * 1.5  # the direction and size survive a loaded machine's jitter
    for name, side in (("quick", quick), ("slow", slow)):
        assert min(costs[name].seconds_per_image) >= side.seconds_per_step / side.batch_size  # sleeps: lower bounds


def test_every_round_of_every_side_covers_the_same_first_batches():
    quick, slow = Sleeper(0.001, batch_size=64), Sleeper(0.004, batch_size=64, batch_count=30)
    costs = time_steps({"quick": quick, "slow": slow}, round_seconds=0.02, rounds=3)
    per_round = costs["slow"].batches_per_round
    assert per_round == costs["quick"].batches_per_round
    assert 1 <= per_round <= math.ceil(0.02 / 0.004)  # the slowest side's round decides; a step is never quicker
    for name, side in (("quick", quick), ("slow", slow)):
        timed = side.calls[WARMUP_STEPS + 2 :]  # after warm-up and the two calibration steps, all on batch one
        assert side.calls[: WARMUP_STEPS + 2] == [1] * (WARMUP_STEPS + 2)
        assert timed == [per_round] * (3 * costs[name].passes)  # whole passes over the same batches
    assert costs["quick"].passes >= costs["slow"].passes  # the quicker side passes over them more often
    few = Sleeper(0.01, batch_size=8, batch_count=2)
    assert time_steps({"few": few}, round_seconds=0.1, rounds=1)["few"].batches_per_round == 2  # all there are


def test_timing_trains_a_copy_and_leaves_the_net_and_its_iterates_as_they_were(digits):
    x, y = digits
    net = dense_net()
    before = {key: value.clone() for key, value in net.state_dict().items()}
    epsilon = net.epsilon
    recipe = gloro.TrainingRecipe(epochs=3, batch_size=64, epsilon=gloro.schedules.Linear(0.1, 0.5, 3))
    steady_cost(net, recipe, x, y)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[key], value) for key, value in before.items())
    assert net.epsilon == epsilon


def test_steps_run_at_the_last_epochs_schedules_on_full_batches_of_one_fixed_shuffle(digits):
    x, y = digits
    recipe = gloro.TrainingRecipe(epochs=4, batch_size=100, epsilon=gloro.schedules.Linear(0.1, 0.4, 4))
    first = SteadySteps(dense_net(), x, y, recipe, epoch=3)
    other = SteadySteps(dense_net(1), x, y, gloro.TrainingRecipe(epochs=1, batch_size=100), epoch=0)
    assert first.net.epsilon == pytest.approx(0.4)
    assert all(len(batch) == 100 for batch in first.batches) and len(first.batches) == len(y) // 100
    assert all(torch.equal(a, b) for a, b in zip(first.batches, other.batches, strict=True))  # the same batches
    tiny = SteadySteps(dense_net(), x[:10], y[:10], recipe, epoch=3)
    assert tiny.batch_size == 10  # fewer images than a batch: all of them, one batch
    with pytest.raises(ValueError, match="no training images"):
        SteadySteps(dense_net(), x[:0], y[:0], recipe, epoch=0)


def test_the_reference_ratio_is_theirs_over_ours_per_round_with_its_spread(digits):
    x, y = digits
    recipe = gloro.TrainingRecipe(epochs=1, batch_size=64)
    heavy = gloro.GloroNet(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)),
        0.3,
        input_shape=(1, 8, 8),
        power_iterations=10,
    )
    cost = steady_cost(dense_net(), recipe, x, y, reference=("heavy", heavy, recipe))
    ours, theirs = cost["seconds_per_image"], cost["reference"]["seconds_per_image"]
    ratios = sorted(a / b for a, b in zip(theirs, ours, strict=True))
    assert len(ratios) == ROUNDS and cost["reference"]["experiment"] == "heavy"
    reference = cost["reference"]
    assert (reference["time_ratio_low"], reference["time_ratio_high"]) == (ratios[0], ratios[-1])
    assert reference["time_ratio"] == pytest.approx(ratios[len(ratios) // 2])
    assert reference["time_ratio"] > 1  # the heavy net's step costs more: the ratio is not inverted
    assert cost["seconds_per_epoch"] == pytest.approx(sorted(ours)[len(ours) // 2] * len(y))


def test_the_cost_reference_is_gloro_at_the_same_data_set_architecture_and_epsilon():
    common = {"dataset": "digits", "architecture": "2C2F", "train_epsilon": 0.3, "epochs": 2}
    experiments = {
        "a_gloro": {**common, "eval_epsilon": 0.3},
        "b_gloro_other_eps": {**common, "eval_epsilon": 0.5},
        "c_trades": {**common, "eval_epsilon": 0.3, "loss": "trades"},
        "d_kw": {**common, "eval_epsilon": 0.3, "method": "kw"},
        "e_kw_other_eps": {**common, "eval_epsilon": 0.5, "method": "kw"},
        "f_kw_4c3f": {**common, "architecture": "4C3F", "eval_epsilon": 0.3, "method": "kw"},
    }
    assert cost_reference("d_kw", experiments) == "a_gloro"
    assert cost_reference("c_trades", experiments) == "a_gloro"
    assert cost_reference("e_kw_other_eps", experiments) == "b_gloro_other_eps"
    assert cost_reference("a_gloro", experiments) is None  # the reference itself
    assert cost_reference("f_kw_4c3f", experiments) is None  # no GloRo at that setting
    not_run = {**experiments, "a_gloro": {**experiments["a_gloro"], "not_run": "too slow"}}
    assert cost_reference("d_kw", not_run) is None
