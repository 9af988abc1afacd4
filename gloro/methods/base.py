"""What a training method is to the harness: the losses it trains with, how one batch's objective is computed,
the schedules it moves per epoch, the certifier that judges it, and how tables name and order it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import torch

from gloro.methods.options import NoOptions, options_from_config

if TYPE_CHECKING:
    from gloro.gloro_net import GloroNet
    from gloro.training import TrainingRecipe

Objective = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # loss, clean logits, robust by the training bound


class Method:
    """A training method. Subclass, set the class attributes, implement `objective`, and decorate the class
    with `gloro.methods.register_method`; a config then selects it as `method: <name>`.

    `losses` are the config's `loss` values it accepts (the first is the default) and `labels` the table
    label of each; `options_class` is a frozen dataclass of its own settings (`gloro.methods.options`), read
    from an experiment's `options:` and reaching `objective` as `recipe.options`; `certifier` names the
    registered certifier its results are reported with; `adam_epsilon` is Adam's ε in its authors' code;
    `order` places its rows in Table 1 (lower first); `reference` cites it; `schedule_columns` names the
    per-epoch values `epoch_values` returns (history columns).
    """

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]
    labels: ClassVar[tuple[str, ...]]
    certifier: ClassVar[str]
    options_class: ClassVar[type] = NoOptions
    adam_epsilon: ClassVar[float] = 1e-8
    order: ClassVar[int] = 100
    reference: ClassVar[str] = ""
    schedule_columns: ClassVar[tuple[str, ...]] = ()

    def label(self, loss: str) -> str:
        """The table label of this method trained with `loss`."""
        return self.labels[self.losses.index(loss)]

    def make_options(self, settings: Mapping | None = None):
        """This method's options from a config's `options:` mapping (unset ones at their defaults)."""
        return options_from_config(self.options_class, settings, self.name)

    def published_key(self, loss: str) -> str:
        """How workflow/resources/published.csv names this method with `loss`: its name, then _<loss> unless
        the loss is its default."""
        return self.name if loss == self.losses[0] else f"{self.name}_{loss}"

    def epoch_values(self, recipe: TrainingRecipe, epoch: int) -> dict[str, float]:
        """The values of this method's schedules at `epoch` (keys from `schedule_columns`), which `objective`
        receives and the history records."""
        return {}

    def objective(
        self, net: GloroNet, x: torch.Tensor, y: torch.Tensor, recipe: TrainingRecipe, values: Mapping[str, float]
    ) -> Objective:
        """The loss of one batch at the net's ε, the clean logits (without ⊥) and which points the training
        bound calls robust."""
        raise NotImplementedError

    def memory_format(self, net: GloroNet) -> torch.memory_format | None:
        """The layout this method needs its activations in, or None for the fastest one."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, losses={self.losses})"
