"""Any set of certifiers on the same points: VRA and time per point of each, as tidy rows."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import torch

from gloro.certify.registry import create_certifier
from gloro.gloro_net import GloroNet
from gloro.timing import interleaved_rounds, median_ratio

SIDE_BY_SIDE_SECONDS = 2.0  # a certifier whose call takes longer runs once: rounds of it would cost minutes


def compare_certifiers(
    net: GloroNet, images: torch.Tensor, labels: torch.Tensor, epsilon: float, names: Sequence[str]
) -> list[dict]:
    """One `Certificate.to_row` per named certifier on `images` at ε, each with how many points it certifies
    that the first certifier does not (and the reverse) and its time per point over the first one's.

    After one call each (which pays one-off work), the certifiers whose call takes under
    `SIDE_BY_SIDE_SECONDS` are timed side by side (`side_by_side`): their seconds are medians over rounds and
    their ratio to the first is the median of the rounds' ratios, so that a machine that slows down mid-job
    moves both sides alike. A slower one keeps its single call, its ratio that call over the first's median.
    """
    if not names:
        raise ValueError("name at least one certifier to compare")
    certifiers = {name: create_certifier(name) for name in dict.fromkeys(names)}
    certificates = {name: certifier(net, images, epsilon) for name, certifier in certifiers.items()}
    quick = [name for name in certifiers if certificates[name].seconds < SIDE_BY_SIDE_SECONDS]
    rounds = side_by_side({name: certifiers[name] for name in quick}, net, images, epsilon, certificates)
    for name, seconds in rounds.items():
        certificates[name] = dataclasses.replace(certificates[name], seconds=statistics.median(seconds))
    first_name = names[0]
    first = certificates[first_name]
    rows = []
    for name in names:
        certificate = certificates[name]
        row = certificate.to_row(labels)
        row["certified_not_by_first"] = int((certificate.certified & ~first.certified).sum())
        row["first_not_certified"] = int((first.certified & ~certificate.certified).sum())
        if name in rounds and first_name in rounds:
            row["time_over_first"] = median_ratio(rounds[name], rounds[first_name])
        else:
            row["time_over_first"] = certificate.seconds / first.seconds if first.seconds > 0 else float("inf")
        row["timed_side_by_side"] = name in rounds and first_name in rounds
        rows.append(row)
    return rows


def side_by_side(certifiers: dict, net: GloroNet, images: torch.Tensor, epsilon: float, first_calls: dict) -> dict:
    """Seconds per call of each certifier in interleaved rounds (`gloro.timing.interleaved_rounds`): in a
    round each runs as many calls as fit in the slowest one's first call, so that a quick certifier beside a
    slow one is timed over as long a stretch of the machine's time, not once per slow call."""
    if not certifiers:
        return {}
    longest = max(first_calls[name].seconds for name in certifiers)
    repeats = {name: min(1000, max(1, round(longest / max(first_calls[name].seconds, 1e-6)))) for name in certifiers}

    def block(name: str):
        def run() -> None:
            for _ in range(repeats[name]):
                certifiers[name](net, images, epsilon)

        return run

    rounds = interleaved_rounds({name: block(name) for name in certifiers})
    return {name: [seconds / repeats[name] for seconds in times] for name, times in rounds.items()}
