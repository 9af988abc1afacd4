"""CPL, convex potential layers (Meunier, Delattre, Araujo & Allauzen, ICML 2022): dense and conv layers
h(x) = x − (2/(σ̂² + c))·Wᵀσ(Wx + b), σ = ReLU, 1-Lipschitz in exact arithmetic when σ̂ ≥ ‖W‖₂ (c = 10⁻⁴ in the
authors' dense layer, 10⁻⁶ in the conv layer of the 1-Lipschitz-layers comparison, whose CPL-S this builds).

The layer takes σ̂ from power iteration (one step per training forward pass, persisted, as its authors run it;
they run 100 more at evaluation, this layer keeps the trained estimate), an estimate from below, so the
construction's 1 can fail. The certificate does not take it: the bound is SLL's (`SLLBound`, `SLLConvBound`: CPL
is SLL with T = I/(σ̂² + c)) of the weights and the σ̂ the layer really computes with, and Table 1
flags a claimed 1 below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gloro.architectures import ArchitectureSpec, register_architecture
from gloro.families.conv_net import comparison_conv_net
from gloro.families.sll import SLLBound, SLLConvBound
from gloro.layer_rules import register_layer_rule
from gloro.layers import computed_conv, computed_linear, normalized_linear


class CPLDense(nn.Module):
    """One CPL dense layer on `features` units with an inner width (the rows of W) of `inner`; `vector` is the
    power iteration's estimate of W's top right singular vector, advanced after each training forward pass
    (train mode, gradients on), so that a pass never changes the map it computes, nor does evaluation."""

    def __init__(self, features: int, inner: int | None = None) -> None:
        super().__init__()
        inner = features if inner is None else int(inner)
        self.down = nn.Linear(features, inner)  # W (inner × features) and b
        nn.init.xavier_normal_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        self.register_buffer("vector", torch.full((features,), 1 / math.sqrt(features)))

    def norm_estimate(self) -> torch.Tensor:
        """‖W v‖ for the stored unit vector v: at most ‖W‖₂, and close to it once the iteration has converged."""
        return torch.linalg.vector_norm(self.down.weight @ self.vector)

    def scale(self) -> torch.Tensor:
        """t = 1/(‖W v‖² + 10⁻⁴) for every inner unit: SLL's T for CPL's step 2/(σ̂² + 10⁻⁴)."""
        return (1 / (self.norm_estimate() ** 2 + 1e-4)).expand(self.down.out_features)

    def up_weight(self) -> torch.Tensor:
        """−2t·Wᵀ (features × inner), as the layer computes it."""
        return -2 * self.down.weight.T * self.scale()[None, :]

    def up(self) -> nn.Linear:
        """The branch's last layer: a bias-free nn.Linear holding `up_weight`."""
        return computed_linear(self.up_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = x + F.linear(F.relu(self.down(x)), self.up_weight())
        if self.training and torch.is_grad_enabled():  # a training step: advance the estimate for the next one
            with torch.no_grad():
                weight = self.down.weight
                # a new tensor, not an in-place update: this pass's graph keeps the vector it used
                self.vector = F.normalize(weight.T @ F.normalize(weight @ self.vector, dim=0), dim=0)
        return output


register_layer_rule(
    CPLDense,
    "residual",
    branch=lambda layer: (layer.down, nn.ReLU(), layer.up()),
    bound=lambda layer, shape, generator: SLLBound(),  # down, scale() and up_weight() as SLL's layer has them
)


class CPLConv2d(nn.Module):
    """One CPL conv layer on `channels` channels with `inner` inside: W a `kernel_size`² conv with zero padding
    kernel_size // 2, Wᵀ the conv with the flipped, transposed kernel (as SLL's conv layer). σ̂ = ‖Wu‖ for the
    stored unit input u of shape (1, channels, *size), advanced by one power-iteration step after each training
    forward pass, as `CPLDense` does; u starts flat, so that building a net draws nothing."""

    offset = 1e-6  # c in 2/(σ̂² + c), the comparison's CPLConv2d

    def __init__(self, channels: int, inner: int | None = None, kernel_size: int = 3, size: Sequence[int] = (1, 1)):
        super().__init__()
        if kernel_size % 2 == 0:  # an even kernel has no padding that keeps the size and makes Wᵀ a padded conv
            raise ValueError(f"a CPL conv layer needs an odd kernel size, got {kernel_size}")
        inner = channels if inner is None else int(inner)
        self.down = nn.Conv2d(channels, inner, kernel_size, padding=kernel_size // 2)  # W and b
        shape = (1, channels, *(int(n) for n in size))
        self.register_buffer("vector", torch.full(shape, 1 / math.sqrt(math.prod(shape))))

    @torch.no_grad()
    def draw(self, generator: torch.Generator) -> None:
        """CPL's start: a Glorot-normal kernel and a bias uniform in ±1/√fan-in."""
        nn.init.xavier_normal_(self.down.weight, generator=generator)
        bound = 1 / math.sqrt(self.down.weight[0].numel())
        self.down.bias.uniform_(-bound, bound, generator=generator)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.down.weight, None, 1, self.down.padding)

    def norm_estimate(self) -> torch.Tensor:
        """‖W u‖ for the stored unit input u: at most ‖W‖₂ at u's size, and close to it once converged."""
        return torch.linalg.vector_norm(self._conv(self.vector))

    def scale(self) -> torch.Tensor:
        """t = 1/(‖W u‖² + c) for every inner channel: SLL's T for CPL's step."""
        return (1 / (self.norm_estimate() ** 2 + self.offset)).expand(self.down.out_channels)

    def up_weight(self) -> torch.Tensor:
        """The kernel of the conv that computes −2t·Wᵀ: −2t·K, transposed and flipped."""
        return (-2 * self.down.weight * self.scale()[:, None, None, None]).transpose(0, 1).flip(2, 3)

    def up(self) -> nn.Conv2d:
        """The branch's last layer: a bias-free nn.Conv2d holding `up_weight`."""
        return computed_conv(self.up_weight(), padding=self.down.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = x + F.conv2d(F.relu(self.down(x)), self.up_weight(), None, 1, self.down.padding)
        if self.training and torch.is_grad_enabled():  # a training step: advance the estimate for the next one
            with torch.no_grad():
                image = F.normalize(self._conv(self.vector).flatten(), dim=0).view(1, -1, *self.vector.shape[2:])
                back = F.conv_transpose2d(image, self.down.weight, None, 1, self.down.padding)
                self.vector = F.normalize(back.flatten(), dim=0).view_as(self.vector)  # a new tensor, as above
        return output


register_layer_rule(
    CPLConv2d,
    "residual",
    branch=lambda layer: (layer.down, nn.ReLU(), layer.up()),
    bound=lambda layer, shape, generator: SLLConvBound(shape),  # down, scale() and up_weight() as SLL's conv has
)


def cpl_conv_net(spec: ArchitectureSpec, width: int) -> list[nn.Module]:
    """The 1-Lipschitz-layers comparison's ConvNet with CPL convs of full inner width, as its CPL-S."""
    return comparison_conv_net(
        spec, width, lambda channels, kernel, position, size: CPLConv2d(channels, channels, kernel, size)
    )


@register_architecture("CPL-S")
def cpl_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The comparison's ConvNet at size S (width 32) with CPL convs."""
    return cpl_conv_net(spec, 32)


@register_architecture("CPL-XS")
def cpl_extra_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The same net at width 8, for CPU runs on small images."""
    return cpl_conv_net(spec, 8)


@register_architecture("CPL-D4")
def cpl_dense_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """A small all-dense CPL net for CPU runs, shaped as SLL-D4: four CPL layers on the flattened input (inner
    width twice the input's, at most 1024) and a row-normalised logit layer."""
    features = math.prod(spec.input_shape)
    inner = min(2 * features, 1024)
    return [nn.Flatten(), *(CPLDense(features, inner) for _ in range(4)), normalized_linear(features, spec.num_classes)]
