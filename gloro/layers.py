"""Layers that GloRo Nets use beyond torch.nn (the MinMax, GroupSort-2, activation; a residual connection), and
the error for a layer that no Lipschitz bound is known for."""

from __future__ import annotations

import torch
from torch import nn


class MinMax(nn.Module):
    """GroupSort of adjacent channel pairs: (a, b) -> (min, max). Gradient-norm preserving, Lipschitz 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels % 2:
            raise ValueError(f"MinMax needs an even number of channels, got {channels}")
        pairs = x.unflatten(1, (channels // 2, 2))
        low, high = pairs.min(dim=2, keepdim=True).values, pairs.max(dim=2, keepdim=True).values
        return torch.cat((low, high), dim=2).flatten(1, 2)


class Residual(nn.Module):
    """x + branch(x): a skip connection around a chain of layers that keeps the shape of its input.

    Bounded by 1 + the product of the branch's bounds, and rounded as both paths plus the sum
    (`gloro.layer_rules`); the global certificate covers it, the certifiers that follow one chain of layers
    (local, CROWN, KW, BCP) refuse it.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.branch = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class UnsupportedLayerError(TypeError):
    """A layer for which no Lipschitz bound is known: counting it as 1 would make certificates unsound."""
