"""Timings the pipeline prints, measured as a benchmark measures them: work repeated until it rises above the
timer and the scheduler's noise, sides compared in interleaved rounds, medians rather than one pass."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

MIN_SECONDS = 0.2  # each side's rounds together run at least this long
MIN_ROUNDS = 3  # and at least this many rounds, so that a median exists
MAX_ROUNDS = 1000  # work of a few microseconds stops here rather than spinning for ever


def interleaved_rounds(
    sides: Mapping[str, Callable[[], object]],
    *,
    min_seconds: float = MIN_SECONDS,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
) -> dict[str, list[float]]:
    """Each side's seconds per round: every round runs each side once, the order reversed each round, and
    rounds go on until each side has run `min_rounds` times and `min_seconds` in all (or `max_rounds` rounds).
    Interleaving gives the sides the same share of whatever else the machine is doing, and of a machine that
    speeds up or slows down. A side must wait for its own work (a GPU side synchronizes before it returns)."""
    if not sides:
        raise ValueError("name at least one side to time")
    if min_seconds < 0 or not 1 <= min_rounds <= max_rounds:
        raise ValueError(
            f"need min_seconds >= 0 and 1 <= min_rounds <= max_rounds, got {min_seconds}, {min_rounds}, {max_rounds}"
        )
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    while True:
        for name in order:
            start = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - start)
        order.reverse()
        rounds = len(seconds[order[0]])
        done = rounds >= min_rounds and all(sum(times) >= min_seconds for times in seconds.values())
        if done or rounds >= max_rounds:
            return seconds


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of numerator ÷ denominator, each round's two sides paired."""
    ratios = [a / b for a, b in zip(numerator, denominator) if b > 0]
    return statistics.median(ratios) if ratios else float("inf")


def ratio_quartiles(numerator: list[float], denominator: list[float]) -> tuple[float, float]:
    """The first and third quartiles over rounds of numerator ÷ denominator, each round's two sides paired:
    the spread of the middle half of the rounds, which a table prints beside the median (one round: its ratio)."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator) if b > 0)
    if not ratios:
        return float("inf"), float("inf")
    if len(ratios) == 1:
        return ratios[0], ratios[0]
    first, _, third = statistics.quantiles(ratios, n=4, method="inclusive")
    return first, third


def repeated_seconds(
    first: float, work: Callable[[], float], *, min_seconds: float = MIN_SECONDS, max_rounds: int = MAX_ROUNDS
) -> list[float]:
    """`first` (the seconds of a call already made) and the seconds `work` reports for itself, call after
    call, until they add up to `min_seconds`: a slow computation runs once, a quick one as often as it takes."""
    seconds = [first]
    while sum(seconds) < min_seconds and len(seconds) < max_rounds:
        seconds.append(work())
    return seconds
