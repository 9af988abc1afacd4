"""Certified evaluation of a GloroNet on a labelled set: clean accuracy, VRA, rejection rate, radii, bounds, speed.

`evaluate` is the quick form (the numbers training and tests need); `certification_report` is the full one a
pipeline writes out: VRA at the field's standard radii from one pass, the power-iteration and sound
Lipschitz constants, and certified points per second beside plain forward passes per second.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gloro.certificate import Certificate
from gloro.gloro_net import GloroNet, check_epsilon
from gloro.margin import MarginCertifier
from gloro.precision import exact_arithmetic
from gloro.timing import interleaved_rounds, median_ratio, ratio_quartiles, repeated_seconds

# The ℓ2 radii at which papers on certified robustness report VRA for images on the [0, 1] scale.
STANDARD_RADII: tuple[float, ...] = (36 / 255, 72 / 255, 108 / 255, 255 / 255)


@torch.no_grad()
def evaluate(
    net: GloroNet, images: torch.Tensor, labels: torch.Tensor, epsilon: float | None = None, batch_size: int = 1024
) -> dict:
    """Certify every point with the sound K_ij (computed once) at ε (default: the net's eval ε).

    Returns clean_accuracy, vra (correct and certified), rejection_rate (share not certified, i.e.
    predicted ⊥), epsilon, `radius`, each point's certified radius (0 where misclassified), and `correct`,
    the mask of correctly classified points (so `vra_at_radii(radius, correct, radii)` works on it).
    """
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    certificate = certify_all(net, images, epsilon, batch_size)
    correct = certificate.predictions == labels.to(certificate.predictions.device)
    return {
        "clean_accuracy": correct.double().mean().item(),
        "vra": (correct & certificate.certified).double().mean().item(),
        "rejection_rate": (~certificate.certified).double().mean().item(),
        "epsilon": float(epsilon),
        "radius": torch.where(correct, certificate.radius, torch.zeros_like(certificate.radius)),
        "correct": correct,
    }


@torch.no_grad()
@exact_arithmetic()
def certify_all(
    net: GloroNet, images: torch.Tensor, epsilon: float | None = None, batch_size: int = 1024
) -> Certificate:
    """`net.certify` over a whole set in batches, with the sound K_ij computed once; results on the CPU."""
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = net.training
    net.eval()
    net.check_domain(images)
    try:
        device = net.head.weight.device
        constants = net.sound_constants()
        parts = [constants.certify(x, net.predict_clean(x.to(device)), epsilon) for x in images.split(batch_size)]
    finally:
        net.train(was_training)
    return Certificate(
        predictions=torch.cat([part.predictions for part in parts]).cpu(),
        certified=torch.cat([part.certified for part in parts]).cpu(),
        radius=torch.cat([part.radius for part in parts]).cpu(),
        epsilon=epsilon,
        method="global",
    )


def vra_at_radii(radius: torch.Tensor, correct: torch.Tensor, radii: Sequence[float]) -> list[float]:
    """VRA at each radius r: the share of points classified correctly whose certified radius is ≥ r.

    Certified at r ⇔ radius ≥ r, the comparison `certify` makes, so the value at the eval ε equals the VRA
    `evaluate` reports; one certification pass gives the whole curve.
    """
    if radius.shape != correct.shape or radius.dim() != 1:
        raise ValueError(
            f"radius and correct must be 1-D of one length, got {tuple(radius.shape)} and {tuple(correct.shape)}"
        )
    if len(radius) == 0:
        raise ValueError("no points: VRA of an empty set is undefined")
    radius, correct = radius.double(), correct.bool().to(radius.device)
    return [(correct & (radius >= check_epsilon(r))).double().mean().item() for r in radii]


def radius_label(radius: float) -> str:
    """'36/255' for a multiple of 1/255 (how papers name ℓ2 radii on [0, 1] images), else the number itself."""
    steps = radius * 255
    if steps > 0 and abs(steps - round(steps)) < 1e-9:
        return f"{round(steps)}/255"
    return f"{radius:g}"


@dataclass(frozen=True, eq=False)
class CertificationReport:
    """The certification of a test set: `metrics` is JSON-serialisable (one row of a results CSV, plus the
    nested `vra_at_radii` and `layer_bounds` lists); the tensors hold each point's prediction, whether it
    is correct, its certified radius (of the prediction, float64) and whether it is certified at ε.
    """

    metrics: dict
    predictions: torch.Tensor
    correct: torch.Tensor
    radius: torch.Tensor
    certified: torch.Tensor

    def vra_at(self, radii: Sequence[float]) -> list[float]:
        """VRA at each of `radii`, from the stored radii (no new pass over the data)."""
        return vra_at_radii(self.radius, self.correct, radii)

    def certificate(self) -> Certificate:
        """This certification as the global certifier's `Certificate` (its time: sound constants and the
        certified passes, not the plain forward passes timed beside them)."""
        seconds = self.metrics["sound_constants_seconds"] + self.metrics["certify_seconds"]
        settings = {"batch_size": self.metrics["batch_size"]}
        return Certificate(
            self.predictions, self.certified, self.radius, self.metrics["epsilon"], "global", settings, seconds
        )

    def row(self) -> dict:
        """The scalar metrics: one row of a per-run CSV (the per-radius rows are `metrics['vra_at_radii']`)."""
        return {key: value for key, value in self.metrics.items() if not isinstance(value, list)}


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timings on a GPU measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lipschitz_summary(net: GloroNet) -> dict:
    """K from the stored power iterates and the sound K (both over all layers but the last), their ratio,
    and the per-layer rows of `net.bound_report()`.

    The power-iteration value reads the iterates as they stand (no iterations are run, the net is not
    changed); converge or freeze the net first to report the converged estimate.
    """
    with torch.no_grad():
        layers = net.bound_report()  # every layer but the last: the logit layer enters through ‖w_i − w_j‖
        estimate = math.prod(row["estimate"] for row in layers)
        sound = float(net.sub_lipschitz(sound=True))
    return {
        "lipschitz_power_iteration": estimate,
        "lipschitz_sound": sound,
        "lipschitz_ratio": sound / estimate if estimate > 0 else math.inf,
        "layer_bounds": layers,
    }


def claimed_certifier(net: GloroNet, offsets: torch.Tensor) -> MarginCertifier:
    """`certify_logits` with the K_ij that training uses (the product of the layers' estimates, at the iterates
    as they stand) and no rounding allowance: what a method's own evaluation certifies, not a certificate."""
    margin_lipschitz = net.lipschitz_constant(sound=False).detach().to(offsets.device, torch.float64)
    return MarginCertifier(margin_lipschitz, torch.zeros_like(offsets), copy=False)


@torch.no_grad()
@exact_arithmetic()
def certification_report(
    net: GloroNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | None = None,
    *,
    radii: Sequence[float] | None = None,
    batch_size: int = 1024,
) -> CertificationReport:
    """Certify a test set at ε (default: the net's eval ε) and measure what certification costs.

    metrics: num_examples, epsilon, clean_accuracy, vra, rejection_rate (share not certified); vra_ignoring_rounding
    (what the VRA would be without any rounding allowance); vra_claimed (what it would be with the Lipschitz
    constant training uses, the layers' power-iteration estimates or their constructions' claims, and no
    rounding allowance: the number a method's own evaluation would print); vra_box_allowance (with the box-wide
    offsets O_ij alone, whose largest is rounding_offset_max, before each point's own allowance refines them);
    vra_at_radii (rows {radius, radius_label, vra}; `radii` defaults to STANDARD_RADII for images, none otherwise); the
    Lipschitz constants of `lipschitz_summary`; and throughput over the same batches: forward_points_per_second
    (the wrapped model's logits alone) and certify_points_per_second (logits plus the certificate, with the
    sound K_ij computed once beforehand, its time in sound_constants_seconds: the median of calls repeated to
    0.2 s), from the median seconds of passes over the whole split timed in interleaved rounds after an untimed
    one (`gloro.timing`: at least 0.2 s and 3 rounds a side, their number in timing_rounds), and
    certify_slowdown, the median of the rounds' certify ÷ forward (certify_slowdown_q1 and _q3 its quartiles
    over rounds). forward_seconds and certify_seconds are one pass's median seconds.
    """
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as images and at least one, got {len(images)} and {len(labels)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if radii is None:
        radii = STANDARD_RADII if len(net.input_shape) == 3 else ()
    net.check_domain(images)
    was_training = net.training
    net.eval()
    device = net.head.weight.device
    try:

        def time_constants() -> float:
            synchronize(device)
            start = time.perf_counter()
            net.sound_constants()
            synchronize(device)
            return time.perf_counter() - start

        synchronize(device)
        start = time.perf_counter()
        constants = net.sound_constants()
        offsets = constants.offsets
        synchronize(device)
        # a frozen net's constants are a check that its weights are unchanged, a fraction of a millisecond: timed
        # once, that is the scheduler's noise, so it is repeated to 0.2 s (a fresh computation runs once)
        constants_seconds = statistics.median(repeated_seconds(time.perf_counter() - start, time_constants))
        batches = [x.to(device) for x in images.split(batch_size)]
        parts, box_certified, naive_certified, claimed_certified = [], [], [], []
        claimed = claimed_certifier(net, offsets)
        for x in batches:
            logits = net.predict_clean(x)
            box = constants.certifier(logits, epsilon)  # with the box-wide offsets alone
            parts.append(constants.refine(x, logits, box, (epsilon, *radii)))  # the radii's VRA too
            box_certified.append(box.certified)
            naive_certified.append(constants.unrounded(logits, epsilon).certified)  # with no offsets
            claimed_certified.append(claimed(logits, epsilon).certified)

        def forward() -> None:
            for x in batches:
                net.model(x)
            synchronize(device)

        def certify() -> None:
            for x in batches:
                constants.certify(x, net.predict_clean(x), epsilon)
            synchronize(device)

        seconds = interleaved_rounds({"forward": forward, "certify": certify})  # after the passes above: warm
        forward_seconds, certify_seconds = (statistics.median(seconds[side]) for side in ("forward", "certify"))
        lipschitz = lipschitz_summary(net)
    finally:
        net.train(was_training)
    quartiles = ratio_quartiles(seconds["certify"], seconds["forward"])
    predictions = torch.cat([part.predictions for part in parts]).cpu()
    certified = torch.cat([part.certified for part in parts]).cpu()
    radius = torch.cat([part.radius for part in parts]).cpu()
    correct = predictions == labels.cpu()
    n = len(labels)
    metrics = {
        "num_examples": n,
        "epsilon": float(epsilon),
        "clean_accuracy": correct.double().mean().item(),
        "vra": (correct & certified).double().mean().item(),
        "rejection_rate": (~certified).double().mean().item(),
        "vra_ignoring_rounding": (correct & torch.cat(naive_certified).cpu()).double().mean().item(),
        "vra_box_allowance": (correct & torch.cat(box_certified).cpu()).double().mean().item(),
        "vra_claimed": (correct & torch.cat(claimed_certified).cpu()).double().mean().item(),
        "rounding_offset_max": float(offsets.max()),
        "vra_at_radii": [
            {"radius": float(r), "radius_label": radius_label(r), "vra": value}
            for r, value in zip(radii, vra_at_radii(radius, correct, radii))
        ],
        **lipschitz,
        "forward_points_per_second": n / forward_seconds if forward_seconds > 0 else math.inf,
        "certify_points_per_second": n / certify_seconds if certify_seconds > 0 else math.inf,
        "certify_slowdown": median_ratio(seconds["certify"], seconds["forward"]),
        "certify_slowdown_q1": quartiles[0],
        "certify_slowdown_q3": quartiles[1],
        "forward_seconds": forward_seconds,
        "certify_seconds": certify_seconds,
        "timing_rounds": len(seconds["forward"]),
        "sound_constants_seconds": constants_seconds,
        "batch_size": batch_size,
        "device": str(device),
    }
    return CertificationReport(
        metrics=metrics, predictions=predictions, correct=correct, radius=radius, certified=certified
    )
