"""The rounding model's view of a net's layers: one step per primitive layer, prepared once per set of weights.

An affine layer becomes an `AffineStep` (its maps in float64 and float32, fan-in and norms), a residual layer
x + f(x) a `ResidualStep` (its branch's steps, its sound bound), and an activation or a reshape stays the
layer itself (exact in floating point; its rule says how an error crosses it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from gloro.layer_bounds import ResidualNorms
from gloro.layer_rules import affine_map, branch_of, rule_for
from gloro.outward import TINY32, TINY64, U64, gamma, norm_up, up


def outward(scale: torch.Tensor, fan_in: int) -> torch.Tensor:
    """What float64 rounding can have moved values summed from `fan_in` terms of total magnitude `scale`."""
    return 4 * gamma(fan_in + 2, U64) * scale + TINY64 * (2 * fan_in + 2)


class AffineStep:
    """One affine layer in float64 on the CPU (`map`), and in float32 (`map32`) for the magnitudes that a ball's
    bound computes in float32: its fan-in n (terms summed per output, a bias or AvgPool's division counted as
    one more), its sound norm and the norms its ℓ2 bounds need."""

    def __init__(self, layer: nn.Module, norm: float) -> None:
        self.layer = copy.deepcopy(layer).cpu()
        self.norm = float(norm)
        cpu = torch.device("cpu")
        self.map = affine_map(self.layer, torch.float64, cpu)
        self.map32 = affine_map(self.layer, torch.float32, cpu)
        self.fan_in = self.map.fan_in
        self.abs_norm = self.map.abs_norm(self.norm)
        self.row_norms = self.map.row_norms(self.norm)  # each output's ‖A_v‖₂, shaped to broadcast
        self.row_norms32 = float32_up(self.row_norms)

    def terms(self, nonzero: torch.Tensor) -> torch.Tensor | None:
        """Per output, how many of its products can be nonzero given which inputs can (plus the bias): the n of
        its γ_n, since adding an exact zero rounds nothing. None where the fan-in is small (pooling)."""
        return self.map32.nonzero_terms(nonzero)

    def reach(self, radius: torch.Tensor) -> torch.Tensor | None:
        """‖A_v‖·R per output v, rounded up: by Cauchy–Schwarz, what |A|·|Δ| can reach for any ‖Δ‖ ≤ R (B,)."""
        return self.row_norms * radius.view(-1, *([1] * (self.row_norms.dim() - 1))) * (1 + 2 * U64)

    def computed(self, x: torch.Tensor) -> torch.Tensor:
        """The layer as the net computes it, in its own precision."""
        return self.layer(x)

    def magnitude32(self, x: torch.Tensor) -> torch.Tensor:
        """|A|x + |b| for x ≥ 0 held exactly in float32, computed in float32 (within γ_n of the exact value,
        less one smallest normal per operation: `RoundingModel._rounding32` accounts for both)."""
        return self.map32.absolute(x.float(), bias=True)

    def reach32(self, radius: torch.Tensor) -> torch.Tensor:
        """‖A_v‖·R per output in float32 for R (B,) in float32, each ‖A_v‖ rounded up to float32."""
        return self.row_norms32 * radius.view(-1, *([1] * (self.row_norms32.dim() - 1)))

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        return self.map.affine(x)

    def magnitude(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """|A|x + |b| (or |A|x), x ≥ 0, in float64: within `outward` of the exact value."""
        return self.map.absolute(x, bias)

    def magnitude_up(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """An upper bound on the exact |A|x (+ |b|) for x ≥ 0 held exactly."""
        value = self.magnitude(x, bias)
        return value + outward(value, self.fan_in)

    def output_bias_norm(self, outputs: int) -> float:
        """‖b‖₂ over all `outputs` units (a conv's bias repeats once per pixel), rounded up."""
        bias = self.map.bias
        if bias is None:
            return 0.0
        return up(up(norm_up(bias) * math.sqrt(outputs / len(bias))) * (1 + 2 * U64))


class ResidualStep:
    """A residual layer x + f(x): the steps of its branch f, its sound bound, and the layer on the CPU."""

    def __init__(self, layer: nn.Module, norms: ResidualNorms) -> None:
        self.layer = copy.deepcopy(layer).cpu()
        self.norm = float(norms.total)
        self.branch = build_steps(branch_of(self.layer), norms.branch)


def build_steps(layers: Sequence[nn.Module], norms: Sequence) -> list:
    """One step per primitive layer (a block must be lowered first), each with its sound bound from `norms`
    (`gloro.layer_bounds.rounding_norms`: a float, or `ResidualNorms` for a residual layer)."""
    if len(layers) != len(norms):
        raise ValueError(f"{len(layers)} layers but {len(norms)} sound bounds for the rounding model")
    steps = []
    for layer, norm in zip(layers, norms):
        role = rule_for(layer).role
        if role == "block":
            raise ValueError(f"{layer!r} is a block: give the rounding model its primitives (primitive_layers)")
        if role == "residual":
            steps.append(ResidualStep(layer, norm))
        elif role == "affine":
            steps.append(AffineStep(layer, norm))
        else:
            steps.append(copy.deepcopy(layer).cpu())
    return steps


def spread(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row (B,) value broadcast against a (B, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def float32_up(values: torch.Tensor) -> torch.Tensor:
    """Non-negative float64 values as float32 numbers no smaller (inf past float32's range)."""
    return (values * (1 + 2.0**-20) + TINY32).float()


def bucketed(x: torch.Tensor) -> torch.Tensor:
    """x padded with copies of its first row to a power of two: the few batch shapes this gives keep oneDNN's
    compiled convolutions in its cache, instead of one compilation (~1 ms) per band size."""
    size = 1 << max(len(x) - 1, 0).bit_length()
    return torch.cat((x, x[:1].expand(size - len(x), *x.shape[1:]))) if size > len(x) else x


def within_reach(lower: torch.Tensor, upper: torch.Tensor, centre: torch.Tensor, reach: torch.Tensor):
    """The interval [lower, upper] cut to ĉ ± reach per unit (every unit of h(x′) is within ‖h(x′) − ĉ‖ ≤ reach
    of ĉ's), the ends rounded outward."""
    gap = spread(reach, centre)
    slack = 4 * U64 * (centre.abs() + gap) + TINY64
    return torch.maximum(lower, centre - gap - slack), torch.minimum(upper, centre + gap + slack)
