"""The benchmarks' round structure: every side once per round, in an order reversed each round."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

Side = TypeVar("Side")
Result = TypeVar("Result")


def interleaved(sides: Iterable[Side], rounds: int, measure: Callable[[Side], Result]) -> dict[Side, list[Result]]:
    """`measure(side)` for each side, `rounds` times, each side going first and last in turn (so a machine
    that speeds up or slows down over the run is shared out); the results per side, in round order."""
    order = list(sides)
    results: dict[Side, list[Result]] = {side: [] for side in order}
    for _ in range(rounds):
        for side in order:
            results[side].append(measure(side))
        order.reverse()
    return results
