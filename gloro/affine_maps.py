"""Each affine primitive layer as the certifiers compute with it: x ↦ Ax + b in a chosen precision, the maps
made from the same A (|A|, A∘A, its pattern of nonzeros), its fan-in, and bounds on its rows' and |A|'s norms.

One class per layer type (Linear, Conv2d, AvgPool2d), named by the type's layer rule, so that the rounding
model, the local and CROWN certifiers and BCP compute any affine layer without a branch on its type.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from gloro.conv_norms import check_plain_conv, conv_padding, polyphase_taps
from gloro.outward import U64, gamma, norm_up, row_norms_up, spectral_norm_upper, up


class AffineMap:
    """x ↦ Ax + b of one layer, its weight and bias copied in `dtype` on `device` (the layer's by default),
    detached unless `differentiable` (BCP's training loss runs through them)."""

    def __init__(
        self,
        layer: nn.Module,
        dtype: torch.dtype = torch.float64,
        device: torch.device | None = None,
        differentiable: bool = False,
    ) -> None:
        self.layer = layer

        def copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None:
                return None
            tensor = tensor if differentiable else tensor.detach()
            return tensor.to(dtype=dtype, device=device if device is not None else tensor.device)

        self.weight = copy(getattr(layer, "weight", None))
        self.bias = copy(getattr(layer, "bias", None))
        self.abs_weight = None if self.weight is None else self.weight.abs()
        self.abs_bias = None if self.bias is None else self.bias.abs()

    @property
    def fan_in(self) -> int:
        """Terms summed per output: the products, and the bias (or a pool's division) as one more."""
        return self.weight[0].numel() + (self.bias is not None)

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The layer's map with `weight` and `bias` in place of its own."""
        raise NotImplementedError

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        """Ax + b."""
        return self.apply(x, self.weight, self.bias)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """Ax."""
        return self.apply(x, self.weight, None)

    def absolute(self, x: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """|A|x, and + |b| with `bias`."""
        return self.apply(x, self.abs_weight, self.abs_bias if bias else None)

    def squared(self, x: torch.Tensor) -> torch.Tensor:
        """(A∘A)x, A squared entry by entry."""
        return self.apply(x, self.weight.square(), None)

    @functools.cached_property
    def used(self) -> torch.Tensor:
        """1 where the weight is nonzero, else 0, in float32."""
        return (self.abs_weight.float() != 0).float()

    def nonzero_terms(self, nonzero: torch.Tensor) -> torch.Tensor | None:
        """Per output, how many of its products can be nonzero given which inputs can (plus the bias), counted
        in float32 (exact below 2²⁴); None where the fan-in is taken as it is."""
        return self.apply(nonzero.float(), self.used, None) + float(self.bias is not None)

    def per_output(self, values: torch.Tensor) -> torch.Tensor:
        """Per-output-channel values shaped to broadcast against a batch of outputs."""
        raise NotImplementedError

    def row_norms(self, norm: float) -> torch.Tensor:
        """‖A_v‖₂ per output v, rounded up, shaped to broadcast against outputs; `norm` is a sound ‖A‖₂."""
        return self.per_output(row_norms_up(self.weight.flatten(1)))

    def abs_norm(self, norm: float) -> float:
        """An upper bound on ‖|A|‖₂ (in float64, whatever this map's precision); `norm` is a sound ‖A‖₂."""
        raise NotImplementedError


class LinearMap(AffineMap):
    """nn.Linear: A = W."""

    def apply(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def per_output(self, values):
        return values.view(1, -1)

    def abs_norm(self, norm):
        return spectral_norm_upper(self.layer.weight.detach().double().cpu().abs())


class Conv2dMap(AffineMap):
    """nn.Conv2d with zero padding, no dilation and no groups."""

    def __init__(self, layer: nn.Conv2d, *args, **kwargs) -> None:
        check_plain_conv(layer)
        super().__init__(layer, *args, **kwargs)
        self.stride, self.padding = _pair(layer.stride), conv_padding(layer)

    def apply(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def per_output(self, values):
        return values.view(1, -1, 1, 1)

    def abs_norm(self, norm):
        """The norm of the polyphase kernel's absolute sum over taps: the frequency-0 block of the circulant
        bound (`gloro.conv_norms.conv2d_circulant_bound`), the largest for a non-negative kernel."""
        taps = polyphase_taps(self.layer.weight.detach().double().cpu().abs(), self.stride)
        out_ch, in_ch, taps_h, sh, taps_w, sw = taps.shape
        phases = taps.sum((2, 4)).reshape(out_ch, in_ch * sh * sw)
        return spectral_norm_upper(phases, entry_error=up(gamma(taps_h * taps_w, U64) * norm_up(phases)))


class AvgPool2dMap(AffineMap):
    """nn.AvgPool2d: a depthwise conv with non-negative weights 1/k², so |A| = A and A∘A = A/k²; no weight of
    its own, so it is computed by the layer itself in the precision of its input."""

    def __init__(self, layer: nn.AvgPool2d, *args, **kwargs) -> None:
        super().__init__(layer, *args, **kwargs)
        self.area = math.prod(_pair(layer.kernel_size))

    @property
    def fan_in(self) -> int:
        return self.area + 1

    def apply(self, x, weight, bias):
        return self.layer(x)

    def squared(self, x):
        return self.layer(x) / self.area

    def nonzero_terms(self, nonzero):
        return None  # the fan-in is small

    def per_output(self, values):
        return values.view(1, -1, 1, 1)

    def row_norms(self, norm):
        return torch.tensor(float(norm), dtype=torch.float64).view(1, 1, 1, 1)  # ‖A_v‖ ≤ ‖A‖

    def abs_norm(self, norm):
        return norm
