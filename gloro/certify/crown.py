"""CROWN from an ℓ2 ball: a local certifier that bounds the margins directly, not through a Lipschitz constant.

CROWN (Zhang et al., NeurIPS 2018) bounds each neuron by a linear function of the input, carried back through the
network with one linear lower and upper relaxation per undecided ReLU (upper: the chord u(z − l)/(u − l); lower:
z when u ≥ −l, else 0), and minimises it over the ℓ2 ball in closed form: min_{‖x−x0‖≤ε} λᵀx = λᵀx0 − ε‖λ‖₂.
Pre-activation bounds are the tighter of CROWN's and the Lipschitz walk's (both sound); the margins y_j − y_i are
bounded last. It works on explicit float64 matrices, so every affine layer must be small enough to have one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gloro.certificate import Certificate
from gloro.certify.local import LocalPlan, PlannedCertifier, local_lipschitz
from gloro.certify.registry import register_certifier
from gloro.gloro_net import GloroNet, check_epsilon
from gloro.layer_rules import role_of
from gloro.layers import MinMax, UnsupportedLayerError
from gloro.precision import exact_arithmetic

# CROWN widens each pre-activation bound by this many u per summed term, times the magnitude summed
CROWN_ROUNDING = 16 * torch.finfo(torch.float64).eps


@dataclass(frozen=True, eq=False)
class CrownCertificate(Certificate):
    """CROWN at ε (a `Certificate` without radii), with the (N, m) lower bounds of y_j − y_i on the ball (+∞ at
    j) and the flattened (lower, upper) pre-activation bounds of every affine layer before the head."""

    margin_lower_bounds: torch.Tensor | None = None
    pre_activation: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


ORDER_KEEPING = (nn.Flatten, nn.Identity)  # reshapes that leave the flattened entries where they are


def crown_layers(plan: LocalPlan) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    """(W, b, relu_after) for every affine layer, the head last; raises for what CROWN here does not model."""
    steps: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    for index, layer in enumerate(plan.body):
        kind = type(layer)
        if role_of(layer) == "reshape":
            if kind not in ORDER_KEEPING:  # the layer matrices chain in flattened order
                raise UnsupportedLayerError(
                    f"the CROWN certifier here chains layer matrices in flattened order; {layer!r} moves entries"
                )
            continue
        if kind is MinMax:
            raise UnsupportedLayerError("the CROWN certifier here relaxes ReLU only; MinMax networks are not supported")
        if kind is nn.ReLU:
            if not steps:
                raise UnsupportedLayerError("the CROWN certifier here needs an affine layer before the first ReLU")
            weight, bias, _ = steps[-1]
            steps[-1] = (weight, bias, True)
            continue
        operator = plan.operators[index]
        if operator.matrix is None:
            raise ValueError(f"{layer!r} is too large for an explicit matrix; CROWN here needs one per layer")
        zero = torch.zeros((1, *operator.input_shape), dtype=torch.float64, device=operator.matrix.device)
        steps.append((operator.matrix, operator.affine(zero).flatten(), False))
    head = plan.net.head
    bias = torch.zeros(head.out_features, dtype=torch.float64) if head.bias is None else head.bias.detach().double()
    steps.append((head.weight.detach().double(), bias.to(head.weight.device), False))
    return steps


def relu_relaxation(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unit: lower slope α, upper slope s and upper intercept t, with αz ≤ relu(z) ≤ sz + t on [l, u]."""
    off, on = upper <= 0, lower >= 0
    width = (upper - lower).clamp_min(torch.finfo(torch.float64).tiny)
    slope = torch.where(on, 1.0, torch.where(off, 0.0, upper / width))
    intercept = torch.where(on | off, 0.0, -slope * lower)
    lower_slope = torch.where(on, 1.0, torch.where(off | (upper < -lower), 0.0, 1.0))
    return lower_slope, slope, intercept


def crown_tolerance(
    weight: torch.Tensor, bias: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, magnitude: torch.Tensor
) -> torch.Tensor:
    """How far float64 rounding can have moved a unit's pre-activation bounds: a multiple of u·n times the
    scale of what was summed (|W| times the input magnitude, the bias, the bounds themselves)."""
    scale = weight.abs().sum(1) * magnitude[:, None] + bias.abs() + lower.abs() + upper.abs()
    return CROWN_ROUNDING * weight.shape[1] * scale


def back_substitute(
    coefficients: torch.Tensor,
    steps: list[tuple[torch.Tensor, torch.Tensor, bool]],
    bounds: list[tuple[torch.Tensor, torch.Tensor]],
    center: torch.Tensor,
    epsilon: float,
    upper: bool,
) -> torch.Tensor:
    """Bound Λ·h_k over the ball, h_k the output of affine step k = len(bounds) − 1 (after its ReLU if any).

    `coefficients` is (N, rows, width of h_k); `bounds[m]` the pre-activation bounds of step m. Returns (N, rows)
    lower bounds, or upper bounds when `upper` (computed as −lower bound of −Λ).
    """
    sign = -1.0 if upper else 1.0
    lam = sign * coefficients
    constant = torch.zeros(lam.shape[:2], dtype=torch.float64, device=lam.device)
    for m in range(len(bounds) - 1, -1, -1):
        weight, bias, relu_after = steps[m]
        if relu_after:  # a lower bound takes the lower relaxation where λ > 0 and the upper one where λ < 0
            alpha, slope, intercept = relu_relaxation(*bounds[m])
            positive, negative = lam.clamp_min(0), lam.clamp_max(0)
            constant = constant + (negative * intercept[:, None, :]).sum(-1)
            lam = positive * alpha[:, None, :] + negative * slope[:, None, :]
        constant = constant + lam @ bias
        lam = lam @ weight
    value = (lam @ center[:, :, None])[..., 0] + constant - epsilon * torch.linalg.vector_norm(lam, dim=-1)
    return sign * value


@torch.no_grad()
@exact_arithmetic()
def certify_crown(
    net: GloroNet, x: torch.Tensor, epsilon: float | None = None, plan: LocalPlan | None = None
) -> CrownCertificate:
    """Certify each point at ε with CROWN: certified iff every margin y_j − y_i has a positive lower bound."""
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    net.check_domain(x)
    plan = LocalPlan(net) if plan is None else plan
    steps = crown_layers(plan)
    x = x.to(net.head.weight.device)
    lipschitz_bounds = local_lipschitz(net, x, epsilon, plan).pre_activation
    center = x.detach().double().flatten(1)
    n = len(center)
    bounds: list[tuple[torch.Tensor, torch.Tensor]] = []
    previous = center.abs().amax(1)  # a bound on the magnitude of each layer's inputs
    for k, (weight, bias, _) in enumerate(steps[:-1]):
        if k == 0:  # the first layer's exact bounds on the ball
            z = center @ weight.T + bias
            radius = epsilon * torch.linalg.vector_norm(weight, dim=1)
            lower, upper = z - radius, z + radius
        else:
            coefficients = weight.expand(n, *weight.shape)
            lower = back_substitute(coefficients, steps[:k], bounds, center, epsilon, upper=False) + bias
            upper = back_substitute(coefficients, steps[:k], bounds, center, epsilon, upper=True) + bias
        known_lower, known_upper = lipschitz_bounds[k]
        lower, upper = torch.maximum(lower, known_lower.flatten(1)), torch.minimum(upper, known_upper.flatten(1))
        # widened by what float64 rounding of the bounds can have moved them, so that no ReLU is taken for
        # off (or on) because its bound was rounded across 0
        tolerance = crown_tolerance(weight, bias, lower, upper, previous)
        bounds.append((lower - tolerance, upper + tolerance))
        previous = torch.maximum(lower.abs(), upper.abs()).amax(1)
    clean = net.predict_clean(x).detach()
    predictions = clean.argmax(1)
    head_weight, head_bias, _ = steps[-1]
    specification = head_weight[predictions][:, None, :] - head_weight[None, :, :]  # rows w_j − w_i
    specification_bias = head_bias[predictions][:, None] - head_bias[None, :]
    margins = back_substitute(specification, steps[:-1], bounds, center, epsilon, upper=False) + specification_bias
    margins = margins.scatter(1, predictions[:, None], math.inf)
    # the float net's margin at any point of the ball is within O_ij / 2 of the exact one, or the ball's own bound
    certified = plan.constants.certified_over_ball(x, clean, margins, epsilon)
    return CrownCertificate(
        predictions, certified, None, epsilon, "crown", margin_lower_bounds=margins, pre_activation=tuple(bounds)
    )


@register_certifier
class CrownCertifier(PlannedCertifier):
    """CROWN from an ℓ2 ball (linear bound propagation); ReLU nets small enough for explicit layer matrices."""

    name = "crown"

    def certify_batch(self, net, x, epsilon, state):
        certificate = certify_crown(net, x, epsilon, state)
        return certificate.predictions, certificate.certified, None
