"""The soundness audit: every certified point attacked at ε towards changing its prediction.

A certified point whose prediction an attack changes within its certified radius disproves the certificate,
which means a bug in the bound, so the audit raises `SoundnessError` and writes the offending indices to a
file. Its attacks are those of `gloro.attack`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gloro.adversaries import build_adversary
from gloro.atomic import write_json
from gloro.attack import AttackReport, check_unit_interval, predict, run_adversary
from gloro.evaluation import certify_all
from gloro.gloro_net import GloroNet, check_epsilon

if TYPE_CHECKING:
    from gloro.certify import Certificate


class SoundnessError(RuntimeError):
    """An attack changed the prediction of a certified point within its certified radius: the bound is wrong."""

    def __init__(self, message: str, indices: list[int], path: Path | None) -> None:
        super().__init__(message)
        self.indices = indices
        self.path = path


def audit_sensitivity(radius: torch.Tensor, flipped: torch.Tensor, epsilon: float) -> dict:
    """How far below the sound K_ij a planted bound must be before an audit at ε catches it on this model.

    A bound K_ij / s turns every radius r into s·r, so it certifies at ε each point with s·r ≥ ε; the audit
    then catches it at the first such point that an attack at ε flips. `factor` is the smallest s for which
    some point the attack flipped (`flipped`, per point) gets certified: plants weaker than K_ij / factor
    may pass unseen. `witnesses` counts the flipped points with a positive radius.
    """
    usable = flipped.cpu() & (radius.cpu() > 0)
    if not usable.any():
        return {"factor": math.inf, "catches_bounds_below": 0.0, "witnesses": 0}
    factors = epsilon / radius.cpu()[usable]
    factor = max(float(factors.min()), 1.0)
    return {"factor": factor, "catches_bounds_below": 1 / factor, "witnesses": int(usable.sum())}


def reusable_points(
    earlier: AttackReport | None, settings: dict, indices: torch.Tensor, predictions: torch.Tensor, size: int
) -> torch.Tensor:
    """Per audited point (`indices` into `size` images, with these `predictions`): whether `earlier`, an attack
    on the same images with the same settings, already attacked it away from its prediction, so that its
    example serves the audit too. An earlier attack whose settings differ in more than seed and batch size raises.
    """
    if earlier is None:
        return torch.zeros(len(indices), dtype=torch.bool)
    if len(earlier.labels) != size:
        raise ValueError(f"the earlier attack covered {len(earlier.labels)} points; the audit was given {size}")
    ignored = ("seed", "batch_size")
    mine = {k: v for k, v in settings.items() if k not in ignored}
    theirs = {k: v for k, v in earlier.metrics["settings"].items() if k not in ignored}
    if mine != theirs:
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise ValueError(f"the earlier attack's settings differ from the audit's in {differ}; audit without it")
    at = indices.cpu()
    return (earlier.labels.cpu()[at] == predictions) & (earlier.clean_predictions.cpu()[at] == predictions)


def audit_soundness(
    net: GloroNet,
    images: torch.Tensor,
    epsilon: float | None = None,
    *,
    attack: str = "pgd",
    certificate: Certificate | None = None,
    earlier: AttackReport | None = None,
    violations_path: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    **options,
) -> dict:
    """Attack every point certified at ε (default: the net's eval ε), at ε, aiming to change its prediction.

    A point whose prediction the attack changes at a distance within its certified radius is a violation: a
    counterexample to the certificate, so a bug in the bound. Any violation raises `SoundnessError`, after
    writing the offending indices (with radius, distance and both predictions) as JSON to `violations_path`
    atomically. Returns a JSON-serialisable summary with the attack's settings. `options` go to the attack
    (PGD: steps, step_size, restarts; AutoAttack: steps, square_queries, target_classes).

    `certificate`: a `gloro.certify.Certificate` of these images at ε from any certifier (default: the global
    one, computed here). Without radii (CROWN, KW, BCP) every flip is a violation: the attack stays in the ε-ball.
    `earlier`: the report of the same attack, with the same settings, on the same images against their labels
    (as `pgd_accuracy` returns). Where a certified point's label is its prediction, that attack was already
    the audit's attack on it, so its example is checked instead of attacking the point again; only the other
    certified points are attacked here (`reused_from_earlier_attack` counts the points checked that way).
    """
    if certificate is not None and epsilon is None:
        epsilon = certificate.epsilon
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    check_unit_interval(images)
    if certificate is None:
        certificate = certify_all(net, images, epsilon)
    elif len(certificate.predictions) != len(images) or certificate.epsilon != epsilon:
        raise ValueError(
            f"the certificate covers {len(certificate.predictions)} points at epsilon={certificate.epsilon}; "
            f"the audit was given {len(images)} images at epsilon={epsilon}"
        )
    indices = certificate.certified.nonzero().flatten().cpu()
    target = net.model
    adversary, settings = build_adversary(attack, target, images, epsilon, net.num_classes, seed, options)
    settings = {**settings, "seed": seed, "batch_size": batch_size}
    predictions = certificate.predictions[indices].cpu()
    reused = reusable_points(earlier, settings, indices, predictions, len(images))
    summary = {
        "epsilon": epsilon,
        "num_examples": len(images),
        "certified": len(indices),
        "attack": attack,
        "certifier": getattr(certificate, "method", "global"),
        "violations": 0,
        "violation_indices": [],
        "reused_from_earlier_attack": int(reused.sum()),
        "settings": settings,
    }
    if len(indices) == 0:
        return {**summary, "flipped_beyond_radius": 0, "max_distance": 0.0, "seconds": 0.0}
    distance = torch.zeros(len(indices), dtype=torch.float64)
    adversarial_predictions = predictions.clone()
    if reused.any():
        at = indices[reused]
        distance[reused] = earlier.distance.cpu()[at].double()
        adversarial_predictions[reused] = earlier.adversarial_predictions.cpu()[at]
    fresh = ~reused
    start = time.perf_counter()
    if fresh.any():
        x = images[indices[fresh].to(images.device)]
        adversarial = run_adversary(
            adversary,
            target,
            x,
            predictions[fresh],
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            description=f"audit ({attack})",
        )
        distance[fresh] = (adversarial - x).flatten(1).norm(dim=1).double().cpu()
        adversarial_predictions[fresh] = predict(target, adversarial, batch_size)
    seconds = time.perf_counter() - start
    flipped = adversarial_predictions != predictions
    if certificate.radius is None:  # certified at ε only: any flip inside the ball the attack keeps to breaks it
        radius, violated = torch.full((len(indices),), epsilon, dtype=torch.float64), flipped
    else:
        radius = certificate.radius[indices].cpu()
        violated = flipped & (distance <= radius)
    summary.update(
        flipped_beyond_radius=int((flipped & ~violated).sum()),
        max_distance=float(distance.max()),
        seconds=seconds,
    )
    if not violated.any():
        return summary
    bad = indices[violated].tolist()
    summary.update(violations=len(bad), violation_indices=bad)
    path = None
    if violations_path is not None:
        details = {
            **summary,
            "points": [
                {
                    "index": int(i),
                    "radius": float(r),
                    "distance": float(d),
                    "prediction": int(p),
                    "adversarial_prediction": int(a),
                }
                for i, r, d, p, a in zip(
                    bad, radius[violated], distance[violated], predictions[violated], adversarial_predictions[violated]
                )
            ],
        }
        path = write_json(violations_path, details)
    where = f"; indices written to {path}" if path else "; pass violations_path to save them"
    raise SoundnessError(
        f"{len(bad)} of {len(indices)} points certified at epsilon={epsilon} had their prediction changed by "
        f"{attack} within their certified radius (ε where the certifier gives none): the {summary['certifier']} "
        f"certificate is unsound (a bug, not a weak model){where}",
        bad,
        path,
    )
