"""Empirical robustness through torchattacks: ℓ2 PGD with random restarts."""

from __future__ import annotations

import torch
from torch import nn


def pgd_l2(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    *,
    steps: int = 100,
    step_size: float | None = None,
    restarts: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """Adversarial examples within the ℓ2 ε-ball (images in [0, 1], `model` returns class logits).

    Each restart starts uniformly in the ball and attacks only the points that all earlier restarts
    failed to flip. The step size defaults to 2.5·ε/steps (Madry et al.'s rule). Seeded locally, so the
    global RNG is left untouched.
    """
    import torchattacks  # imported here: it is heavy and only attacks need it

    if images.min() < 0 or images.max() > 1:
        raise ValueError("torchattacks expects images in [0, 1]; keep any input scaling inside the model")
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    attack = torchattacks.PGDL2(model, eps=epsilon, alpha=alpha, steps=steps, random_start=True)
    adversarial = images.clone()
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        for _ in range(restarts):
            with torch.no_grad():
                unbroken = model(adversarial).argmax(1) == labels
            if not unbroken.any():
                break
            adversarial[unbroken] = attack(images[unbroken], labels[unbroken])
    return adversarial
