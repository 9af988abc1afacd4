"""GloRo (Leino, Wang & Fredrikson, ICML 2021): cross-entropy on the logits with the ⊥ class, or GloRo-T's
TRADES-style loss, the Lipschitz bounds from power iteration during training."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gloro.losses import gloro_cross_entropy, gloro_trades
from gloro.methods.base import Method, Objective
from gloro.methods.registry import register_method


@register_method
class GloroMethod(Method):
    name = "gloro"
    losses = ("gloro", "trades")
    labels = ("GloRo", "GloRo-T")
    certifier = "global"
    adam_epsilon = 1e-7  # Keras' default, as the paper's code
    order = 0
    reference = "Leino, Wang & Fredrikson, ICML 2021"
    schedule_columns = ("lambda",)

    def epoch_values(self, recipe, epoch: int) -> dict[str, float]:
        return {"lambda": recipe.trades_lambda(epoch)} if recipe.loss == "trades" else {}

    def objective(self, net, x: torch.Tensor, y: torch.Tensor, recipe, values: Mapping[str, float]) -> Objective:
        logits = net(x)
        if recipe.loss == "trades":
            loss = gloro_trades(logits, y, values["lambda"], recipe.trades_robust_term)
        else:
            loss = gloro_cross_entropy(logits, y)
        return loss, logits[:, :-1], logits.argmax(1) == y
