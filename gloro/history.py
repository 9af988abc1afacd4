"""A training run's history, one row per epoch with its best model so far, and the scratch file that lets an
interrupted run resume after its last finished epoch."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gloro.atomic import torch_save
from gloro.training_cost import training_cost

if TYPE_CHECKING:
    from gloro.training import TrainingRecipe

BEST_SELECTION = "the epoch with the highest eval_vra (the first on ties); the paper's code selected on the test set"


@dataclass(frozen=True, eq=False)
class BestModel:
    """The weights (a CPU copy of the state_dict) of the epoch with the best eval VRA, and its numbers.

    Report it beside the final model, labelled as selected on the eval set: when that set is the test set,
    as in the paper's code, its numbers are optimistic.
    """

    epoch: int
    vra: float
    clean_accuracy: float
    epsilon: float
    state_dict: dict[str, torch.Tensor]
    selection: str = BEST_SELECTION


class TrainingHistory(list):
    """One dict per epoch (a plain list to every caller) plus `best`, the best-eval-VRA model (None when no
    eval set was given). The final model is the net itself, as training leaves it.
    """

    def __init__(self, rows: Iterable[dict] = (), best: BestModel | None = None) -> None:
        super().__init__(rows)
        self.best = best

    def cost(self) -> dict:
        return training_cost(self)


def save_scratch(path, recipe, net, optimizer, generator, history: TrainingHistory) -> None:
    """Everything `resume` needs to continue after the last finished epoch, written atomically."""
    best = None if history.best is None else asdict(history.best)
    payload = {
        "recipe": repr(recipe),
        "net": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "history": list(history),
        "best": best,
    }
    torch_save(payload, path)


def read_scratch(path, recipe: TrainingRecipe) -> dict | None:
    """The scratch file at `path` if it exists, is readable and was written for `recipe`; else None (warned)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged scratch file only costs the epochs it held
        warnings.warn(f"ignoring unreadable training scratch file {path} ({error}); starting over", stacklevel=3)
        return None
    if payload.get("recipe") != repr(recipe):
        warnings.warn(f"ignoring training scratch file {path}: it was written for another recipe", stacklevel=3)
        return None
    return payload


def finished_epochs(path, recipe: TrainingRecipe) -> int:
    """How many epochs a usable scratch file at `path` holds (0 without one)."""
    payload = read_scratch(path, recipe)
    return 0 if payload is None else len(payload["history"])


def resume(path, recipe, net, optimizer, generator, history: TrainingHistory) -> int:
    """Restore a scratch file written for the same recipe; returns the epoch to start from (0 without one)."""
    payload = read_scratch(path, recipe)
    if payload is None:
        return 0
    net.load_state_dict(payload["net"])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    history.extend(payload["history"])
    history.best = None if payload["best"] is None else BestModel(**payload["best"])
    print(f"resuming after epoch {len(history) - 1} of {recipe.epochs} from {path}", file=sys.stderr)
    return len(history)
