"""A copy of a net's weights that says, in microseconds, whether any of them changed since it was taken."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gloro import native


class WeightSnapshot:
    """The parameters of `layers` as they are now, compared byte for byte on every `unchanged()` call.

    Every way of editing a weight is caught (in place, through `.data` or a NumPy view, which bypass
    PyTorch's version counters, or by assigning a new tensor or layer), since the bytes themselves are
    compared. On the CPU the comparison is one call of `native.unchanged` with pointers prepared here.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.layers = list(layers)
        self.modules = _modules(self.layers)
        self.entries = [
            (module._parameters, name, parameter, parameter.detach().clone())
            for module in self.modules
            for name, parameter in module._parameters.items()
            if parameter is not None
        ]
        self.plan()

    def plan(self) -> None:
        """Take the parameters' addresses and prepare the compiled comparison (None where it cannot run)."""
        self.pointers = [parameter.data_ptr() for _, _, parameter, _ in self.entries]
        self.compiled = native.unchanged_plan(
            [parameter.detach() for _, _, parameter, _ in self.entries], [copy for *_, copy in self.entries]
        )

    def __getstate__(self) -> dict:  # addresses and the compiled call belong to this process's tensors
        return {"layers": self.layers, "entries": self.entries}

    def __setstate__(self, state: dict) -> None:
        self.layers, self.entries = state["layers"], state["entries"]
        self.modules = _modules(self.layers)
        self.plan()

    def unchanged(self, layers: Sequence[nn.Module]) -> bool:
        """Whether `layers` (the net's leaf layers now) are the same layers with the same weights."""
        if list(layers) != self.layers or _modules(layers) != self.modules:  # a block's layer replaced, too
            return False
        same_tensors = all(
            parameters.get(name) is parameter and parameter.data_ptr() == pointer
            for (parameters, name, parameter, _), pointer in zip(self.entries, self.pointers)
        )
        if same_tensors and self.compiled is not None:
            return self.compiled()
        current = [parameters.get(name) for parameters, name, _, _ in self.entries]
        return all(
            p is not None
            and p.dtype == copy.dtype
            and p.shape == copy.shape
            and p.device == copy.device
            and torch.equal(p.detach(), copy)
            for p, (*_, copy) in zip(current, self.entries)
        )


def _modules(layers: Sequence[nn.Module]) -> list[nn.Module]:
    """Every module of `layers`, a block's own layers included, in a fixed order."""
    return [module for layer in layers for module in layer.modules()]
