"""BCP (Lee, Lee & Park, NeurIPS 2020): an ℓ2 ball and a box propagated together, and the exact last-layer solve.

Through every layer but the last, each point keeps a ball B(μ, ρ) (μ the clean activation) and a box [l, u]
that both contain every activation reachable from B(x, ε):
- affine W, b: μ ← Wμ + b, ρ ← ρ·‖W‖₂; the box is the intersection of interval arithmetic (Wm + b ± |W|r for
  centre m and half-width r) and the box around the old ball's image (Wμ + b ± ρ·‖W_j‖₂ per row j);
- ReLU: μ ← ReLU(μ), ρ unchanged (ReLU is 1-Lipschitz); the box is ReLU of the box intersected with the new
  ball's box ReLU(μ) ± ρ.
For the logit layer the largest margin z_i − z_c over the ball ∩ box is cᵀμ + (b_i − b_c) + max cᵀδ over
‖δ‖₂ ≤ ρ, l − μ ≤ δ ≤ u − μ, with c = w_i − w_c. The paper's clip-and-rescale iteration finds that maximum; here
it only supplies a dual point a, and the bound used is the weak-duality value ρ‖c − a‖₂ + Σ_k max(a_k lo_k,
a_k hi_k), an upper bound for *any* a (equal to the maximum at the iteration's fixed point), so a truncated
iteration can cost tightness but never soundness. The smaller of it, the ball-only bound ρ‖c‖ (a = 0: the
Lipschitz bound, so BCP certifies every point the global bound does) and the box-only bound (a = c) is kept.

Certification takes the sound bounds of the net's primitive layers (`GloroNet.primitive_bounds`) and works in float64;
training takes the power-iteration estimates (differentiable, as the authors' code does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gloro.certify.base import Certifier, certified_with_rounding
from gloro.certify.registry import register_certifier
from gloro.gloro_net import GloroNet
from gloro.layer_rules import affine_map, role_of
from gloro.layers import UnsupportedLayerError
from gloro.sound_constants import SoundConstants

SOLVER_ITERATIONS = 20  # the authors' training used 1 (CIFAR) or 10 (MNIST); at most d are ever needed


def propagate(
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    epsilon: float,
    layer_norms: list[torch.Tensor],
    dtype: torch.dtype,
    trace: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ, ρ, l, u) of the penultimate features over B(x, ε): centre (N, d), radius (N,), box (N, d) each.

    `layers` are a net's layers before the head, `layer_norms` their Lipschitz bounds.

    `trace`, when given, receives every layer's (μ, ρ, l, u) in order (for tests of each intermediate box).
    """
    mu = x.to(dtype)
    rho = torch.full((len(x),), float(epsilon), dtype=dtype, device=x.device)
    lower, upper = mu - epsilon, mu + epsilon
    for layer, norm in zip(layers, layer_norms, strict=True):
        kind = type(layer)
        if role_of(layer) == "reshape":
            mu, lower, upper = layer(mu), layer(lower), layer(upper)
        elif kind is nn.ReLU:
            mu = F.relu(mu)
            radius = rho.view(-1, *[1] * (mu.dim() - 1))
            lower = torch.maximum(F.relu(lower), mu - radius)
            upper = torch.minimum(F.relu(upper), mu + radius)
        elif role_of(layer) == "affine" and getattr(layer, "weight", None) is not None:
            operator = affine_map(layer, dtype, differentiable=True)
            # each output unit's ‖W_j‖₂: a bound for border units too, whose kernel is cut off
            rows = operator.per_output(operator.weight.flatten(1).norm(dim=1))
            center = operator.affine(mu)
            middle, half = operator.affine((lower + upper) / 2), operator.absolute((upper - lower) / 2)
            ball = rho.view(-1, *[1] * (center.dim() - 1)) * rows
            lower = torch.maximum(middle - half, center - ball)
            upper = torch.minimum(middle + half, center + ball)
            mu, rho = center, rho * norm.to(dtype)
        else:
            raise UnsupportedLayerError(
                f"BCP here propagates through affine layers with a weight (Linear, Conv2d), ReLU and reshapes, "
                f"not {kind.__name__} ({layer!r})"
            )
        if trace is not None:
            trace.append((mu, rho, lower, upper))
    if mu.dim() != 2:
        raise ValueError(f"the logit layer expects flat features, got a body output of shape {tuple(mu.shape[1:])}")
    return mu, rho, lower, upper


@torch.no_grad()
def dual_point(c: torch.Tensor, rho: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, iterations: int) -> torch.Tensor:
    """The dual point a of max cᵀδ over the ball ∩ box, from the paper's clip-and-rescale iteration.

    c: (N, m, d); rho: (N, 1, 1); lo ≤ 0 ≤ hi: (N, 1, d). Coordinates that leave the box are fixed at its face,
    the free ones rescaled to use up the rest of the radius; at the fixed point c = a + τδ with a = 0 on the
    free coordinates, which makes the weak-duality bound exact.
    """
    free = torch.ones_like(c, dtype=torch.bool)
    delta = torch.zeros_like(c)
    for _ in range(iterations):
        remaining = (rho.square() - (delta.square() * ~free).sum(-1, keepdim=True)).clamp_min(0).sqrt()
        c_free = c * free
        scale = remaining / c_free.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(c.dtype).tiny)
        candidate = torch.where(free, c_free * scale, delta)
        below, above = free & (candidate < lo), free & (candidate > hi)
        delta = torch.where(below, lo.expand_as(c), torch.where(above, hi.expand_as(c), candidate))
        if not (below | above).any():
            break
        free = free & ~(below | above)
    remaining = (rho.square() - (delta.square() * ~free).sum(-1, keepdim=True)).clamp_min(0).sqrt()
    c_free_norm = (c * free).norm(dim=-1, keepdim=True)
    tau = torch.where(remaining > 0, c_free_norm / remaining.clamp_min(torch.finfo(c.dtype).tiny), 0.0)
    return torch.where(free, 0.0, c - tau * delta)


def ball_box_maximum(
    c: torch.Tensor, rho: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, iterations: int
) -> torch.Tensor:
    """An upper bound on max cᵀδ over ‖δ‖₂ ≤ ρ, lo ≤ δ ≤ hi (exact at the solver's fixed point): (N, m)."""
    a = dual_point(c.detach(), rho.detach(), lo.detach(), hi.detach(), iterations)
    dual = rho[..., 0] * (c - a).norm(dim=-1) + torch.maximum(a * lo, a * hi).sum(-1)
    ball = rho[..., 0] * c.norm(dim=-1)
    box = torch.maximum(c * lo, c * hi).sum(-1)
    return torch.minimum(dual, torch.minimum(ball, box))


def bcp_margins(
    net: GloroNet,
    x: torch.Tensor,
    classes: torch.Tensor,
    epsilon: float,
    *,
    sound: bool,
    solver_iterations: int = SOLVER_ITERATIONS,
    layer_norms: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the centre, (N, m) upper bounds on z_i − z_c over B(x, ε), 0 at i = c), c = `classes`.

    sound=True: float64 with the sound layer bounds (certification); else the net's dtype with power-iteration
    estimates, advanced as in any training forward when the net is in training mode (the BCP loss).
    Sound bounds go through the net's primitive layers (its blocks lowered), estimates through its own layers;
    `layer_norms` passes the bounds already computed for a batch (`net.primitive_bounds()`, or
    `net.layer_bounds()`).
    """
    net.check_input(x)
    dtype = torch.float64 if sound else net.head.weight.dtype
    if sound:
        layers, norms = net.primitive_layers()[:-1], net.primitive_bounds
    else:
        layers, norms = net.layers[:-1], net.layer_bounds
    mu, rho, lower, upper = propagate(layers, x, epsilon, norms() if layer_norms is None else layer_norms, dtype)
    weight = net.head.weight.to(dtype)
    bias = torch.zeros(weight.shape[0], dtype=dtype, device=x.device) if net.head.bias is None else net.head.bias
    bias = bias.to(dtype)
    logits = F.linear(mu, weight, bias)
    c = weight[None, :, :] - weight[classes][:, None, :]
    lo, hi = (lower - mu).clamp_max(0)[:, None, :], (upper - mu).clamp_min(0)[:, None, :]
    worst = ball_box_maximum(c, rho.view(-1, 1, 1), lo, hi, solver_iterations)
    margins = logits - logits.gather(1, classes[:, None]) + worst
    return logits, margins.scatter(1, classes[:, None], 0.0)


@register_certifier
class BcpCertifier(Certifier):
    """The BCP certificate of a net's predictions at ε: every other class's margin bounded below zero."""

    name = "bcp"
    default_batch_size = 256

    def __init__(self, batch_size: int | None = None, solver_iterations: int = SOLVER_ITERATIONS) -> None:
        super().__init__(batch_size)
        if solver_iterations < 1:
            raise ValueError(f"solver_iterations must be >= 1, got {solver_iterations}")
        self.solver_iterations = int(solver_iterations)

    @property
    def settings(self) -> dict:
        return {**super().settings, "solver_iterations": self.solver_iterations, "layer_bounds": "sound"}

    def prepare(self, net: GloroNet, epsilon: float) -> tuple[list[torch.Tensor], SoundConstants]:
        return net.primitive_bounds(), net.sound_constants()

    def certify_batch(self, net, x, epsilon, state):
        logits = net.predict_clean(x)
        predictions = logits.argmax(1)  # the float32 net's prediction is what is certified
        _, margins = bcp_margins(
            net, x, predictions, epsilon, sound=True, solver_iterations=self.solver_iterations, layer_norms=state[0]
        )
        return predictions, certified_with_rounding(margins, logits, state[1], x, epsilon), None
