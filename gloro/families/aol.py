"""AOL, almost-orthogonal layers (Prach & Lampert, ECCV 2022): a dense layer x ↦ P D x + b with
D = diag(d), d_i = (Σ_j |PᵀP|_ij + 10⁻⁶)^{-1/2}, which has ‖PD‖₂ ≤ 1 in exact arithmetic for any P, and the
conv layer that scales its kernel's input channels the same way from the kernel's self-correlation.

The certificate does not take that claim: each layer lowers to the nn.Linear or nn.Conv2d it computes (weight
as rounded in its own precision), whose sound bound the library proves as for any such layer; the claim is
only the training estimate (`gloro.layer_bounds.ClaimedBound`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gloro.architectures import ArchitectureSpec, register_architecture
from gloro.families.conv_net import comparison_conv_net
from gloro.layer_bounds import ClaimedBound
from gloro.layer_rules import register_layer_rule
from gloro.layers import MinMax, computed_conv, computed_linear, normalized_linear

SAFETY = 1e-6  # added under the square root, as the authors do: it only shrinks d
MAX_WIDTH = 1024  # AOL-D4's width on large inputs (a 64×64×3 image has 12,288 units)
STARTS = ("dirac", "orthogonal")  # how an AOL conv starts (the comparison's AOLConv2dDirac and AOLConv2dOrth)


class AOLDense(nn.Module):
    """One AOL dense layer from `features_in` to `features_out` units, with a bias."""

    def __init__(self, features_in: int, features_out: int) -> None:
        super().__init__()
        self.raw = nn.Linear(features_in, features_out)  # P (torch's out × in layout) and b, drawn as any Linear

    def rescaled_weight(self) -> torch.Tensor:
        """P D: each input column of P scaled by d_i = (Σ_j |PᵀP|_ij + 10⁻⁶)^{-1/2}."""
        p = self.raw.weight
        return p * ((p.T @ p).abs().sum(1) + SAFETY).rsqrt()[None, :]

    def as_linear(self) -> nn.Linear:
        """The nn.Linear this layer computes (built without drawing weights), for the certifiers."""
        return computed_linear(self.rescaled_weight(), self.raw.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.rescaled_weight(), self.raw.bias)


register_layer_rule(
    AOLDense,
    "block",
    lower=lambda layer: (layer.as_linear(),),
    bound=lambda layer, shape, generator: ClaimedBound(layer, shape, generator, claim=1.0),
)


class AOLConv2d(nn.Module):
    """One AOL conv layer, `kernel_size`×`kernel_size`, stride 1, zero padding kernel_size // 2 ('same' for odd
    sizes), with a bias: the kernel's input channel i scaled by d_i = (Σ |K⋆K|_i·· + 10⁻⁶)^{-1/2}, the sum over
    every other input channel and every offset of the kernel's self-correlation, which bounds ‖JᵀJ‖'s rows."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3, start: str = "dirac") -> None:
        super().__init__()
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
        self.raw = nn.Conv2d(channels_in, channels_out, kernel_size, padding=kernel_size // 2)
        self.start = start
        self.draw(None)

    @torch.no_grad()
    def draw(self, generator: torch.Generator | None) -> None:
        """The comparison's start: the identity kernel ("dirac", square layers) or an orthogonal one; bias 0."""
        if self.start == "dirac" and self.raw.in_channels == self.raw.out_channels:
            nn.init.dirac_(self.raw.weight)
        else:
            nn.init.orthogonal_(self.raw.weight, generator=generator)
        self.raw.bias.zero_()

    def rescaled_weight(self) -> torch.Tensor:
        """K with each input channel scaled by its d_i."""
        kernel = self.raw.weight
        by_input = kernel.transpose(0, 1)  # (in, out, kh, kw): the self-correlation sums over output channels
        correlation = F.conv2d(by_input, by_input, padding=(kernel.shape[2] - 1, kernel.shape[3] - 1))
        scale = (correlation.abs().sum((1, 2, 3)) + SAFETY).rsqrt()
        return kernel * scale[None, :, None, None]

    def as_conv(self) -> nn.Conv2d:
        """The nn.Conv2d this layer computes (built without drawing weights), for the certifiers."""
        return computed_conv(self.rescaled_weight(), self.raw.bias, self.raw.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.rescaled_weight(), self.raw.bias, 1, self.raw.padding)


register_layer_rule(
    AOLConv2d,
    "block",
    lower=lambda layer: (layer.as_conv(),),
    bound=lambda layer, shape, generator: ClaimedBound(layer, shape, generator, claim=1.0),
)


@register_architecture("AOL-D4")
def aol_dense_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """A small all-dense AOL net for CPU runs: four AOL layers of the flattened input's width (at most 1024)
    with MinMax between them, and the row-normalised head (AOL's own nets put AOL convs first and end in a
    projection)."""
    features = math.prod(spec.input_shape)
    width = min(features, MAX_WIDTH)
    layers: list[nn.Module] = [nn.Flatten()]
    for index in range(4):
        layers += [AOLDense(features if index == 0 else width, width), MinMax()]
    return [*layers, normalized_linear(width, spec.num_classes)]


def aol_conv_net(spec: ArchitectureSpec, width: int, per_block: int = 5) -> list[nn.Module]:
    """The 1-Lipschitz-layers comparison's ConvNet (`comparison_conv_net`) with AOL convs: square convs start at
    the identity, the first and last 1×1 convs orthogonal, as theirs."""

    def conv(channels: int, kernel: int, position: str, size: tuple[int, int]) -> nn.Module:
        return AOLConv2d(channels, channels, kernel, start="dirac" if position == "block" else "orthogonal")

    return comparison_conv_net(spec, width, conv, per_block)


@register_architecture("AOL-S")
def aol_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The comparison's size S (width 32; about 6.3M parameters on 32×32 images)."""
    return aol_conv_net(spec, width=32)


@register_architecture("AOL-XS")
def aol_extra_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The same net at width 8, for CPU runs on small images."""
    return aol_conv_net(spec, width=8)
