"""GloRo (Leino, Wang & Fredrikson, ICML 2021): cross-entropy on the logits with the ⊥ class, or GloRo-T's
TRADES-style loss, the Lipschitz bounds from power iteration during training."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from gloro.losses import ROBUST_TERMS, gloro_cross_entropy, gloro_trades
from gloro.methods.base import Method, Objective
from gloro.methods.options import option, schedule_option
from gloro.methods.registry import register_method
from gloro.schedules import Schedule


@dataclass(frozen=True)
class GloroOptions:
    """GloRo-T's (loss: trades) settings; plain GloRo has none."""

    trades_lambda: Schedule = schedule_option(1.0, "GloRo-T: weight of the robust term (a number or a schedule)")
    trades_robust_term: str = option("ce", "GloRo-T: the robust term, ce (cross-entropy) or kl (clipped KL)")

    def __post_init__(self) -> None:
        if self.trades_robust_term not in ROBUST_TERMS:
            choices = " or ".join(ROBUST_TERMS)
            raise ValueError(f"trades_robust_term must be {choices}, got {self.trades_robust_term!r}")


@register_method
class GloroMethod(Method):
    name = "gloro"
    losses = ("gloro", "trades")
    labels = ("GloRo", "GloRo-T")
    certifier = "global"
    options_class = GloroOptions
    adam_epsilon = 1e-7  # Keras' default, as the paper's code
    order = 0
    reference = "Leino, Wang & Fredrikson, ICML 2021"
    schedule_columns = ("lambda",)

    def epoch_values(self, recipe, epoch: int) -> dict[str, float]:
        return {"lambda": recipe.options.trades_lambda(epoch)} if recipe.loss == "trades" else {}

    def objective(self, net, x: torch.Tensor, y: torch.Tensor, recipe, values: Mapping[str, float]) -> Objective:
        logits = net(x)
        if recipe.loss == "trades":
            loss = gloro_trades(logits, y, values["lambda"], recipe.options.trades_robust_term)
        else:
            loss = gloro_cross_entropy(logits, y)
        return loss, logits[:, :-1], logits.argmax(1) == y
