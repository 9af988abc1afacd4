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
from gloro.families.potential import PotentialConv2d, PotentialDense
from gloro.families.sll import SLLBound, SLLConvBound
from gloro.layer_rules import register_layer_rule
from gloro.layers import normalized_linear


class CPLDense(PotentialDense):
    """One CPL dense layer on `features` units with an inner width (the rows of W) of `inner`; `vector` is the
    power iteration's estimate of W's top right singular vector, advanced after each training forward pass
    (train mode, gradients on), so that a pass never changes the map it computes, nor does evaluation."""

    def __init__(self, features: int, inner: int | None = None) -> None:
        super().__init__(features, inner)
        self.register_buffer("vector", torch.full((features,), 1 / math.sqrt(features)))

    def norm_estimate(self) -> torch.Tensor:
        """‖W v‖ for the stored unit vector v: at most ‖W‖₂, and close to it once the iteration has converged."""
        return torch.linalg.vector_norm(self.down.weight @ self.vector)

    def scale(self) -> torch.Tensor:
        """t = 1/(‖W v‖² + 10⁻⁴) for every inner unit: SLL's T for CPL's step 2/(σ̂² + 10⁻⁴)."""
        return (1 / (self.norm_estimate() ** 2 + 1e-4)).expand(self.down.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = super().forward(x)
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


class CPLConv2d(PotentialConv2d):
    """One CPL conv layer on `channels` channels with `inner` inside (a `kernel_size`² conv W): σ̂ = ‖Wu‖ for the
    stored unit input u of shape (1, channels, *size), advanced by one power-iteration step after each training
    forward pass, as `CPLDense` does; u starts flat, so that building a net draws nothing."""

    offset = 1e-6  # c in 2/(σ̂² + c), the comparison's CPLConv2d

    def __init__(self, channels: int, inner: int | None = None, kernel_size: int = 3, size: Sequence[int] = (1, 1)):
        super().__init__(channels, inner, kernel_size)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = super().forward(x)
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
