"""The steady cost of training, timed as a benchmark times it: a copy of the net takes training steps on a
fixed list of batches, after warm-up, each side repeated past `ROUND_SECONDS` per round, the sides of a
comparison interleaved round by round on the same batches, medians over rounds. Table 1's seconds per epoch
and its time ratios come from here, both sides of a ratio timed in one job."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from gloro.data.augment import augmentation
from gloro.gloro_net import GloroNet
from gloro.layout import matching_gradients
from gloro.timing import interleaved_rounds
from gloro.training import (
    TrainingRecipe,
    epoch_values,
    make_optimizer,
    train_batch,
    training_memory_format,
)
from gloro.training_cost import synchronize

ROUND_SECONDS = 0.2  # each side's steps in one round run at least this long
ROUNDS = 5  # rounds per side: the median and the spread come from these
WARMUP_STEPS = 2  # untimed, on the first batch: the optimizer's state, kernel selection, the power path choice
BATCH_SEED = 0  # the same shuffle for every side, so that sides of equal batch size see the same batches


class SteadySteps:
    """Training steps of a copy of `net` (the net itself is untouched) under `recipe` at `epoch`'s schedules
    (ε, learning rate, its method's) on the full batches of one seeded shuffle of `images`: a call takes one step on
    each of the first `batches` of them, and waits for the device before it returns."""

    def __init__(
        self,
        net: GloroNet,
        images: torch.Tensor,
        labels: torch.Tensor,
        recipe: TrainingRecipe,
        epoch: int,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(labels) == 0:
            raise ValueError("no training images to time steps on")
        self.device = torch.device(device)
        self.net = copy.deepcopy(net).to(self.device).train()
        if recipe.epsilon is not None:
            self.net.epsilon = recipe.epsilon(epoch)
        self.memory_format = training_memory_format(self.net, recipe)
        self.net.model.to(memory_format=self.memory_format)
        self.optimizer = make_optimizer(self.net, recipe)
        for group in self.optimizer.param_groups:
            group["lr"] = recipe.learning_rate(epoch)
        self.recipe, self.values = recipe, epoch_values(recipe, epoch)
        self.images, self.labels = images, labels
        self.generator = torch.Generator().manual_seed(BATCH_SEED)
        self.augment = augmentation(recipe.augmentation)
        order = torch.randperm(len(labels), generator=self.generator)
        batches = list(order.split(recipe.batch_size))
        full = [batch for batch in batches if len(batch) == recipe.batch_size]
        self.batches = full or batches[:1]  # fewer images than one batch: the whole set is the batch
        self.batch_size = len(self.batches[0])

    @property
    def batch_count(self) -> int:
        return len(self.batches)

    def __call__(self, batches: int = 1) -> None:
        with matching_gradients(self.net.model):
            for batch in self.batches[:batches]:
                x = self.images[batch].to(self.device, non_blocking=True)
                x = self.augment(x, self.generator).contiguous(memory_format=self.memory_format)
                y = self.labels[batch].to(self.device, non_blocking=True)
                train_batch(self.net, x, y, self.optimizer, self.recipe, self.values)
        synchronize(self.device)


@dataclass(frozen=True)
class StepCost:
    """One side's timing: seconds per training image in each round, and how a round was made up: one step on
    each of the first `batches_per_round` batches, `passes` times."""

    seconds_per_image: tuple[float, ...]
    batches_per_round: int
    passes: int
    batch_size: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_per_image)


def time_steps(
    sides: Mapping[str, SteadySteps], *, round_seconds: float = ROUND_SECONDS, rounds: int = ROUNDS
) -> dict[str, StepCost]:
    """Each side's cost per training image over `rounds` interleaved rounds (`gloro.timing.interleaved_rounds`:
    the order reversed each round, so that every side gets the same share of a machine that slows down or
    speeds up). Every side's round covers the same first batches, as many as the slowest side's faster of two
    timed steps says will last `round_seconds`, and a quicker side passes over them again until its round
    lasts as long; so sides of one batch size are timed on the same batches, and every round on the same
    work (a KW step's cost varies with its batch). `WARMUP_STEPS` untimed steps come first."""
    if rounds < 1 or round_seconds < 0:
        raise ValueError(f"need rounds >= 1 and round_seconds >= 0, got {rounds} and {round_seconds}")
    one_step = {}
    for name, side in sides.items():
        for _ in range(WARMUP_STEPS):
            side(1)
        one_step[name] = min(timed(side) for _ in range(2))
    slowest = max(one_step.values())
    per_round = min(side.batch_count for side in sides.values())
    if slowest > 0:
        per_round = min(per_round, max(1, math.ceil(round_seconds / slowest)))
    passes = {
        name: max(1, math.ceil(round_seconds / (per_round * seconds))) if seconds > 0 else 1
        for name, seconds in one_step.items()
    }

    def round_of(side: SteadySteps, times: int):
        def run() -> None:
            for _ in range(times):
                side(per_round)

        return run

    seconds = interleaved_rounds(
        {name: round_of(side, passes[name]) for name, side in sides.items()},
        min_seconds=0.0,
        min_rounds=rounds,
        max_rounds=rounds,
    )
    return {
        name: StepCost(
            seconds_per_image=tuple(s / (passes[name] * per_round * side.batch_size) for s in seconds[name]),
            batches_per_round=per_round,
            passes=passes[name],
            batch_size=side.batch_size,
        )
        for name, side in sides.items()
    }


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def steady_cost(
    net: GloroNet,
    recipe: TrainingRecipe,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    reference: tuple[str, GloroNet, TrainingRecipe] | None = None,
) -> dict:
    """The steady cost of training `net` under `recipe` (at its last epoch's schedules) on `images`, and, with
    a `reference` (its name, net and recipe), the reference's cost on the same batches in the same rounds and
    the ratio reference ÷ this per round: its median, lowest and highest. Seconds per epoch are seconds per
    image times the training set's size."""
    sides = {"this": SteadySteps(net, images, labels, recipe, recipe.epochs - 1, device)}
    if reference is not None:
        name, reference_net, reference_recipe = reference
        sides["reference"] = SteadySteps(
            reference_net, images, labels, reference_recipe, reference_recipe.epochs - 1, device
        )
    costs = time_steps(sides)
    this = costs["this"]
    result = {
        "seconds_per_epoch": this.median * len(labels),
        "seconds_per_epoch_min": min(this.seconds_per_image) * len(labels),
        "seconds_per_epoch_max": max(this.seconds_per_image) * len(labels),
        "seconds_per_image": list(this.seconds_per_image),
        "batches_per_round": this.batches_per_round,
        "passes_per_round": this.passes,
        "batch_size": this.batch_size,
        "rounds": len(this.seconds_per_image),
        "round_seconds": ROUND_SECONDS,
    }
    if reference is not None:
        theirs = costs["reference"]
        ratios = [a / b for a, b in zip(theirs.seconds_per_image, this.seconds_per_image)]
        result["reference"] = {
            "experiment": name,
            "seconds_per_image": list(theirs.seconds_per_image),
            "passes_per_round": theirs.passes,
            "batch_size": theirs.batch_size,
            "time_ratio": statistics.median(ratios),
            "time_ratio_low": min(ratios),
            "time_ratio_high": max(ratios),
        }
    return result
