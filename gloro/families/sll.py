"""SLL, the SDP-based Lipschitz layer (Araujo, Havens, Delattre, Allauzen & Hu, ICLR 2023): dense layers
h(x) = x − 2Wᵀ T σ(Wx + b), σ = ReLU, T = diag(t), t_i = 1 / Σ_j |WWᵀ|_ij·q_j/q_i, which are 1-Lipschitz in
exact arithmetic for any W and q > 0.

The certificate does not take that claim: `SLLBound` proves a bound from the weights the layer computes with
(its t̂ and −2Wᵀ T̂ as rounded in its own precision), and the rounding model follows the layer as a residual
one (`gloro.layer_rules`: its branch is Wx + b, ReLU, then the computed −2Wᵀ T̂).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from gloro.architectures import ArchitectureSpec, register_architecture
from gloro.conv_norms import conv2d_sound_norm
from gloro.families.conv_net import comparison_conv_net
from gloro.families.potential import PotentialConv2d, PotentialDense
from gloro.layer_rules import register_layer_rule
from gloro.layers import normalized_linear
from gloro.lipschitz import LayerBound
from gloro.outward import U64, norm_up, spectral_norm_upper, up

CLAIMED_LIPSCHITZ = 1.0  # what the construction promises, in exact arithmetic


class SLLDense(PotentialDense):
    """One SLL dense layer on `features` units with an inner width (the rows of W) of `inner`."""

    def __init__(self, features: int, inner: int | None = None) -> None:
        super().__init__(features, inner)
        self.log_q = nn.Parameter(torch.zeros(self.down.out_features))  # q = exp(q̃) > 0

    def scale(self) -> torch.Tensor:
        """t: t_i = 1 / Σ_j |WWᵀ|_ij·q_j/q_i (0 where that sum is 0, a unit the layer does not use)."""
        weight, q = self.down.weight, self.log_q.exp()
        total = ((weight @ weight.T).abs() * q[None, :]).sum(1) / q
        used = total > 0
        return used / torch.where(used, total, torch.ones_like(total))


def sll_bound(weight: torch.Tensor, scale: torch.Tensor, up_weight: torch.Tensor) -> float:
    """An upper bound on the Lipschitz constant of x ↦ x + V σ(Wx + b), V = `up_weight` as computed, close to
    −2Wᵀ T for T = diag(`scale`) ≥ 0: any segment's Jacobian is I + V D W with D diagonal in [0, 1], and

        ‖I − 2WᵀT D W‖ ≤ max(1, 2‖T^{1/2}W‖² − 1)    (WᵀTDW is symmetric with eigenvalues in [0, ‖T^{1/2}W‖²]),
        ‖(V + 2WᵀT) D W‖ ≤ ‖V + 2WᵀT‖_F·‖W‖,

    so the layer is at most their sum: 1 plus rounding where T still does its job, more where it does not.
    """
    w, t, v = (tensor.detach().double().cpu() for tensor in (weight, scale, up_weight))
    if not bool(torch.isfinite(t).all() and (t >= 0).all()):
        return float("inf")
    g = t.sqrt()[:, None] * w  # T^{1/2}W: each entry within two roundings of its exact value
    s = spectral_norm_upper(g, up(4 * U64 * norm_up(g)))
    symmetric = max(1.0, up(up(2 * up(s * s)) - 1))
    # −2·W_ji·t_j is exact in float64 for float32 weights (within u₆₄ of each entry for float64 ones), and the
    # difference from V rounds once more
    product = -2 * w.T * t[None, :]
    mismatch = v - product
    rounding = up(up(norm_up(mismatch) * (1 + 2 * U64)) + up(2 * U64 * norm_up(product)))
    return up(symmetric + up(rounding * spectral_norm_upper(w)))


class SLLBound(LayerBound):
    """SLL's bound: the construction's 1 as the training estimate, `sll_bound` of the weights as the sound one."""

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        return torch.tensor(CLAIMED_LIPSCHITZ, device=layer.down.weight.device)

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        with torch.no_grad():
            value = sll_bound(layer.down.weight, layer.scale(), layer.up_weight())
        return torch.tensor(value, dtype=torch.float64, device=layer.down.weight.device)


register_layer_rule(
    SLLDense,
    "residual",
    branch=lambda layer: (layer.down, nn.ReLU(), layer.up()),
    bound=lambda layer, shape, generator: SLLBound(),
)


class SLLConv2d(PotentialConv2d):
    """One SLL conv layer on `channels` channels with `inner` channels inside (the rows of W, a `kernel_size`²
    conv): T from the kernel's self-correlation over every offset."""

    def __init__(self, channels: int, inner: int | None = None, kernel_size: int = 3) -> None:
        super().__init__(channels, inner, kernel_size)
        self.log_q = nn.Parameter(torch.zeros(self.down.out_channels))

    def scale(self) -> torch.Tensor:
        """t: t_i = 1 / Σ_j Σ_offsets |K⋆K|_ij·q_j/q_i (0 where that sum is 0)."""
        kernel, q = self.down.weight, self.log_q.exp()
        correlation = F.conv2d(kernel, kernel, padding=(kernel.shape[2] - 1, kernel.shape[3] - 1))
        total = (correlation.abs().sum((2, 3)) * q[None, :]).sum(1) / q
        used = total > 0
        return used / torch.where(used, total, torch.ones_like(total))


def taps_norm_up(kernel: torch.Tensor) -> float:
    """An upper bound on the ℓ2 norm of the zero-padded, stride-1 conv with `kernel` at any input size: the sum
    over taps of each tap's Frobenius norm (each tap alone is a shifted, masked block-diagonal map)."""
    total = 0.0
    for i in range(kernel.shape[2]):
        for j in range(kernel.shape[3]):
            total = up(total + norm_up(kernel[:, :, i, j]))
    return total


def sll_conv_bound(layer: SLLConv2d, input_shape: Sequence[int]) -> float:
    """`sll_bound` for the conv layer at `input_shape`: the same two terms, with the convs' sound norms at that
    shape for ‖T^{1/2}W‖ and ‖W‖, and `taps_norm_up` for the conv of V − (−2WᵀT)'s kernel and of rounding."""
    w = layer.down.weight.detach().double().cpu()
    t = layer.scale().detach().double().cpu()
    v = layer.up_weight().detach().double().cpu()
    if not bool(torch.isfinite(t).all() and (t >= 0).all()):
        return float("inf")
    padding = _pair(layer.down.padding)
    g = t.sqrt()[:, None, None, None] * w  # T^{1/2}W's kernel: each entry within two roundings of its exact value
    s = up(float(conv2d_sound_norm(g, input_shape, (1, 1), padding)) + up(4 * U64 * taps_norm_up(g)))
    symmetric = max(1.0, up(up(2 * up(s * s)) - 1))
    product = (-2 * w * t[:, None, None, None]).transpose(0, 1).flip(2, 3)  # exact for float32 weights
    mismatch = v - product
    rounding = up(up(taps_norm_up(mismatch) * (1 + 2 * U64)) + up(2 * U64 * taps_norm_up(product)))
    return up(symmetric + up(rounding * float(conv2d_sound_norm(w, input_shape, (1, 1), padding))))


class SLLConvBound(LayerBound):
    """The conv layer's bound: the construction's 1 as the training estimate, `sll_conv_bound` as the sound one."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        return torch.tensor(CLAIMED_LIPSCHITZ, device=layer.down.weight.device)

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        with torch.no_grad():
            value = sll_conv_bound(layer, self.input_shape)
        return torch.tensor(value, dtype=torch.float64, device=layer.down.weight.device)


register_layer_rule(
    SLLConv2d,
    "residual",
    branch=lambda layer: (layer.down, nn.ReLU(), layer.up()),
    bound=lambda layer, shape, generator: SLLConvBound(shape),
)


def sll_dense_layers(features: int, depth: int, inner: int, classes: int) -> list[nn.Module]:
    """Flatten, `depth` SLL dense layers, and the row-normalised logit layer (SLL's LLN head)."""
    return [nn.Flatten(), *(SLLDense(features, inner) for _ in range(depth)), normalized_linear(features, classes)]


@register_architecture("SLL-D4")
def sll_dense_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """A small all-dense SLL net for CPU runs: four SLL layers on the flattened input (inner width twice the
    input's, at most 1024) and the LLN head. SLL's own nets add SLL convs before the dense layers."""
    features = math.prod(spec.input_shape)
    return sll_dense_layers(features, 4, min(2 * features, 1024), spec.num_classes)


@register_architecture("SLL-S")
def sll_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The 1-Lipschitz-layers comparison's ConvNet at size S (width 32) with SLL convs of full inner width."""
    return comparison_conv_net(spec, 32, lambda channels, kernel, position, size: SLLConv2d(channels, channels, kernel))


@register_architecture("SLL-XS")
def sll_extra_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """The same net at width 8, for CPU runs on small images."""
    return comparison_conv_net(spec, 8, lambda channels, kernel, position, size: SLLConv2d(channels, channels, kernel))
