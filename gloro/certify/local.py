"""Local Lipschitz certification: per point, drop the ReLUs that stay off on the whole ε-ball, then certify.

The paper claims that a local bound cannot raise the best achievable VRA and that global certification is far
cheaper. This module is the local side of that comparison. For a point x0 and the ball B = {x : ‖x − x0‖₂ ≤ ε}:

1. Sound pre-activation bounds on B, layer by layer, in float64: interval bounds (IBP) intersected with the
   Lipschitz bound z_k(x0) ± ε·L·‖row_k‖₂, where L bounds the layer input's Lipschitz constant on B (for the first
   layer this is exactly the ℓ2-ball bound z0 ± ε‖w_k‖₂).
2. A ReLU unit whose pre-activation upper bound is below zero outputs 0 everywhere on B, so on B the network
   equals the network with that unit deleted: its row in the layer before and its column in the layer after are
   zeroed. Units that are always on or undecided keep their rows. MinMax units are never dropped (a MinMax output
   is zero on B only in corner cases not worth the bookkeeping), so MinMax networks get the global bound.
3. Each masked layer's spectral norm is bounded soundly (`gloro.certify.masked_operator`): exactly when its
   explicit masked matrix is small; otherwise, since a masked convolution is no longer a convolution, by the
   smallest of three upper bounds on the spectral norm.
4. K^local_ij = Π_ℓ ‖M_ℓ‖ · ‖P(w_i − w_j)‖₂, with P the head-input mask, then capped elementwise by the global
   K_ij (both are sound, so their minimum is); hence K^local ≤ K by construction.

x0 is certified at ε iff min_{i≠j} (y_j − y_i)/K^local_ij ≥ ε. Since K^local holds on every smaller ball too,
min(that ratio, ε) is a sound certified radius. Bounds are computed in float64 from the float32 weights, and
each margin gives up the global certificate's rounding offsets O_ij, so that it holds for the float network too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gloro.certificate import Certificate
from gloro.certify.base import Certifier
from gloro.certify.masked_operator import LOCAL_EXPLICIT_MAX_ENTRIES, AffineOperator
from gloro.certify.registry import register_certifier
from gloro.gloro_net import GloroNet, check_epsilon
from gloro.layer_rules import layer_input_shapes, role_of
from gloro.layers import MinMax, UnsupportedLayerError
from gloro.margin import radius_from_rows
from gloro.precision import exact_arithmetic

# A ReLU counts as off on the ball only when its pre-activation upper bound is below −OFF_TOLERANCE: a margin far
# above float64 rounding in these bound computations.
OFF_TOLERANCE = 1e-9
# Points per chunk of masked head differences are chosen so a chunk holds at most this many float64 entries (128 MiB).
CHUNK_ENTRIES = 1 << 24


@dataclass(frozen=True)
class LocalBounds:
    """Local Lipschitz bounds on each point's ε-ball.

    margin_lipschitz: (N, m, m) float64 K^local_ij; layer_bounds: (N, affine layers before the head) masked norms;
    sub_lipschitz: (N,) their product; dropped_units: (N,) ReLU units proven off on the ball, of `relu_units`;
    pre_activation: (lower, upper) on the ball of every affine layer's output before the head, float64.
    """

    margin_lipschitz: torch.Tensor
    layer_bounds: torch.Tensor
    sub_lipschitz: torch.Tensor
    dropped_units: torch.Tensor
    relu_units: int
    pre_activation: tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True, eq=False)
class LocalCertificate(Certificate):
    """A local certificate at ε (a `Certificate` whose radius is the sound min(r, ε)), with the bounds it used."""

    bounds: LocalBounds | None = None


class LocalPlan:
    """What every point's local bound reuses: float64 operators, explicit matrices, global bounds and K_ij."""

    def __init__(self, net: GloroNet, max_entries: int = LOCAL_EXPLICIT_MAX_ENTRIES) -> None:
        self.net = net
        layers = net.primitive_layers()
        self.body = layers[:-1]
        shapes = layer_input_shapes(layers, net.input_shape)
        with torch.no_grad():
            global_bounds = net.primitive_bounds()
            constants = net.sound_constants(fresh=True)  # computed afresh from the weights, never a frozen copy
            self.global_margin_lipschitz = constants.margin_lipschitz
            self.offsets = constants.offsets
            self.constants = constants
        self.operators: dict[int, AffineOperator] = {}
        self.relu_units = 0
        for index, layer in enumerate(self.body):
            kind = type(layer)
            if role_of(layer) == "affine":
                self.operators[index] = AffineOperator(layer, shapes[index], global_bounds[index], max_entries)
            elif kind is nn.ReLU:
                self.relu_units += math.prod(shapes[index])
            elif role_of(layer) == "residual":
                raise UnsupportedLayerError(
                    f"local bounds follow a chain of layers, not a residual layer ({type(layer).__name__}); the global "
                    "certificate covers residual layers"
                )
            elif kind is not MinMax and role_of(layer) != "reshape":
                raise UnsupportedLayerError(
                    f"local bounds know the activations ReLU and MinMax, not {kind.__name__} ({layer!r})"
                )
        # an affine layer's rows can be masked when a ReLU acts on its output directly (Identity aside)
        self.masks_rows = {}
        for index in self.operators:
            following = next((layer for layer in self.body[index + 1 :] if type(layer) is not nn.Identity), None)
            self.masks_rows[index] = type(following) is nn.ReLU


@torch.no_grad()
def local_lipschitz(net: GloroNet, x: torch.Tensor, epsilon: float, plan: LocalPlan | None = None) -> LocalBounds:
    """K^local_ij on B(x0, ε) for every point x0 in the batch `x` (sound; ≤ the global K_ij elementwise)."""
    epsilon = check_epsilon(epsilon)
    net.check_input(x)
    plan = LocalPlan(net) if plan is None else plan
    center = x.detach().to(net.head.weight.device).double()
    n = len(center)
    lower, upper = center - epsilon, center + epsilon
    zero = torch.zeros_like(center, dtype=torch.bool)  # units known to be 0 on the whole ball
    lipschitz = torch.ones(n, dtype=torch.float64, device=center.device)  # bound on the current layer's input
    layer_bounds, pre_activation = [], []
    dropped = torch.zeros(n, dtype=torch.int64, device=center.device)
    for index, layer in enumerate(plan.body):
        kind = type(layer)
        if role_of(layer) == "reshape":
            center, lower, upper, zero = layer(center), layer(lower), layer(upper), layer(zero)
        elif kind is nn.ReLU:
            zero = upper < -OFF_TOLERANCE
            dropped += zero.flatten(1).sum(1)
            center, lower, upper = center.clamp_min(0), lower.clamp_min(0), upper.clamp_min(0)
        elif kind is MinMax:  # monotone in each input, so it maps the box corners to the output box
            center, lower, upper = layer(center), layer(lower), layer(upper)
            zero = torch.zeros_like(center, dtype=torch.bool)
        else:
            operator = plan.operators[index]
            keep_in = ~zero
            scale = (epsilon * lipschitz).view(n, *[1] * len(operator.output_shape))
            lipschitz_radius = scale * operator.squared(keep_in.double()).clamp_min(0).sqrt()
            middle, radius = operator.affine((lower + upper) / 2), operator.absolute((upper - lower) / 2)
            center = operator.affine(center)
            lower = torch.maximum(middle - radius, center - lipschitz_radius)
            upper = torch.minimum(middle + radius, center + lipschitz_radius)
            pre_activation.append((lower, upper))
            keep_out = upper >= -OFF_TOLERANCE if plan.masks_rows[index] else torch.ones_like(center, dtype=torch.bool)
            norms = operator.masked_norms(keep_in, keep_out)
            layer_bounds.append(norms)
            lipschitz = lipschitz * norms
            zero = torch.zeros_like(center, dtype=torch.bool)
    if zero.dim() != 2:
        raise ValueError(f"the head expects flat features, got a body output of shape {tuple(zero.shape[1:])}")
    margin = lipschitz[:, None, None] * masked_head_distances(net.head.weight, ~zero)
    margin = torch.minimum(margin, plan.global_margin_lipschitz.to(margin.device))
    layer_tensor = torch.stack(layer_bounds, 1) if layer_bounds else torch.ones((n, 0), dtype=torch.float64)
    return LocalBounds(margin, layer_tensor, lipschitz, dropped, plan.relu_units, tuple(pre_activation))


def masked_head_distances(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """‖P(w_i − w_j)‖₂ per point, P zeroing the head inputs known to be 0 on the ball (exact differences)."""
    w = weight.detach().double()
    differences = w[:, None, :] - w[None, :, :]
    per_chunk = max(1, CHUNK_ENTRIES // differences.numel())
    return torch.cat(
        [
            torch.linalg.vector_norm(differences[None] * k.double()[:, None, None, :], dim=-1)
            for k in keep.split(per_chunk)
        ]
    )


@torch.no_grad()
@exact_arithmetic()
def certify_local(
    net: GloroNet, x: torch.Tensor, epsilon: float | None = None, plan: LocalPlan | None = None
) -> LocalCertificate:
    """Certify each point of `x` at ε (default the net's eval ε) with its local bound K^local_ij."""
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    net.check_domain(x)
    plan = LocalPlan(net) if plan is None else plan
    bounds = local_lipschitz(net, x, epsilon, plan)
    logits = net.predict_clean(x.to(net.head.weight.device)).detach()
    top = logits.argmax(dim=1)
    logits = logits.double()
    local = bounds.margin_lipschitz[torch.arange(len(top), device=top.device), top]
    # a zero K^local_ij (the margin is constant on the ball) with a non-negative gap certifies: r = ∞
    ratios = radius_from_rows(logits, local, plan.offsets.to(logits.device)[top])
    # where the box-wide offsets decide, each point's own over B(x, ε) (`SoundConstants.proven_radius`)
    band = ((ratios < epsilon) & (radius_from_rows(logits, local, torch.zeros_like(local)) >= epsilon)).cpu()
    if band.any():
        rows = band.nonzero().flatten()
        ball = torch.full((len(rows),), float(epsilon), dtype=torch.float64)
        chosen = rows.to(logits.device)
        own = plan.constants.proven_radius(x[rows.to(x.device)].cpu(), logits[chosen].cpu(), ball, local[chosen])
        ratios[chosen] = torch.maximum(ratios[chosen], own.to(ratios.device))
    return LocalCertificate(top, ratios >= epsilon, ratios.clamp_max(epsilon), epsilon, "local", bounds=bounds)


class PlannedCertifier(Certifier):
    """A certifier that reuses one `LocalPlan` (float64 operators, explicit matrices, global K_ij) per call."""

    default_batch_size = 64

    def prepare(self, net: GloroNet, epsilon: float) -> LocalPlan:
        return LocalPlan(net)


@register_certifier
class LocalLipschitzCertifier(PlannedCertifier):
    """Per point, ReLUs proven off on the ball are removed and each layer's norm is bounded on what remains;
    capped by the global K_ij. Its radius min(r, ε) is sound at every radius up to ε."""

    name = "local"

    def certify_batch(self, net, x, epsilon, state):
        certificate = certify_local(net, x, epsilon, state)
        return certificate.predictions, certificate.certified, certificate.radius
