"""The Lipschitz bound of any layer, from its rule (`bound_for`): a primitive's is its rule's own; a layer made of
others has one proven from the primitive layers it lowers to: a block's (the product of its parts'), a block
whose construction claims a constant (the claim trains, the lowering certifies), and a residual layer's (1 + its
branch's, or its rule's own where smaller). With them, the check that a lowering computes exactly what its
layer does, which the rounding model of every certificate relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gloro.layer_rules import layer_input_shapes, rule_for
from gloro.layers import UnsupportedLayerError
from gloro.lipschitz import LayerBound
from gloro.outward import product_up, up


def bound_for(layer: nn.Module, input_shape: Sequence[int], generator: torch.Generator | None = None) -> LayerBound:
    """The Lipschitz bound of `layer` acting on inputs of shape `input_shape` (without the batch axis)."""
    rule = rule_for(layer)
    if rule.role == "residual":
        return ResidualBound(layer, input_shape, generator)
    if rule.bound is not None:
        return rule.bound(layer, tuple(input_shape), generator)
    return LoweredBound(layer, input_shape, generator)


@dataclass(frozen=True)
class ResidualNorms:
    """What the rounding model needs of a residual layer: its sound bound and its branch's, per primitive."""

    total: float
    branch: tuple


def rounding_norms(bound: LayerBound, layer: nn.Module, fast: bool = False) -> list:
    """The sound bounds that the rounding model reads for `layer`: one float per primitive it computes
    through (`LayerBound.sound_parts`), a `ResidualNorms` for a residual layer."""
    if isinstance(bound, LoweredBound):
        return bound.rounding_norms(layer, fast)
    return [float(value) for value in bound.sound_parts(layer, fast)]


class LoweredBound(LayerBound):
    """A block's bound: the product of the bounds of the layers it lowers to, each at its real input shape.

    Built once, it checks that the lowering computes what the block computes, bit for bit, on a probe input:
    the rounding model of a certificate describes the lowered operations, so they must be the block's own.
    Each bound holds for its part's configuration (a conv's stride, padding, input shape), so a part replaced
    by one configured otherwise since then raises rather than being bounded as the old one.
    """

    def __init__(self, layer: nn.Module, input_shape: Sequence[int], generator: torch.Generator | None) -> None:
        super().__init__()
        parts = list(self.parts_of(layer))
        self.check(layer, parts, input_shape)
        shapes = layer_input_shapes(parts, input_shape)
        self.parts = nn.ModuleList(bound_for(part, shape, generator) for part, shape in zip(parts, shapes))
        self.configurations = [repr(part) for part in parts]

    def parts_of(self, layer: nn.Module) -> Sequence[nn.Module]:
        return rule_for(layer).lower(layer)

    def check(self, layer: nn.Module, parts: Sequence[nn.Module], input_shape: Sequence[int]) -> None:
        check_lowering(layer, parts, input_shape)

    def lowered(self, layer: nn.Module) -> list[nn.Module]:
        """The block's parts now, configured as when the bounds were built."""
        parts = list(self.parts_of(layer))
        if [repr(part) for part in parts] != self.configurations:
            raise RuntimeError(
                f"a layer inside {type(layer).__name__} was replaced by one configured otherwise after the GloroNet "
                "was built, so its bounds are not this block's; wrap the model in a new GloroNet"
            )
        return parts

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        product = torch.ones(())
        for bound, part in zip(self.parts, self.lowered(layer)):
            product = product * bound.estimate(part, iterations)
        return product

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        parts = self.sound_parts(layer, fast)
        return torch.tensor(product_up([float(part) for part in parts]), dtype=torch.float64, device=parts[0].device)

    def sound_parts(self, layer: nn.Module, fast: bool = False) -> list[torch.Tensor]:
        parts = zip(self.parts, self.lowered(layer))
        return [value for bound, part in parts for value in bound.sound_parts(part, fast)]

    def rounding_norms(self, layer: nn.Module, fast: bool = False) -> list:
        parts = zip(self.parts, self.lowered(layer))
        return [norm for bound, part in parts for norm in rounding_norms(bound, part, fast)]


class ClaimedBound(LoweredBound):
    """A block whose construction claims a Lipschitz constant (AOL's 1): the claim is its training estimate,
    and its sound bound is its lowering's, proven from the weights it computes with, whatever it claims."""

    def __init__(
        self, layer: nn.Module, input_shape: Sequence[int], generator: torch.Generator | None, claim: float = 1.0
    ) -> None:
        super().__init__(layer, input_shape, generator)
        self.claim = float(claim)

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        weight = next(layer.parameters(), None)
        return torch.tensor(self.claim, device=None if weight is None else weight.device)


class ResidualBound(LoweredBound):
    """A residual layer's bound: x + f(x) moves by at most ‖Δ‖ + L_f·‖Δ‖, so 1 + the product of its branch's
    bounds; with a bound of its rule's own (proven from the weights, e.g. SLL's), the smaller of the two."""

    def __init__(self, layer: nn.Module, input_shape: Sequence[int], generator: torch.Generator | None) -> None:
        super().__init__(layer, input_shape, generator)
        own = rule_for(layer).bound
        self.own = None if own is None else own(layer, tuple(input_shape), generator)

    def parts_of(self, layer: nn.Module) -> Sequence[nn.Module]:
        return rule_for(layer).branch(layer)

    def check(self, layer: nn.Module, parts: Sequence[nn.Module], input_shape: Sequence[int]) -> None:
        check_lowering(layer, parts, input_shape, residual=True)

    def estimate(self, layer: nn.Module, iterations: int) -> torch.Tensor:
        if self.own is not None:
            return self.own.estimate(layer, iterations)
        return 1 + super().estimate(layer, iterations)

    def sound(self, layer: nn.Module, fast: bool = False) -> torch.Tensor:
        parts = super().sound_parts(layer, fast)
        value = up(1 + product_up([float(part) for part in parts]))
        if self.own is not None:
            value = min(value, float(self.own.sound(layer, fast)))
        return torch.tensor(value, dtype=torch.float64, device=parts[0].device if parts else None)

    def sound_parts(self, layer: nn.Module, fast: bool = False) -> list[torch.Tensor]:
        return [self.sound(layer, fast)]

    def rounding_norms(self, layer: nn.Module, fast: bool = False) -> list:
        return [ResidualNorms(float(self.sound(layer, fast)), tuple(super().rounding_norms(layer, fast)))]


def check_lowering(
    layer: nn.Module, parts: Sequence[nn.Module], input_shape: Sequence[int], residual: bool = False
) -> None:
    """Raise unless `parts`, applied in turn (and, for a residual layer, added to the input), give exactly
    `layer`'s output on a random probe batch (drawn from a generator of its own, so that a net's
    power-iteration starts do not depend on its blocks)."""
    reference = next(layer.parameters(), torch.empty(0))
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((4, *input_shape), generator=generator).to(reference.device, reference.dtype)
    with torch.no_grad():
        expected, lowered = layer(probe), probe
        for part in parts:
            lowered = part(lowered)
        if residual:
            lowered = probe + lowered if lowered.shape == probe.shape else lowered
    if lowered.shape != expected.shape or not torch.equal(lowered, expected):
        difference = (lowered - expected).abs().max().item() if lowered.shape == expected.shape else "shape"
        what = "x + its branch's output, in that sum's own" if residual else "the block's own"
        raise UnsupportedLayerError(
            f"the rule of {type(layer).__name__} lowers it to layers that compute something else (largest "
            f"difference {difference}); a lowering must run {what} floating-point operations, or the "
            "rounding bound of a certificate would not hold for the layer"
        )
