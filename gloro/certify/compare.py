"""Any set of certifiers on the same points: VRA and time per point of each, as tidy rows."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import torch

from gloro.certificate import Certificate
from gloro.certify.base import Certifier
from gloro.certify.registry import create_certifier
from gloro.gloro_net import GloroNet
from gloro.layers import UnsupportedLayerError
from gloro.timing import interleaved_rounds, median_ratio, ratio_quartiles

CALL_SECONDS = 0.5  # the slowest certifier's timed call: on as many of the points as fit in this
ROUNDS = 7  # interleaved rounds of timed calls: the medians and the ratios' median come from these


def compare_certifiers(
    net: GloroNet, images: torch.Tensor, labels: torch.Tensor, epsilon: float, names: Sequence[str]
) -> list[dict]:
    """One `Certificate.to_row` per named certifier on `images` at ε, each with how many points it certifies
    that the first certifier does not (and the reverse) and its time per point over the first one's.

    The certificates come from one call each on all the points (which also pays one-off work). The times come
    from `side_by_side`: every certifier on the same first points, in interleaved rounds, so that a machine
    that slows down mid-job moves all sides alike; each row's `seconds` is its median round's time per point
    times the number of points, `timed_points` how many were timed, and `time_over_first` the median over
    rounds of its time over the first certifier's (`time_over_first_q1`, `_q3`: its quartiles over rounds).
    """
    rows, unsupported = compare_supported(net, images, labels, epsilon, names)
    if unsupported:  # asked for by name: refused as the certifier itself refuses, not left out quietly
        raise UnsupportedLayerError("; ".join(f"{name}: {reason}" for name, reason in unsupported.items()))
    return rows


def compare_supported(
    net: GloroNet, images: torch.Tensor, labels: torch.Tensor, epsilon: float, names: Sequence[str]
) -> tuple[list[dict], dict[str, str]]:
    """`compare_certifiers` over those of `names` (after the first, which must) that support every layer of
    the net, and, for the others, why not (certifier name → the `UnsupportedLayerError` it raised)."""
    if not names:
        raise ValueError("name at least one certifier to compare")
    certifiers = {name: create_certifier(name) for name in dict.fromkeys(names)}
    certificates, unsupported = {}, {}
    for name, certifier in certifiers.items():
        try:
            certificates[name] = certifier(net, images, epsilon)
        except UnsupportedLayerError as error:
            if name == names[0]:
                raise
            unsupported[name] = str(error)
    certifiers = {name: certifier for name, certifier in certifiers.items() if name in certificates}
    points, rounds = side_by_side(certifiers, net, images, epsilon, certificates)
    first_name = names[0]
    first = certificates[first_name]
    rows = []
    for name in certifiers:
        certificate = dataclasses.replace(
            certificates[name], seconds=statistics.median(rounds[name]) / points * len(images)
        )
        row = certificate.to_row(labels)
        row["certified_not_by_first"] = int((certificate.certified & ~first.certified).sum())
        row["first_not_certified"] = int((first.certified & ~certificate.certified).sum())
        row["time_over_first"] = median_ratio(rounds[name], rounds[first_name])
        row["time_over_first_q1"], row["time_over_first_q3"] = ratio_quartiles(rounds[name], rounds[first_name])
        row["timed_points"] = points
        rows.append(row)
    return rows, unsupported


def side_by_side(
    certifiers: dict[str, Certifier],
    net: GloroNet,
    images: torch.Tensor,
    epsilon: float,
    first_calls: dict[str, Certificate],
) -> tuple[int, dict[str, list[float]]]:
    """How many of the first points are timed, and each certifier's seconds per call on them in `ROUNDS`
    interleaved rounds (`gloro.timing.interleaved_rounds`). The points are as many as the slowest certifier
    certifies in `CALL_SECONDS` by its first call's pace (all of them when it is quicker); in a round each
    certifier runs as many calls as fit in the slowest one's, so that a quick one is timed over as long a
    stretch of the machine's time and not at the scheduler's resolution."""
    pace = {name: first_calls[name].seconds / len(images) for name in certifiers}
    slowest = max(pace.values())
    points = len(images) if slowest * len(images) <= CALL_SECONDS else max(1, int(CALL_SECONDS / slowest))
    subset = images[:points]
    repeats = {name: min(1000, max(1, round(slowest / max(pace[name], 1e-12)))) for name in certifiers}

    def block(name: str):
        def run() -> None:
            for _ in range(repeats[name]):
                certifiers[name](net, subset, epsilon)

        return run

    rounds = interleaved_rounds(
        {name: block(name) for name in certifiers}, min_seconds=0.0, min_rounds=ROUNDS, max_rounds=ROUNDS
    )
    return points, {name: [seconds / repeats[name] for seconds in times] for name, times in rounds.items()}
