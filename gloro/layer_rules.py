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
