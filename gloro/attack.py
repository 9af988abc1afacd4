"""Empirical robustness through torchattacks: ℓ2 PGD with restarts and ℓ2 AutoAttack, and the accuracy under them.

torchattacks' contract holds throughout: images in [0, 1], the model returns class logits. For a GloroNet
that model is `net.model`, the clean logits, never the ⊥ head (an attack on the m+1 logits would aim at ⊥).
Attacks run in batches with a progress bar, seeded inside a forked RNG, so the caller's global RNG state
is left as it was; every result carries the attack's full settings.

The soundness audit (`gloro.audit`) runs these attacks on certified points.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from gloro.gloro_net import GloroNet, check_epsilon
from gloro.input_gradient import fold_input_gradients, inputs_only
from gloro.layout import matching_gradients

if TYPE_CHECKING:
    pass
from gloro.adversaries import (
    AUTOATTACK_SQUARE_QUERIES,
    AUTOATTACK_STEPS,
    PGD_RESTARTS,
    PGD_STEPS,
    Adversary,
    build_adversary,
    eval_mode,
    model_device,
    pgd_adversary,
)

# An adversarial example further than ε·(1 + this) from its image is discarded (counted as a failed attack).
DISTANCE_TOLERANCE = 1e-5


@dataclass(frozen=True, eq=False)
class AttackReport:
    """An attack's outcome: `metrics` is JSON-serialisable (robust_accuracy, clean_accuracy, the attack's full
    `settings`, ...); per point, `robust` says whether it is still classified correctly after the attack,
    `adversarial_predictions` what the model predicts there, `labels` the classes the attack aimed away from,
    `clean_predictions` the model's predictions on the clean points and `distance` (float64) how far the kept
    example lies from its point (0 where an example outside the ball was discarded).
    """

    metrics: dict
    robust: torch.Tensor
    adversarial_predictions: torch.Tensor
    labels: torch.Tensor
    clean_predictions: torch.Tensor
    distance: torch.Tensor


def attacked_model(model: nn.Module) -> nn.Module:
    """The module whose logits an attack should see: a GloroNet's wrapped model (clean logits, no ⊥)."""
    return model.model if isinstance(model, GloroNet) else model


def check_unit_interval(images: torch.Tensor) -> None:
    if not images.is_floating_point():
        raise TypeError(f"attacks need float images in [0, 1], got {images.dtype}; use Split.float_images()")
    if len(images) and (images.min() < 0 or images.max() > 1):
        raise ValueError("torchattacks expects images in [0, 1]; keep any input scaling inside the model")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU and CUDA generators for the block and restore their state afterwards.

    torchattacks draws from the global generators (and its APGD, FAB and Square reseed them on every call),
    so the block runs in a forked RNG over every CUDA device: the caller's RNG stream is not disturbed.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def attack_layout(model: nn.Module, images: torch.Tensor) -> Iterator[torch.memory_format]:
    """channels_last weights for a conv net while it is attacked, restored afterwards; yields the layout for
    the inputs. oneDNN's NHWC convs, their input gradients included, make a 6C2F PGD step 1.5× faster."""
    has_conv = any(isinstance(layer, nn.Conv2d) for layer in model.modules())
    if not (has_conv and images.dim() == 4):
        yield torch.contiguous_format
        return
    saved = [(parameter, parameter.data) for parameter in model.parameters()]
    model.to(memory_format=torch.channels_last)
    try:
        yield torch.channels_last
    finally:
        for parameter, data in saved:
            parameter.data = data


def run_adversary(
    adversary: Adversary,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int,
    batch_size: int,
    progress: bool,
    description: str,
) -> torch.Tensor:
    """Adversarial examples for every image, batch by batch on the model's device, in a seeded forked RNG."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) != len(labels):
        raise ValueError(f"need one label per image, got {len(images)} images and {len(labels)} labels")
    device = model_device(model)
    adversarial = torch.empty_like(images)
    bar = tqdm(total=len(images), desc=description, unit="image", disable=not progress)
    with (
        seeded(seed),
        eval_mode(model),
        attack_layout(model, images) as layout,
        inputs_only(model),
        fold_input_gradients(model),
        matching_gradients(model),
        bar,
    ):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).contiguous(memory_format=layout)
            y = labels[start : start + batch_size].to(device)
            adversarial[start : start + batch_size] = adversary(x, y).detach().to(adversarial.device)
            bar.update(len(x))
    return adversarial


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """argmax of the logits, in batches, on the CPU."""
    device = model_device(model)
    with eval_mode(model):
        return torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(batch_size)])


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | None = None,
    *,
    attack: str = "pgd",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    proven: torch.Tensor | None = None,
    **options,
) -> AttackReport:
    """Accuracy under the ℓ2 attack `attack` ('pgd' or 'autoattack') at ε: the share of points still
    classified correctly. `model` is a GloroNet (its clean logits are attacked; ε defaults to its eval ε)
    or any module returning logits. `options` are the attack's own (see `pgd_accuracy`, `autoattack_accuracy`).

    `proven`: per point, whether a sound certificate at ε or more fixes its prediction at its label. No
    attack within ε can flip such a point, so it is counted robust without being attacked (its example is
    the point itself); `proven_not_attacked` in the metrics counts them. A proven point the model
    misclassifies raises: the certificate belongs to another model or other labels.
    """
    net = model if isinstance(model, GloroNet) else None
    if epsilon is None:
        if net is None:
            raise ValueError("epsilon is required unless the model is a GloroNet (whose eval ε is the default)")
        epsilon = net.eval_epsilon
    epsilon = check_epsilon(epsilon)
    check_unit_interval(images)
    target = attacked_model(model)
    num_classes = net.num_classes if net is not None else None
    adversary, settings = build_adversary(attack, target, images, epsilon, num_classes, seed, options)
    settings = {**settings, "seed": seed, "batch_size": batch_size}
    labels = labels.cpu()
    clean = predict(target, images, batch_size)
    skipped = torch.zeros(len(labels), dtype=torch.bool) if proven is None else proven_points(proven, clean, labels)
    if skipped.any():
        settings["proven_points"] = "counted robust without being attacked: a sound certificate fixes their label"
    at = (~skipped).nonzero().flatten()
    start = time.perf_counter()
    adversarial = images.clone()  # a proven point's example is the point itself
    adversarial[at.to(images.device)] = run_adversary(
        adversary,
        target,
        images[at.to(images.device)],
        labels[at],
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        description=attack,
    )
    seconds = time.perf_counter() - start
    distance = (adversarial - images).flatten(1).norm(dim=1).double().cpu()
    outside = distance > epsilon * (1 + DISTANCE_TOLERANCE)
    adversarial[outside.to(adversarial.device)] = images[outside.to(images.device)]
    kept_distance = torch.where(outside, torch.zeros_like(distance), distance)
    attacked = predict(target, adversarial, batch_size)
    robust = attacked == labels
    n = max(len(labels), 1)
    metrics = {
        "attack": attack,
        "epsilon": epsilon,
        "num_examples": len(labels),
        "clean_accuracy": float((clean == labels).sum()) / n,
        "robust_accuracy": float(robust.sum()) / n,
        "max_distance": float(distance[~outside].max()) if bool((~outside).any()) else 0.0,
        "discarded_outside_ball": int(outside.sum()),
        "proven_not_attacked": int(skipped.sum()),
        "seconds": seconds,
        "settings": settings,
    }
    return AttackReport(
        metrics=metrics,
        robust=robust,
        adversarial_predictions=attacked,
        labels=labels,
        clean_predictions=clean,
        distance=kept_distance,
    )


def proven_points(proven: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`proven` (one flag per point) as a CPU bool mask, checked against the model's clean predictions."""
    mask = torch.as_tensor(proven, dtype=torch.bool).cpu()
    if mask.shape != labels.shape:
        raise ValueError(f"proven needs one flag per point: got shape {tuple(mask.shape)} for {len(labels)} points")
    wrong = (mask & (clean != labels)).nonzero().flatten()
    if len(wrong):
        raise ValueError(
            f"{len(wrong)} points marked proven are misclassified by the model (first: index {int(wrong[0])}): "
            "pass only points a certificate of this model fixes at their label"
        )
    return mask


def pgd_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | None = None,
    *,
    steps: int = PGD_STEPS,
    step_size: float | None = None,
    restarts: int = PGD_RESTARTS,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    proven: torch.Tensor | None = None,
) -> AttackReport:
    """PGD accuracy (the share of points still classified correctly) under ℓ2 PGD at ε.

    Defaults: 100 steps of size 2.5·ε/steps and 10 random restarts, the later restarts on the points not yet
    flipped. The paper gives no PGD settings; these are stronger than the usual 20-50 steps with one start,
    and the step rule (Madry et al.) lets a run reach the ball's boundary from any start. `proven`: points a
    sound certificate fixes at their label, counted robust unattacked (see `robust_accuracy`).
    """
    return robust_accuracy(
        model,
        images,
        labels,
        epsilon,
        attack="pgd",
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        proven=proven,
        steps=steps,
        step_size=step_size,
        restarts=restarts,
    )


def autoattack_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | None = None,
    *,
    steps: int = AUTOATTACK_STEPS,
    square_queries: int = AUTOATTACK_SQUARE_QUERIES,
    target_classes: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    proven: torch.Tensor | None = None,
) -> AttackReport:
    """Accuracy under ℓ2 AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) at ε, with the original
    protocol's settings: 100 iterations, 9 target classes (fewer when the net has fewer), 5000 Square
    queries. The class count comes from the GloroNet, or from the model's logits. `proven`: points a sound
    certificate fixes at their label, counted robust unattacked (see `robust_accuracy`).
    """
    return robust_accuracy(
        model,
        images,
        labels,
        epsilon,
        attack="autoattack",
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        proven=proven,
        steps=steps,
        square_queries=square_queries,
        target_classes=target_classes,
    )


def pgd_l2(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    *,
    steps: int = PGD_STEPS,
    step_size: float | None = None,
    restarts: int = PGD_RESTARTS,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Adversarial examples within the ℓ2 ε-ball (images in [0, 1], `model` returns class logits).

    Each restart starts at random in the ball and attacks only the points that all earlier restarts failed
    to flip. The step size defaults to 2.5·ε/steps (Madry et al.'s rule). Batches of `batch_size` (default:
    all at once); seeded in a forked RNG, so the global RNG is left untouched.
    """
    epsilon = check_epsilon(epsilon)
    check_unit_interval(images)
    target = attacked_model(model)
    adversary, _ = pgd_adversary(target, epsilon, steps=steps, step_size=step_size, restarts=restarts)
    return run_adversary(
        adversary,
        target,
        images,
        labels,
        seed=seed,
        batch_size=batch_size or max(len(images), 1),
        progress=progress,
        description="pgd",
    )
