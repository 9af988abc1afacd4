"""How far the network as it computes (float32, or its parameters' precision) can be from the exact one.

For every input in the box [lo, hi]^d, a rigorous bound on the rounding of each layer, propagated to the
logits: ŷ_i − y_i is split into the head's own rounding ρ_i and the error E of the head's input, so that
|(ŷ_j − ŷ_i) − (y_j − y_i)| ≤ ρ_i + ρ_j + ‖w_j − w_i‖·E. It needs each unit's magnitude over the box:
from interval propagation, or from the exact net's value at the box's centre plus K times the box's
radius, whichever gives less. The rounding model (Higham, Thm 3.5): an inner product of n terms with a
bias is off by at most γ_{n+1}·|W||x| in any order of evaluation, plus, for underflow (flush-to-zero
included), one smallest normal number per operation. ReLU, MinMax, Flatten and Identity are exact in
floating point and 1-Lipschitz.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from gloro.layers import MinMax
from gloro.outward import TINY64, U64, gamma, norm_up, product_up, spectral_norm_upper, unit_roundoff, up

EXACT_LAYERS = (nn.ReLU, MinMax, nn.Flatten, nn.Identity)


@dataclass(frozen=True)
class ForwardError:
    """The rounding bound of one net over its input box: ρ_i (m,) and E, in the units of the logits."""

    logit_rounding: torch.Tensor
    feature_error: float
    dtype: torch.dtype
    input_range: tuple[float, float]

    def margin_offsets(self, head_distances: torch.Tensor) -> torch.Tensor:
        """O_ij, strictly above 2(ρ_i + ρ_j + D_ij·E): subtracted from a float gap y_j − y_i, it leaves a lower
        bound on the exact margin minus one more forward error, so both nets keep their prediction."""
        rho = self.logit_rounding.to(head_distances.device)
        pair = rho[:, None] + rho[None, :] + head_distances * self.feature_error
        offsets = torch.nextafter(torch.nextafter(2 * pair, _inf(pair)), _inf(pair))
        return offsets.fill_diagonal_(0.0)


def _inf(like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, math.inf)


def abs_operator_norm(layer: nn.Module, norm: float) -> float:
    """An upper bound on ‖|A|‖₂, A the layer's linear map: for a conv, the norm of its polyphase kernel's
    absolute sum over taps (the frequency-0 block of the circulant bound, the largest for a non-negative
    kernel); for a Linear, of |W|; for AvgPool2d, whose kernel is non-negative, its norm `norm`."""
    if isinstance(layer, nn.AvgPool2d):
        return norm
    weight = layer.weight.detach().double().cpu().abs()
    if isinstance(layer, nn.Linear):
        return spectral_norm_upper(weight)
    out_ch, in_ch, kh, kw = weight.shape
    sh, sw = _pair(layer.stride)
    taps_h, taps_w = math.ceil(kh / sh), math.ceil(kw / sw)
    padded = F.pad(weight, (0, taps_w * sw - kw, 0, taps_h * sh - kh))
    phases = padded.view(out_ch, in_ch, taps_h, sh, taps_w, sw).sum((2, 4)).reshape(out_ch, in_ch * sh * sw)
    terms = taps_h * taps_w
    return spectral_norm_upper(phases, entry_error=up(gamma(terms, U64) * norm_up(phases)))


def affine_parts(layer: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable, int]:
    """For an affine layer: x ↦ Ax + b and x ↦ |A|x + |b| in float64 on the CPU, and its fan-in n (terms
    summed per output, a bias or AvgPool's division counted as one more)."""
    if isinstance(layer, nn.AvgPool2d):
        kh, kw = _pair(layer.kernel_size)
        pool = copy.deepcopy(layer).cpu()
        return pool, pool, kh * kw + 1
    weight = layer.weight.detach().double().cpu()
    bias = None if layer.bias is None else layer.bias.detach().double().cpu()
    magnitude_bias = None if bias is None else bias.abs()
    fan_in = weight[0].numel() + (bias is not None)
    if isinstance(layer, nn.Linear):
        return (lambda x: F.linear(x, weight, bias)), (lambda x: F.linear(x, weight.abs(), magnitude_bias)), fan_in
    options = (layer.stride, layer.padding)
    return (
        (lambda x: F.conv2d(x, weight, bias, *options)),
        (lambda x: F.conv2d(x, weight.abs(), magnitude_bias, *options)),
        fan_in,
    )


def outward(scale: torch.Tensor, fan_in: int) -> torch.Tensor:
    """What float64 rounding can have moved values summed from `fan_in` terms of total magnitude `scale`."""
    return 4 * gamma(fan_in + 2, U64) * scale + TINY64 * (2 * fan_in + 2)


def forward_error(
    layers: Sequence[nn.Module],
    input_shapes: Sequence[Sequence[int]],
    layer_norms: Sequence[float],
    input_range: tuple[float, float] = (0.0, 1.0),
    dtype: torch.dtype = torch.float32,
) -> ForwardError:
    """The `ForwardError` of a sequential net evaluated in `dtype` on inputs in `input_range`^d.

    `layers` ends with the Linear head; `input_shapes` are each layer's per-example input shape and
    `layer_norms` sound ℓ2 bounds of all layers but the head. Each unit's magnitude over the box is the
    smaller of interval propagation's and the layer's ℓ2 bound (its value at the box's centre plus K_l
    times the box's radius); the rounding of a unit is γ_n·(|W|·|x̂| + |b|). Returns infinities where the
    computation could overflow for some input in the box, so that nothing is certified.
    """
    lo, hi = (float(v) for v in input_range)
    d = math.prod(input_shapes[0])
    u, tiny, largest = unit_roundoff(dtype), torch.finfo(dtype).tiny, torch.finfo(dtype).max
    lower = torch.full((1, *input_shapes[0]), lo, dtype=torch.float64)
    upper = torch.full_like(lower, hi)
    centre = (lower + upper) / 2
    box_radius = up(math.sqrt(d) * (hi - lo) / 2 * (1 + 4 * U64))
    norm_bound = min(up(math.sqrt(d) * max(abs(lo), abs(hi)) * (1 + 4 * U64)), up(norm_up(centre) + box_radius))
    error, centre_error, lipschitz = 0.0, 0.0, 1.0
    *body, head = layers
    for index, layer in enumerate(body):
        norm = float(layer_norms[index])
        if type(layer) in EXACT_LAYERS:  # monotone in each input: the interval's ends map to the output's
            copy_ = copy.deepcopy(layer).cpu()
            lower, upper, centre = copy_(lower), copy_(upper), copy_(centre)
            continue
        affine, magnitude_map, fan_in = affine_parts(layer)
        magnitude = torch.maximum(lower.abs(), upper.abs()).clamp_max(norm_bound) + error  # |x̂| per unit
        scale = magnitude_map(magnitude)
        if not bool(torch.isfinite(scale).all()) or float(scale.max()) * 2 >= largest:
            return overflowing(head, dtype, input_range)
        underflow = (2 * fan_in + 2) * tiny * (1 + float(magnitude.max()))
        by_units = norm_up(gamma(fan_in, u) * scale * (1 + 4 * U64) + underflow)
        # or through norms: ‖|A||x̂| + |b|‖ ≤ ‖|A|‖·‖x̂‖ + ‖b over the outputs‖
        outputs = scale[0].numel()
        bias = (
            0.0 if getattr(layer, "bias", None) is None else norm_up(layer.bias) * math.sqrt(outputs / len(layer.bias))
        )
        by_norms = up(
            gamma(fan_in, u) * up(abs_operator_norm(layer, norm) * up(norm_bound + error) + up(bias * (1 + 2 * U64)))
        )
        rounding = up(min(by_units, by_norms) + up(underflow * math.sqrt(outputs)))
        centre_scale = magnitude_map(centre.abs() + centre_error)
        centre_rounding = norm_up(outward(centre_scale, fan_in))
        middle, radius = affine((lower + upper) / 2), magnitude_map((upper - lower) / 2) - magnitude_map(0 * lower)
        slack = outward(magnitude_map((lower.abs() + upper.abs()) / 2) + radius, fan_in)
        lower, upper = middle - radius - slack, middle + radius + slack
        centre = affine(centre)
        error = up(up(norm * error) + rounding)
        centre_error = up(up(norm * centre_error) + centre_rounding)
        lipschitz = product_up((lipschitz, norm))
        by_centre = up(up(norm_up(centre) + centre_error) + up(lipschitz * box_radius))
        norm_bound = min(by_centre, up(norm_up(torch.maximum(lower.abs(), upper.abs()))))
    magnitude = (torch.maximum(lower.abs(), upper.abs()).clamp_max(norm_bound) + error).flatten()
    w = head.weight.detach().double().cpu()
    fan_in = w.shape[1] + (head.bias is not None)
    bias = torch.zeros(len(w), dtype=torch.float64) if head.bias is None else head.bias.detach().double().cpu().abs()
    by_norms = torch.linalg.vector_norm(w, dim=1) * up(norm_bound + error)  # Cauchy–Schwarz: |w_i|·|x̂| ≤ ‖w_i‖‖x̂‖
    scale = (torch.minimum(w.abs() @ magnitude, by_norms) + bias) * (1 + 2 * gamma(fan_in + 2, U64))
    if not bool(torch.isfinite(scale).all()) or float(scale.max()) * 2 >= largest:
        return overflowing(head, dtype, input_range)
    underflow = (2 * fan_in + 2) * tiny * (1 + float(magnitude.max()))
    rho = torch.nextafter(gamma(fan_in, u) * scale * (1 + 4 * U64) + underflow, torch.tensor(math.inf).double())
    return ForwardError(rho, error, dtype, (lo, hi))


def overflowing(head: nn.Linear, dtype: torch.dtype, input_range: tuple[float, float]) -> ForwardError:
    """The bound of a net that may overflow on its box: infinite, so no prediction is certified."""
    return ForwardError(torch.full((head.out_features,), math.inf, dtype=torch.float64), math.inf, dtype, input_range)
