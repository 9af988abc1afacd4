"""Empirical robustness through torchattacks: ℓ2 PGD with restarts and ℓ2 AutoAttack, and the accuracy under them.

torchattacks' contract holds throughout: images in [0, 1], the model returns class logits. For a GloroNet
that model is `net.model`, the clean logits, never the ⊥ head (an attack on the m+1 logits would aim at ⊥).
Attacks run in batches with a progress bar, seeded inside a forked RNG, so the caller's global RNG state
is left as it was; every result carries the attack's full settings.

The soundness audit (`gloro.audit`) runs these attacks on certified points.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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

# Defaults for PGD, whose settings the paper does not give (there is no attack code in its snapshot): 100
# steps and 10 random restarts is stronger than the 20-50-step, 1-restart PGD most certified-training papers
# report, and the step size 2.5·ε/steps (Madry et al., 2018) lets one run cross the ball 2.5 times, so it
# reaches the boundary from any start.
PGD_STEPS = 100
PGD_RESTARTS = 10
# The original AutoAttack 'standard' protocol (Croce & Hein, 2020; fra31/auto-attack, set_version):
# APGD-CE, APGD-T, FAB-T at 100 iterations and 1 restart each, the targeted attacks aimed at the 9 classes
# ranked highest after the true one, then Square with 5000 queries, p_init 0.8 and no schedule rescaling.
# torchattacks' AutoAttack uses 10 iterations, rescales Square's schedule and sets its target count from an
# `n_classes` that defaults to 10, so the attacks are built here one by one with these values.
AUTOATTACK_STEPS = 100
AUTOATTACK_TARGET_CLASSES = 9
AUTOATTACK_SQUARE_QUERIES = 5000
# An adversarial example further than ε·(1 + this) from its image is discarded (counted as a failed attack).
DISTANCE_TOLERANCE = 1e-5

Adversary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ATTACKS = ("pgd", "autoattack")


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


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


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
def eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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


def pgd_adversary(model: nn.Module, epsilon: float, *, steps: int, step_size: float | None, restarts: int):
    """torchattacks.PGDL2 with random starts, restarted on the points that earlier restarts did not flip."""
    import torchattacks  # imported here: only attacks need it

    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    alpha = 2.5 * epsilon / steps if step_size is None else float(step_size)
    if not alpha > 0 and epsilon > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    attack = torchattacks.PGDL2(model, eps=epsilon, alpha=alpha, steps=steps, random_start=True)
    settings = {
        "attack": "pgd",
        "library": f"torchattacks {torchattacks.__version__}",
        "class": "PGDL2",
        "norm": "L2",
        "loss": "ce",
        "eps": epsilon,
        "steps": steps,
        "step_size": alpha,
        "step_size_rule": "2.5*eps/steps" if step_size is None else "given",
        "restarts": restarts,
        "random_start": True,
        "restart_policy": "each restart attacks only the points no earlier restart flipped",
        "eps_for_division": attack.eps_for_division,
    }

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adversarial = x.clone()
        for _ in range(restarts):
            with torch.no_grad():
                unbroken = model(adversarial).argmax(1) == y
            if not unbroken.any():
                break
            adversarial[unbroken] = attack(x[unbroken], y[unbroken])
        return adversarial

    return run, settings


def autoattack_adversary(
    model: nn.Module,
    epsilon: float,
    *,
    num_classes: int,
    steps: int,
    square_queries: int,
    target_classes: int | None,
    seed: int,
):
    """ℓ2 AutoAttack, standard version, from torchattacks' APGD, APGDT, FAB and Square run in sequence by its
    MultiAttack (as torchattacks.AutoAttack composes them), with every parameter set explicitly.

    torchattacks derives the number of target classes from `n_classes` (targets = n_classes − 1), so it is
    passed as targets + 1; `target_classes` defaults to the original protocol's 9, capped by the net's
    classes − 1 (ask for num_classes − 1 to target every class).
    """
    import torchattacks

    if num_classes < 4:
        raise ValueError(f"AutoAttack needs at least 4 classes (APGD-T's targeted DLR loss), got {num_classes}")
    targets = min(AUTOATTACK_TARGET_CLASSES, num_classes - 1) if target_classes is None else int(target_classes)
    if not 1 <= targets <= num_classes - 1:
        raise ValueError(f"target_classes must be in [1, {num_classes - 1}] for {num_classes} classes, got {targets}")
    common = {"norm": "L2", "eps": epsilon, "seed": seed, "verbose": False}
    components = [
        ("apgd-ce", torchattacks.APGD, {"steps": steps, "n_restarts": 1, "loss": "ce", "eot_iter": 1, "rho": 0.75}),
        (
            "apgd-t",
            torchattacks.APGDT,
            {"steps": steps, "n_restarts": 1, "eot_iter": 1, "rho": 0.75, "n_classes": targets + 1},
        ),
        (
            "fab-t",
            torchattacks.FAB,
            {
                "steps": steps,
                "n_restarts": 1,
                "alpha_max": 0.1,
                "eta": 1.05,
                "beta": 0.9,
                "multi_targeted": True,
                "n_classes": targets + 1,
            },
        ),
        (
            "square",
            torchattacks.Square,
            {"n_queries": square_queries, "n_restarts": 1, "p_init": 0.8, "loss": "margin", "resc_schedule": False},
        ),
    ]
    attacks = [cls(model, **common, **params) for _, cls, params in components]
    ensemble = torchattacks.MultiAttack(attacks)
    settings = {
        "attack": "autoattack",
        "library": f"torchattacks {torchattacks.__version__}",
        "version": "standard",
        "norm": "L2",
        "eps": epsilon,
        "num_classes": num_classes,
        "target_classes": targets,
        "components": [{"name": name, "class": cls.__name__, **common, **params} for name, cls, params in components],
        "sequence": "each component attacks only the points the earlier ones did not flip (torchattacks.MultiAttack)",
    }
    return ensemble, settings


def infer_num_classes(model: nn.Module, images: torch.Tensor) -> int:
    """The number of logits the model returns (from one example)."""
    with torch.no_grad(), eval_mode(model):
        return int(model(images[:1].to(model_device(model))).shape[1])


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


def build_adversary(
    attack: str, model: nn.Module, images: torch.Tensor, epsilon: float, num_classes: int | None, seed: int, options
):
    if attack == "pgd":
        unknown = set(options) - {"steps", "step_size", "restarts"}
        if unknown:
            raise TypeError(f"unknown PGD options {sorted(unknown)}; PGD takes steps, step_size, restarts")
        return pgd_adversary(
            model,
            epsilon,
            steps=options.get("steps", PGD_STEPS),
            step_size=options.get("step_size"),
            restarts=options.get("restarts", PGD_RESTARTS),
        )
    if attack == "autoattack":
        unknown = set(options) - {"steps", "square_queries", "target_classes"}
        if unknown:
            raise TypeError(
                f"unknown AutoAttack options {sorted(unknown)}; it takes steps, square_queries, target_classes"
            )
        return autoattack_adversary(
            model,
            epsilon,
            num_classes=infer_num_classes(model, images) if num_classes is None else num_classes,
            steps=options.get("steps", AUTOATTACK_STEPS),
            square_queries=options.get("square_queries", AUTOATTACK_SQUARE_QUERIES),
            target_classes=options.get("target_classes"),
            seed=seed,
        )
    raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")


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
