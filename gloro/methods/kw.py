"""KW (Wong, Schmidt, Metzen & Kolter, NeurIPS 2018, ℓ2): cross-entropy of the dual network's bound on the
margins, through convex-adversarial; certified by its exact dual (`gloro.certify.kw`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gloro.certify.kw import kw_margins
from gloro.methods.base import Method, Objective
from gloro.methods.options import option
from gloro.methods.registry import register_method


def kw_loss(
    net, x: torch.Tensor, labels: torch.Tensor, epsilon: float, projections: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The KW robust cross-entropy CE(−J(x), y) (the authors' training objective); returns (loss, clean
    logits, per-point robust mask by the training bound)."""
    net.check_input(x)
    margins = kw_margins(net.model, x, labels, epsilon, projections)
    with torch.no_grad():
        logits = net.model(x)
        robust = margins.scatter(1, labels[:, None], float("-inf")).amax(1) < 0
    return F.cross_entropy(margins, labels), logits, robust


@dataclass(frozen=True)
class KwOptions:
    projections: int | None = option(
        None, "random projections of the dual in training (an estimate; certification is always exact); unset: exact"
    )

    def __post_init__(self) -> None:
        if self.projections is not None and (not isinstance(self.projections, int) or self.projections < 1):
            raise ValueError(f"projections must be a whole number >= 1 (or unset), got {self.projections!r}")


@register_method
class KwMethod(Method):
    name = "kw"
    losses = ("kw",)
    labels = ("KW",)
    certifier = "kw"
    options_class = KwOptions
    order = 10
    reference = "Wong, Schmidt, Metzen & Kolter, NeurIPS 2018 (ℓ2)"

    def objective(self, net, x: torch.Tensor, y: torch.Tensor, recipe, values: Mapping[str, float]) -> Objective:
        return kw_loss(net, x, y, net.epsilon, recipe.options.projections)

    def memory_format(self, net) -> torch.memory_format:
        return torch.contiguous_format  # convex-adversarial views activations flat
