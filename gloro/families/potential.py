"""The layer shape SLL and CPL share: h(x) = x − 2Wᵀ T ReLU(Wx + b), T = diag(t) from the layer's `scale()`.

SLL takes t from |WWᵀ| (or the kernel's self-correlation) and learned weights q, CPL t = 1/(σ̂² + c) from a power
iteration; the rest (W, Wᵀ as the net computes it, the branch the rounding model follows, the forward pass) is
this module's, once for the dense layers and once for the conv ones. `gloro.families.sll.SLLBound` and
`SLLConvBound` bound any layer of this shape from the t and −2WᵀT it computes with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gloro.layers import computed_conv, computed_linear


class PotentialDense(nn.Module):
    """The dense shape on `features` units with an inner width (the rows of W) of `inner`; a subclass gives
    `scale()`."""

    def __init__(self, features: int, inner: int | None = None) -> None:
        super().__init__()
        inner = features if inner is None else int(inner)
        self.down = nn.Linear(features, inner)  # W (inner × features) and b
        nn.init.xavier_normal_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def scale(self) -> torch.Tensor:
        """t, one entry per inner unit."""
        raise NotImplementedError

    def up_weight(self) -> torch.Tensor:
        """−2Wᵀ T (features × inner), as the layer computes it."""
        return -2 * self.down.weight.T * self.scale()[None, :]

    def up(self) -> nn.Linear:
        """The branch's last layer: a bias-free nn.Linear holding `up_weight` (built without drawing weights)."""
        return computed_linear(self.up_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.linear(F.relu(self.down(x)), self.up_weight())


class PotentialConv2d(nn.Module):
    """The conv shape on `channels` channels with `inner` inside: W a `kernel_size`² conv with zero padding
    kernel_size // 2, Wᵀ computed as the conv with the flipped and transposed kernel, so that the layer is exactly
    x + its branch's output; a subclass gives `scale()`."""

    def __init__(self, channels: int, inner: int | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:  # an even kernel has no padding that keeps the size and makes Wᵀ a padded conv
            raise ValueError(f"{type(self).__name__} needs an odd kernel size, got {kernel_size}")
        inner = channels if inner is None else int(inner)
        self.down = nn.Conv2d(channels, inner, kernel_size, padding=kernel_size // 2)  # W and b

    def scale(self) -> torch.Tensor:
        """t, one entry per inner channel."""
        raise NotImplementedError

    def up_weight(self) -> torch.Tensor:
        """The kernel of the conv that computes −2Wᵀ T: −2·t_i·K_i, transposed and flipped."""
        return (-2 * self.down.weight * self.scale()[:, None, None, None]).transpose(0, 1).flip(2, 3)

    def up(self) -> nn.Conv2d:
        """The branch's last layer: a bias-free nn.Conv2d holding `up_weight` (built without drawing weights)."""
        return computed_conv(self.up_weight(), padding=self.down.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.conv2d(F.relu(self.down(x)), self.up_weight(), None, 1, self.down.padding)
