"""Training methods by name (`@register_method`, `get_method`, `list_methods`): GloRo and GloRo-T, its
successor's EMMA, the baselines KW and BCP, and the 1-Lipschitz families' SLL and AOL. A method of your own
is a `Method` subclass registered the same way (docs/methods.md)."""

from gloro.methods import bcp, emma, gloro, kw, offset  # noqa: F401 - registers the built-in methods
from gloro.methods.base import Method, Objective
from gloro.methods.registry import (
    get_method,
    list_methods,
    method_for_loss,
    register_method,
    table_labels,
    training_losses,
)

COST_REFERENCE = "GloRo"  # Table 1 divides this label's training time and memory by every other row's

__all__ = [
    "COST_REFERENCE",
    "Method",
    "Objective",
    "get_method",
    "list_methods",
    "method_for_loss",
    "register_method",
    "table_labels",
    "training_losses",
]
