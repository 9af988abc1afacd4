"""LiResNet (Hu, Zou, Wang, Leino & Fredrikson, NeurIPS 2023): residual blocks x + conv(x) that are one linear
conv, with kernel W = I_δ + d^{-1/2}·(a ⊙ V) (I_δ the identity kernel, d the number of blocks, a a learnable
scale per output channel), so the block's Lipschitz constant is one operator norm.

The block lowers to the nn.Conv2d it computes, whose bound the library proves as for any conv: power iteration
at the block's input size for training (as the authors do) and the sound bound of the computed kernel for
the certificate. Their nets end in a row-normalised (LLN) head, certified with its pairwise norms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gloro.architectures import ArchitectureSpec, register_architecture
from gloro.layer_rules import register_layer_rule
from gloro.layers import MinMax, computed_conv, normalized_linear


class LiResConv(nn.Module):
    """One linear residual block on `channels` channels: a 3×3 conv, stride 1, zero padding 1, whose kernel is
    the identity's plus the residual's, scaled by depth^{-1/2} (`depth`: the blocks in the net)."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        if channels < 1 or depth < 1:
            raise ValueError(f"a LiRes block needs channels >= 1 and depth >= 1, got {channels} and {depth}")
        self.depth_scale = depth**-0.5
        identity = torch.zeros(channels, channels, 3, 3)
        identity[range(channels), range(channels), 1, 1] = 1.0
        self.register_buffer("identity", identity)
        self.direction = nn.Parameter(torch.empty(channels, channels, 3, 3))  # V
        self.scale = nn.Parameter(torch.ones(channels))  # a
        self.bias = nn.Parameter(torch.zeros(channels))
        self.draw(None)

    @torch.no_grad()
    def draw(self, generator: torch.Generator | None) -> None:
        """The authors' start: V ~ N(0, 1)/(9c), a = 1, bias 0 (`gloro.architectures.initialise` seeds it)."""
        channels = self.bias.numel()
        self.direction.copy_(torch.randn(self.direction.shape, generator=generator) / (9 * channels))
        self.scale.fill_(1.0)
        self.bias.zero_()

    def kernel(self) -> torch.Tensor:
        """I_δ + d^{-1/2}·(a ⊙ V), the conv's weight."""
        return self.identity + self.depth_scale * (self.scale[:, None, None, None] * self.direction)

    def as_conv(self) -> nn.Conv2d:
        """The nn.Conv2d this block computes (built without drawing weights), for the bounds and certifiers."""
        return computed_conv(self.kernel(), self.bias, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), self.bias, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.bias.numel()}, depth_scale={self.depth_scale:.4g}"


register_layer_rule(LiResConv, "block", lower=lambda layer: (layer.as_conv(),))


def liresnet_layers(spec: ArchitectureSpec, depth: int, width: int, dense: int) -> list[nn.Module]:
    """The NeurIPS code's LiResNet: a 5×5 stride-2 stem conv to `width` channels, `depth` LiRes blocks, a 4×4
    stride-4 neck conv to 2·`width`, a dense layer of `dense` units, each followed by MinMax (the authors'
    activation, whatever the spec's), and the LLN head."""
    channels, height, width_px = spec.input_shape
    if min(height, width_px) < 8:
        raise ValueError(
            f"LiResNet needs inputs of at least 8×8 pixels (a stride-2 stem, a 4×4 neck), got {spec.input_shape}"
        )
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 5, stride=2, padding=2), MinMax()]
    for _ in range(depth):
        layers += [LiResConv(width, depth), MinMax()]
    neck_hw = (((height - 1) // 2 + 1) // 4) * (((width_px - 1) // 2 + 1) // 4)
    layers += [nn.Conv2d(width, 2 * width, 4, stride=4), MinMax(), nn.Flatten()]
    layers += [nn.Linear(2 * width * neck_hw, dense), MinMax()]
    return [*layers, normalized_linear(dense, spec.num_classes)]


@register_architecture("LiResNet-L6W32")
def liresnet_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """A CPU-sized LiResNet: 6 blocks of 32 channels, a dense layer of 128 units."""
    return liresnet_layers(spec, depth=6, width=32, dense=128)


@register_architecture("LiResNet-L18W256")
def liresnet_neurips(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The NeurIPS paper's CIFAR-10 LiResNet ("18L256W", VRA 70.1% at 36/255): 18 blocks of 256 channels, a
    dense layer of 512 units."""
    return liresnet_layers(spec, depth=18, width=256, dense=512)
