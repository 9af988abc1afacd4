"""Layers that GloRo Nets use beyond torch.nn (the MinMax, GroupSort-2, activation; a residual connection; a
row-normalised logit layer; channel padding and selection; plain layers holding computed weights), and the error
for a layer that no Lipschitz bound is known for."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


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


class RowNormalized(nn.Module):
    """A parametrization that divides each row of a weight by its ℓ2 norm: on a logit layer, the LLN head of
    SLL and LiResNet (logits in units of distance, so an offset in the loss is a radius)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)


def normalized_linear(features: int, classes: int) -> nn.Linear:
    """A logit layer whose rows are normalised (`RowNormalized`), with a bias. Certified as any nn.Linear,
    from the weight it computes: the pairwise ‖ŵ_i − ŵ_j‖ of the normalised rows."""
    layer = nn.Linear(features, classes)
    parametrize.register_parametrization(layer, "weight", RowNormalized())
    return layer


class ChannelPad(nn.Module):
    """Zero channels appended up to `channels` (1-Lipschitz, exact): widens an image's 1 or 3 channels for a
    net of square layers, as the 1-Lipschitz-layers comparison's nets do."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.channels:
            raise ValueError(f"ChannelPad({self.channels}) got {x.shape[1]} channels, more than it pads to")
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))

    def extra_repr(self) -> str:
        return str(self.channels)


class FirstChannels(nn.Module):
    """The first `channels` channels (1-Lipschitz, exact): halves the channels before a space-to-depth step."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.channels]

    def extra_repr(self) -> str:
        return str(self.channels)


def computed_linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    """An nn.Linear holding these tensors as its weight and bias, built without drawing weights: how a layer
    that computes its weight (AOL's, SLL's) shows the bounds and certifiers the plain layer it computes."""
    layer = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    return _holding(layer, weight, bias)


def computed_conv(weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int | tuple = 0) -> nn.Conv2d:
    """A stride-1 nn.Conv2d holding these tensors as its kernel and bias (as `computed_linear`)."""
    out_channels, in_channels, *kernel = weight.shape
    layer = nn.utils.skip_init(
        nn.Conv2d, in_channels, out_channels, tuple(kernel), padding=padding, bias=bias is not None, device="meta"
    )
    return _holding(layer, weight, bias)


def _holding(layer: nn.Linear | nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None):
    """`layer` with its (meta) parameters replaced by the given tensors, whose gradients reach their sources."""
    del layer.weight
    layer.weight = weight
    if bias is not None:
        del layer.bias
        layer.bias = bias
    return layer


class UnsupportedLayerError(TypeError):
    """A layer for which no Lipschitz bound is known: counting it as 1 would make certificates unsound."""
