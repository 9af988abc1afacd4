"""BCP (Lee, Lee & Park, NeurIPS 2020): κ·CE(z) + (1 − κ)·CE(z̲), z̲ the worst-case margins over the ball and
box propagated with power-iteration norms; certified by the sound version (`gloro.certify.bcp`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gloro.certify.bcp import bcp_margins
from gloro.methods.base import Method, Objective
from gloro.methods.options import option, schedule_option
from gloro.methods.registry import register_method
from gloro.schedules import Schedule


def bcp_loss(
    net, x: torch.Tensor, labels: torch.Tensor, epsilon: float, kappa: float, solver_iterations: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The BCP objective κ·CE(z, y) + (1 − κ)·CE(z̲, y), z̲ the worst-case margins; returns (loss, clean
    logits, per-point robust mask: correct and certified by the training bound)."""
    logits, margins = bcp_margins(net, x, labels, epsilon, sound=False, solver_iterations=solver_iterations)
    loss = kappa * F.cross_entropy(logits, labels) + (1 - kappa) * F.cross_entropy(margins, labels)
    with torch.no_grad():
        robust = margins.scatter(1, labels[:, None], float("-inf")).amax(1) < 0
    return loss, logits, robust


@dataclass(frozen=True)
class BcpOptions:
    kappa: Schedule = schedule_option(0.0, "weight of the clean cross-entropy, κ·CE(z) + (1 − κ)·CE(z_worst)")
    solver_iterations: int = option(10, "clip-and-rescale steps of the last-layer solve in training")

    def __post_init__(self) -> None:
        if self.solver_iterations < 1:
            raise ValueError(f"solver_iterations must be >= 1, got {self.solver_iterations}")


@register_method
class BcpMethod(Method):
    name = "bcp"
    losses = ("bcp",)
    labels = ("BCP",)
    certifier = "bcp"
    options_class = BcpOptions
    order = 20
    reference = "Lee, Lee & Park, NeurIPS 2020"
    schedule_columns = ("kappa",)

    def epoch_values(self, recipe, epoch: int) -> dict[str, float]:
        return {"kappa": recipe.options.kappa(epoch)}

    def objective(self, net, x: torch.Tensor, y: torch.Tensor, recipe, values: Mapping[str, float]) -> Objective:
        return bcp_loss(net, x, y, net.epsilon, values["kappa"], recipe.options.solver_iterations)
