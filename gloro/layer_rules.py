"""What the library knows about each layer type, one registry entry per type (`register_layer_rule`).

A *primitive* layer is one the certifiers reason about directly: an affine map (Linear, Conv2d,
AvgPool2d), an activation (ReLU, MinMax) or a reshape (Flatten, Identity, PixelUnshuffle, ZeroPad2d,
ChannelPad, FirstChannels: each moves, drops or zero-fills entries, exactly). Its rule gives its Lipschitz
bound and, for the non-affine ones, how a per-unit rounding error of its input carries to its output.
A *block* is any other layer: its rule lowers it to primitive layers that compute, in the same floating-point
operations, exactly what the block computes. Its bound is then the product of theirs, and every certifier
reads the primitives, so a certificate of a net with a new block rests on the same sound bounds and rounding
model as the paper's nets, never on what the block's construction claims. A *residual* layer computes
x + f(x), f a chain of layers (its *branch*): its bound is 1 + the branch's (or its rule's own, proven from the
weights), the rounding model follows both paths and the sum, and certifiers that reason about a chain of
layers only (local, CROWN, KW, BCP) refuse it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from gloro.affine_maps import AffineMap, AvgPool2dMap, Conv2dMap, LinearMap
from gloro.conv_norms import avg_pool2d_norm
from gloro.layers import ChannelPad, FirstChannels, MinMax, Residual, UnsupportedLayerError
from gloro.lipschitz import ConstantBound, Conv2dBound, LayerBound, LinearBound
from gloro.outward import product_up, up

BoundFactory = Callable[[nn.Module, tuple[int, ...], torch.Generator | None], LayerBound]
CarryError = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ROLES = ("affine", "activation", "reshape", "block", "residual")


@dataclass(frozen=True)
class LayerRule:
    """Every fact about one layer type.

    role: "affine" (x ↦ Ax + b, rounded as an inner product), "activation" (exact in floating point, 1-Lipschitz,
    monotone in each input, zero at zero), "reshape" (moves, drops or zero-fills entries, exactly), "block"
    (lowered) or "residual" (x + branch(x), computed as that sum). bound: (layer, input shape, generator) → its
    `LayerBound`; when not given, a block's is the product of its primitives' and a residual layer's 1 + its
    branch's. carry_error: for an activation or a reshape, (layer, per-unit bound on |x̂ − x|, upper end of x's
    interval) → the per-unit bound on its output's error; given a 0/1 bound, it marks the outputs that can be
    nonzero. affine_map: for an affine layer, the `AffineMap` class that computes it (`affine_map`). lower: for a
    block, layer → its primitive layers. branch: for a residual layer, layer → the layers of f, applied in turn.
    """

    layer_type: type[nn.Module]
    role: str
    bound: BoundFactory | None = None
    carry_error: CarryError | None = None
    affine_map: type[AffineMap] | None = None
    lower: Callable[[nn.Module], Sequence[nn.Module]] | None = None
    branch: Callable[[nn.Module], Sequence[nn.Module]] | None = None


_RULES: dict[type[nn.Module], LayerRule] = {}


def register_layer_rule(
    layer_type: type[nn.Module],
    role: str = "block",
    *,
    bound: BoundFactory | None = None,
    carry_error: CarryError | None = None,
    affine_map: type[AffineMap] | None = None,
    lower: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
    branch: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
) -> LayerRule:
    """Register what the library needs to know about `layer_type` (matched exactly, not by subclass: a
    subclass may change forward). A block needs `lower`, a residual layer `branch`; an activation or a
    reshape needs `bound` and `carry_error`; an affine layer `bound` and `affine_map`. A second, different
    rule for a type raises."""
    if role not in ROLES:
        raise ValueError(f"unknown layer role {role!r}; roles: {', '.join(ROLES)}")
    needs = {"block": ("lower",), "residual": ("branch",), "affine": ("bound", "affine_map")}
    given = {"bound": bound, "carry_error": carry_error, "affine_map": affine_map, "lower": lower, "branch": branch}
    if missing := [name for name in needs.get(role, ("bound", "carry_error")) if given[name] is None]:
        raise ValueError(f"a {role} layer rule for {layer_type.__name__} needs {' and '.join(missing)}")
    rule = LayerRule(layer_type, role, bound, carry_error, affine_map, lower, branch)
    known = _RULES.get(layer_type)
    if known is not None and known != rule:
        raise ValueError(f"a different layer rule for {layer_type.__name__} is already registered")
    _RULES[layer_type] = rule
    return rule


def layer_rules() -> list[LayerRule]:
    """Every registered rule, primitives first."""
    return sorted(_RULES.values(), key=lambda rule: (rule.role in ("block", "residual"), rule.layer_type.__name__))


def layer_type(layer: nn.Module) -> type[nn.Module]:
    """The type whose rule describes `layer`: its own, or for a layer with a parametrized weight
    (`torch.nn.utils.parametrize`, e.g. a row-normalised head) the class it was made from, whose operation it
    computes with the weight its parametrization gives (every bound reads that weight)."""
    if parametrize.is_parametrized(layer):
        return type(layer).__bases__[0]
    return type(layer)


def rule_for(layer: nn.Module) -> LayerRule:
    """The rule of `layer`'s exact type; a layer without one raises, naming what to register."""
    rule = _RULES.get(layer_type(layer))
    if rule is None:
        known = ", ".join(rule.layer_type.__name__ for rule in layer_rules())
        raise UnsupportedLayerError(
            f"no layer rule is known for {type(layer).__name__} ({layer!r}); layers with one: {known}. Counting "
            "it as 1 would make certificates unsound: register a rule with gloro.layer_rules.register_layer_rule "
            "(a block lowers to the layers above; see docs/extending.md)"
        )
    return rule


def role_of(layer: nn.Module) -> str:
    """The role of `layer`'s rule (see `LayerRule`)."""
    return rule_for(layer).role


def affine_map(
    layer: nn.Module,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
    differentiable: bool = False,
) -> AffineMap:
    """The affine `layer` as its rule's `AffineMap` computes it (see `AffineMap`); any other layer raises."""
    rule = rule_for(layer)
    if rule.role != "affine":
        raise UnsupportedLayerError(f"{layer!r} is not an affine layer (its rule's role: {rule.role})")
    return rule.affine_map(layer, dtype, device, differentiable)


def primitives(layers: Iterable[nn.Module]) -> list[nn.Module]:
    """`layers` with every block replaced, recursively, by the primitive layers it lowers to (a residual layer
    stays one layer: its branch is read with `branch_of`)."""
    result: list[nn.Module] = []
    for layer in layers:
        rule = rule_for(layer)
        result.extend(primitives(rule.lower(layer)) if rule.role == "block" else [layer])
    return result


def branch_of(layer: nn.Module) -> list[nn.Module]:
    """The primitive layers of a residual layer's branch f, where the layer computes x + f(x)."""
    rule = rule_for(layer)
    if rule.role != "residual":
        raise ValueError(f"{layer!r} is not a residual layer (its rule's role: {rule.role})")
    return primitives(rule.branch(layer))


def layer_input_shapes(layers: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The per-example input shape of every layer, found by one forward pass of a zero example."""
    shapes = []
    reference = next((p for layer in layers for p in layer.parameters()), torch.empty(0))
    x = torch.zeros((1, *input_shape), dtype=reference.dtype, device=reference.device)
    with torch.no_grad():
        for layer in layers:
            shapes.append(tuple(x.shape[1:]))
            try:
                x = layer(x)
            except RuntimeError as error:
                raise ValueError(
                    f"input_shape {tuple(input_shape)} does not fit the model: layer {layer!r} fails on "
                    f"inputs of shape {tuple(x.shape[1:])} ({error})"
                ) from error
    return shapes


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


def _carry_through(layer: nn.Module, units: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """A reshape moves each unit's error with the unit."""
    return layer(units)


def _carry_relu(layer: nn.Module, units: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """ReLU is 1-Lipschitz per unit, and a computed pre-activation ≤ 0 gives exactly ±0, as the exact one does."""
    return units.masked_fill(upper + units <= 0, 0.0)


def _carry_minmax(layer: nn.Module, units: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Each output of a MinMax pair is off by at most the larger of the pair's errors."""
    channels = units.shape[1]
    pairs = units.unflatten(1, (channels // 2, 2))
    return pairs.amax(dim=2, keepdim=True).expand_as(pairs).flatten(1, 2)


def _conv_bound(layer: nn.Conv2d, input_shape: tuple[int, ...], generator: torch.Generator | None) -> LayerBound:
    if len(input_shape) != 3:
        raise ValueError(f"{layer!r} needs a (C, H, W) input shape, got {tuple(input_shape)}")
    return Conv2dBound(layer, input_shape, generator)


def _unit_bound(layer: nn.Module, input_shape: tuple[int, ...], generator: torch.Generator | None) -> LayerBound:
    return ConstantBound(1.0)


register_layer_rule(
    nn.Linear, "affine", bound=lambda layer, shape, generator: LinearBound(layer, generator), affine_map=LinearMap
)
register_layer_rule(nn.Conv2d, "affine", bound=_conv_bound, affine_map=Conv2dMap)
register_layer_rule(
    nn.AvgPool2d,
    "affine",
    bound=lambda layer, shape, generator: ConstantBound(avg_pool2d_norm(layer, shape)),
    affine_map=AvgPool2dMap,
)
register_layer_rule(nn.ReLU, "activation", bound=_unit_bound, carry_error=_carry_relu)
register_layer_rule(MinMax, "activation", bound=_unit_bound, carry_error=_carry_minmax)
register_layer_rule(nn.Flatten, "reshape", bound=_unit_bound, carry_error=_carry_through)
register_layer_rule(nn.Identity, "reshape", bound=_unit_bound, carry_error=_carry_through)
register_layer_rule(nn.PixelUnshuffle, "reshape", bound=_unit_bound, carry_error=_carry_through)
register_layer_rule(nn.ZeroPad2d, "reshape", bound=_unit_bound, carry_error=_carry_through)
register_layer_rule(ChannelPad, "reshape", bound=_unit_bound, carry_error=_carry_through)
register_layer_rule(FirstChannels, "reshape", bound=_unit_bound, carry_error=_carry_through)
register_layer_rule(Residual, "residual", branch=lambda layer: tuple(layer.branch))
