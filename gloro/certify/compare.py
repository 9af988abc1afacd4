"""Any set of certifiers on the same points: VRA and time per point of each, as tidy rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gloro.certify.registry import create_certifier
from gloro.gloro_net import GloroNet


def compare_certifiers(
    net: GloroNet, images: torch.Tensor, labels: torch.Tensor, epsilon: float, names: Sequence[str]
) -> list[dict]:
    """One `Certificate.to_row` per named certifier on `images` at ε, each with how many points it certifies
    that the first certifier does not (and the reverse) and its time per point over the first one's (each
    time a median over calls repeated to 0.2 s where one call is quicker: `Certifier.timed`)."""
    if not names:
        raise ValueError("name at least one certifier to compare")
    certificates = [create_certifier(name).timed(net, images, epsilon) for name in names]
    first = certificates[0]
    rows = []
    for certificate in certificates:
        row = certificate.to_row(labels)
        row["certified_not_by_first"] = int((certificate.certified & ~first.certified).sum())
        row["first_not_certified"] = int((first.certified & ~certificate.certified).sum())
        row["time_over_first"] = certificate.seconds / first.seconds if first.seconds > 0 else float("inf")
        rows.append(row)
    return rows
