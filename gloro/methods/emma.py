"""EMMA, the loss LiResNet is trained with (Hu, Zou, Wang, Leino & Fredrikson, NeurIPS 2023): each non-label
logit is raised by what a perturbation of the training radius could add to it against the label,
z̃_j = z_j − z_y + ρ_j·ε·K_yj, and the loss is the cross-entropy of z̃. The authors' current code makes ρ_j
adaptive (the radius the margin to class j already reaches, within [0.01, 1], held constant in the
gradient); their NeurIPS code takes ρ_j = 1."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gloro.margin import with_bottom
from gloro.methods.base import Method, Objective
from gloro.methods.options import option
from gloro.methods.registry import register_method

SMALLEST_RADIUS = 0.01  # of ε: the adaptive radius's floor, as in the authors' code
SMALLEST_SCALE = 1e-8  # ε·K_yj below this counts as this, so the adaptive radius stays finite


@dataclass(frozen=True)
class EmmaOptions:
    adaptive: bool = option(
        True, "true: each class's radius is the one its margin already reaches (current code); false: ε for all"
    )


def emma_loss(
    logits: torch.Tensor, labels: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float, adaptive: bool = True
) -> torch.Tensor:
    """CE(z̃, y) with z̃_j = z_j − z_y + ρ_j·ε·K_yj: `margin_lipschitz` is the m×m matrix K_ij of the training
    bound, ρ_j = clip(m_j/(ε·K_yj), 0.01, 1) detached where `adaptive`, else 1 (z̃_y = 0 either way)."""
    reach = epsilon * margin_lipschitz[labels]  # ε·K_yj, 0 at j = y
    gaps = logits - logits.gather(1, labels[:, None])  # z_j − z_y
    if adaptive:
        radius = (-gaps / reach.clamp_min(SMALLEST_SCALE)).clamp(SMALLEST_RADIUS, 1.0).detach()
        reach = radius * reach
    return F.cross_entropy(gaps + reach, labels)


@register_method
class EmmaMethod(Method):
    """EMMA on any net, LiResNet's among them (`gloro.families.liresnet`); certified by the global bound."""

    name = "emma"
    losses = ("emma",)
    labels = ("EMMA",)
    certifier = "global"
    options_class = EmmaOptions
    order = 30
    reference = "Hu, Zou, Wang, Leino & Fredrikson, NeurIPS 2023"

    def objective(self, net, x: torch.Tensor, y: torch.Tensor, recipe, values: Mapping[str, float]) -> Objective:
        logits = net.predict_clean(x)
        margin_lipschitz = net.lipschitz_constant(sound=False)  # advances the power iteration once per step
        loss = emma_loss(logits, y, margin_lipschitz, net.epsilon, recipe.options.adaptive)
        robust = with_bottom(logits.detach(), margin_lipschitz.detach(), net.epsilon).argmax(1) == y
        return loss, logits, robust
