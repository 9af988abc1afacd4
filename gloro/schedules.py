"""Schedules of ε, λ and the learning rate: small pure functions of the epoch (0-based).

Each is a frozen dataclass so a config can name it and a checkpoint can record it; calling it with an
epoch gives the value. `schedule_from_config` builds one from a mapping such as {"kind": "linear", ...}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields


@dataclass(frozen=True)
class Constant:
    """The same value at every epoch."""

    value: float

    def __call__(self, epoch: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Linear:
    """Linear from `start` (epoch 0) to `end` (epoch `epochs` − 1), then `end`: np.linspace(start, end, epochs)[e]."""

    start: float
    end: float
    epochs: int

    def __call__(self, epoch: int) -> float:
        if epoch >= self.epochs - 1:
            return float(self.end)
        return self.start + (self.end - self.start) * epoch / (self.epochs - 1)


@dataclass(frozen=True)
class LogarithmicHalf:
    """The CIFAR ε schedule: ε_e = final·ln((e − e^0.01)·t/(E/2) + e^0.01) up to half of `epochs`, then final."""

    final: float
    epochs: int
    start_fraction: float = 0.01

    def __call__(self, epoch: int) -> float:
        half = self.epochs / 2
        if epoch >= half:
            return float(self.final)
        low = math.exp(self.start_fraction)
        return self.final * math.log((math.e - low) * epoch / half + low)


@dataclass(frozen=True)
class DecayAfterHalf:
    """Learning rate: `initial` for the first half of `epochs`, then exponential decay reaching ≈`final` at the end.

    lr_e = initial·(initial/final)^(−(e − E/2)/(E/2)); the decay really starts after half (the official
    tools' 'decay_after_half' string was shadowed by 'decay' and decayed from epoch 0).
    """

    initial: float
    final: float
    epochs: int

    def __call__(self, epoch: int) -> float:
        half = self.epochs / 2
        if epoch < half:
            return float(self.initial)
        return self.initial * (self.initial / self.final) ** (-(epoch - half) / half)


@dataclass(frozen=True)
class Step:
    """`initial`·factor^⌊max(e − start, 0)/every⌋: PyTorch's StepLR held until epoch `start` (KW's and BCP's
    CIFAR learning rates: halved every 10 epochs once the ε ramp is over)."""

    initial: float
    factor: float
    every: int
    start: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or self.start < 0:
            raise ValueError(f"step schedule needs every >= 1 and start >= 0, got {self.every} and {self.start}")

    def __call__(self, epoch: int) -> float:
        return self.initial * self.factor ** (max(epoch - self.start, 0) // self.every)


@dataclass(frozen=True)
class MultiStep:
    """`initial`·factor^(number of milestones m < e): BCP's MNIST rate (milestones 21, 30, 40; factor 0.1),
    which its code holds through each milestone epoch and drops on the next."""

    initial: float
    factor: float
    milestones: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {list(self.milestones)}")

    def __call__(self, epoch: int) -> float:
        return self.initial * self.factor ** sum(1 for m in self.milestones if m < epoch)


@dataclass(frozen=True)
class WarmupCosine:
    """LiResNet's learning rate: linear warm-up to `initial` over the first `warmup` epochs (initial·(e + 1)/warmup),
    then a cosine from `initial` down to initial·`floor` at epoch `epochs` − 1."""

    initial: float
    warmup: int
    epochs: int
    floor: float = 1e-5

    def __post_init__(self) -> None:
        if not 0 <= self.warmup < self.epochs or not 0 <= self.floor <= 1:
            raise ValueError(
                f"warmup_cosine needs 0 <= warmup < epochs and 0 <= floor <= 1, got warmup {self.warmup}, "
                f"epochs {self.epochs}, floor {self.floor}"
            )

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.initial * (epoch + 1) / self.warmup
        span = max(self.epochs - 1 - self.warmup, 1)
        progress = min((epoch - self.warmup) / span, 1.0)
        return self.initial * (self.floor + (1 - self.floor) * (1 + math.cos(math.pi * progress)) / 2)


SCHEDULES = {
    "constant": Constant,
    "linear": Linear,
    "logarithmic_half": LogarithmicHalf,
    "decay_after_half": DecayAfterHalf,
    "step": Step,
    "multistep": MultiStep,
    "warmup_cosine": WarmupCosine,
}
Schedule = Constant | Linear | LogarithmicHalf | DecayAfterHalf | Step | MultiStep | WarmupCosine


def schedule_from_config(spec: float | Mapping) -> Schedule:
    """A schedule from a number (constant) or a mapping {"kind": name, **parameters}; errors name the problem."""
    if isinstance(spec, int | float):
        return Constant(float(spec))
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {', '.join(SCHEDULES)}")
    cls = SCHEDULES[kind]
    expected = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING}
    if unknown := set(params) - expected:
        raise ValueError(f"schedule {kind!r} got unknown parameters {sorted(unknown)}; it takes {sorted(expected)}")
    if missing := required - set(params):
        raise ValueError(f"schedule {kind!r} is missing parameters {sorted(missing)}")
    return cls(**params)


def schedule_to_config(schedule: Schedule) -> dict:
    """The inverse of `schedule_from_config`, for recording a run's settings."""
    kind = next(name for name, cls in SCHEDULES.items() if isinstance(schedule, cls))
    values = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(schedule).items()}
    return {"kind": kind, **values}
