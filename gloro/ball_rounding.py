"""The rounding allowance of one point's ball B(x, r), propagated about the activations the net computes at x.

Where the box-wide offsets O_ij decide a certificate, certification asks each disputed point for this
tighter bound (`SoundConstants.certified_over_ball`); the proof is in docs/certificates.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from gloro.layer_rules import rule_for
from gloro.outward import TINY32, U32, U64, gamma, row_norms_up, unit_roundoff, up
from gloro.rounding_steps import AffineStep, ResidualStep, bucketed, float32_up, spread

if TYPE_CHECKING:
    from gloro.forward_error import RoundingModel


@dataclass(frozen=True)
class _Ball:
    """What the walk over the balls knows at a layer's input, per row: the ℓ2 bound e on the float net's error
    there (anywhere on the ball), the sound bound L of the layers so far, which units can be nonzero somewhere
    on the ball, and whether the float net could overflow. Between an affine layer and the next layer that
    mixes units, e is also split: the last affine layer's own rounding per unit (`fresh`, B × units) and the
    ℓ2 bound of the error it carried in (`carried`), so that a ReLU can drop the units it zeroes on the whole
    ball and the head can weigh each unit's rounding by its own weights."""

    error: torch.Tensor
    lipschitz: float
    nonzero: torch.Tensor
    overflow: torch.Tensor
    fresh: _Fresh | None = None
    carried: torch.Tensor | None = None


@dataclass(frozen=True)
class _Fresh:
    """One affine layer's own rounding per output: at most `units`·`inflate` + `flush` each, `units` in float32
    (B, outputs...) so that masking and norms over a conv layer's many outputs stay in float32."""

    units: torch.Tensor
    inflate: float
    flush: float

    def norm(self) -> torch.Tensor:
        """An upper bound on the ℓ2 norm of the per-output bounds, per row (B,) in float64: the float32 norm's
        own rounding is within `inflate` (its sum counted among the operations), its flushed squares added."""
        outputs = self.units[0].numel()
        norm = torch.linalg.vector_norm(self.units.flatten(1), dim=1).double() * self.inflate
        return (norm + self.flush * math.sqrt(outputs) + math.sqrt(outputs * TINY32)) * (1 + 4 * U64)

    def per_output(self) -> torch.Tensor:
        return self.units.double() * self.inflate + self.flush


@torch.no_grad()
def ball_pairs(model: RoundingModel, x: torch.Tensor, radius: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """b_i (B, m): a bound on |(ŷ_j − ŷ_i) − (y_j − y_i)| anywhere on B(x, r) ∩ box, j = `predictions`.

    Propagated about the net's own computed activations ĉ at x: on the ball, the computed input ĥ of a layer
    is within 2·e + L·r of ĉ in ℓ2 (e the bound on its rounding so far, which holds at x too; L the sound
    bound of the layers before), so |A_v||ĥ| ≤ |A_v||ĉ| + ‖A_v‖·(2e + L·r) by Cauchy–Schwarz, and a unit is
    exactly zero on the whole ball where its computed pre-activation stays ≤ 0 (ReLU), which drops its
    product from the γ_n of every sum it enters. Each layer's rounding is computed in float32 (`_rounding32`).
    """
    count = len(x)
    x, radius, predictions = (bucketed(t.detach().cpu()) for t in (x, radius, predictions))
    radius = radius.double().clamp_min(0.0) * (1 + 2 * U64)
    rows = len(radius)
    h = x.to(model.dtype)
    nonzero = (h != 0) | spread(radius > 0, h)
    start = _Ball(torch.zeros(rows, dtype=torch.float64), 1.0, nonzero, torch.zeros(rows, dtype=torch.bool))
    h, state = _walk(model, model.steps, h, start, radius)
    h = h.flatten(1)
    reach = (2 * state.error + state.lipschitz * radius) * (1 + 4 * U64)
    logits = model.head.computed(h)
    own, fits = _rounding32(model, model.head, h, logits, state.nonzero.flatten(1), reach)
    rho = own.per_output()
    overflow = state.overflow | ~fits | ~torch.isfinite(logits).all(1)
    top = predictions.detach().cpu()
    rho = rho.masked_fill(overflow[:, None], math.inf)
    feature = model.distances[top] * state.error[:, None]
    if state.fresh is not None:  # |(w_j − w_i)·δ| ≤ |w_j − w_i|·fresh + ‖w_j − w_i‖·carried
        weights = model.head.map.weight.flatten(1)
        spread_out = (weights[top][:, None, :] - weights[None]).abs()  # exact: differences of float32 values
        fresh = state.fresh.per_output().flatten(1)
        weighed = torch.einsum("bmf,bf->bm", spread_out, fresh) * (1 + gamma(fresh.shape[1] + 2, U64))
        feature = torch.minimum(feature, (weighed + model.distances[top] * state.carried[:, None]) * (1 + 4 * U64))
    feature = feature.masked_fill(overflow[:, None], math.inf)
    pairs = (rho + rho.gather(1, top[:, None]) + feature) * (1 + 4 * U64)
    return pairs[:count].nan_to_num(nan=math.inf)


def _walk(model: RoundingModel, steps: list, h: torch.Tensor, state: _Ball, radius: torch.Tensor):
    """The computed activation h and `state` at the input of `steps`, carried to their output."""
    rows = len(h)
    for step in steps:
        reach = (2 * state.error + state.lipschitz * radius) * (1 + 4 * U64)
        if isinstance(step, ResidualStep):
            h, state = _residual(model, step, h, state, radius)
        elif isinstance(step, nn.ReLU):  # ẑ(x′) ≤ ĉ + 2e + L·r per unit: ≤ 0 on the whole ball gives ±0
            state = _zeroed(state, h > -spread(float32_up(reach), h))
            h = step(h)
        elif isinstance(step, nn.Flatten):
            fresh = None if state.fresh is None else dataclasses.replace(state.fresh, units=step(state.fresh.units))
            state = dataclasses.replace(state, nonzero=step(state.nonzero), fresh=fresh)
            h = step(h)
        elif not isinstance(step, AffineStep):  # an output can be nonzero where an input it reads can
            nonzero = rule_for(step).carry_error(step, state.nonzero.to(torch.uint8), h).bool()
            state = _Ball(state.error, state.lipschitz, nonzero, state.overflow)
            h = step(h)
        else:
            output = step.computed(h)
            fresh, fits = _rounding32(model, step, h, output, state.nonzero, reach)
            carried = (step.norm * state.error) * (1 + 2 * U64)
            h = output
            state = _Ball(
                (carried + fresh.norm()) * (1 + 4 * U64),
                up(up(state.lipschitz * step.norm) * (1 + 2 * U64)),
                torch.ones(1, dtype=torch.bool).expand(rows, *h.shape[1:]),
                state.overflow | ~fits,
                fresh,
                carried,
            )
    return h, state


def _residual(model: RoundingModel, step: ResidualStep, h: torch.Tensor, state: _Ball, radius: torch.Tensor):
    """x + f(x) on the ball: at x′ the two computed addends are within 2e + L·r of theirs at x (e, L of each
    path), so their sum is within ‖ĉ₀ + ĉ₁‖ + 2e₀ + 2e₁ + (L₀ + L_f)·r of 0, and rounding it adds u times that
    (three smallest normals more where subnormals are flushed) to the paths' errors: e₀ + e₁, or L_g·e₀ + e′
    with e′ the branch's rounding at the computed input, whichever is smaller."""
    u, tiny = unit_roundoff(model.dtype), torch.finfo(model.dtype).tiny
    branch, out = _walk(model, step.branch, h, state, radius)
    carried = state.error + out.error
    if state.lipschitz > 0:  # or L_g·e₀ + e′, e′ the branch's rounding at ĥ (see `RoundingModel._residual`)
        start = _Ball(torch.zeros_like(state.error), state.lipschitz, state.nonzero, state.overflow)
        # ĥ(x′) is within 2e₀ + L₀·r of ĉ₀: the balls' radii grown by 2e₀ / L₀ give the walk that reach
        grown = radius + 2 * state.error / state.lipschitz * (1 + 4 * U64)
        _, fresh = _walk(model, step.branch, h, start, grown)
        carried = torch.minimum(carried, (step.norm * state.error + fresh.error) * (1 + 4 * U64))
        out = _Ball(out.error, out.lipschitz, out.nonzero, out.overflow | fresh.overflow)
    total = h + branch
    flushed = 3 * tiny * math.sqrt(total[0].numel())
    exact_sum = row_norms_up(total.double()) * (1 + 2 * u) + flushed  # ‖ĉ₀ + ĉ₁‖ before its rounding
    paths = state.lipschitz + out.lipschitz
    largest = (exact_sum + 2 * (state.error + out.error) + paths * radius) * (1 + 4 * U64)
    error = (carried + u * largest + flushed) * (1 + 4 * U64)
    through = up(up(state.lipschitz * step.norm) * (1 + 2 * U64))
    lipschitz = min(through, up(up(paths) * (1 + 2 * U64)))
    fits = largest * 2 < torch.finfo(model.dtype).max  # NaN or inf: False
    overflow = state.overflow | out.overflow | ~fits
    return total, _Ball(error, lipschitz, state.nonzero | out.nonzero, overflow)


def _zeroed(state: _Ball, nonzero: torch.Tensor) -> _Ball:
    """`state` after a ReLU that is exactly zero on the whole ball outside `nonzero`, in both nets: the error of
    each unit so zeroed is 0, so of the last affine layer's own rounding only the other units' stays (the
    error carried in keeps its ℓ2 bound, which no ReLU increases)."""
    if state.fresh is None:
        return dataclasses.replace(state, nonzero=nonzero)
    fresh = dataclasses.replace(state.fresh, units=state.fresh.units * nonzero)
    error = torch.minimum(state.error, (state.carried + fresh.norm()) * (1 + 4 * U64))
    return _Ball(error, state.lipschitz, nonzero, state.overflow, fresh, state.carried)


def _rounding32(
    model: RoundingModel, step: AffineStep, centre: torch.Tensor, output: torch.Tensor, nonzero: torch.Tensor, reach
):
    """For each output v, a bound on its rounding anywhere on the ball (`_Fresh`), and per row whether the
    computation is clear of overflow.

    An n_v-term sum with a bias, in any order, with or without FMA, is off by at most
    (1 + γ_n)·u·(S + (n_v − 1)·M) plus underflow, S the sum of its terms' magnitudes and M = (S + |z|)/2 the
    largest magnitude any partial sum can reach, z the exact sum (docs/certificates.md): on the ball
    S ≤ |A_v||ĉ| + |b_v| + ‖A_v‖·R and |z| ≤ |ẑ_v| + γ_n·(|A_v||ĉ| + |b_v|) + ‖A_v‖·R, ẑ = `output`, the layer
    as the net computed it at ĉ. These run in float32 and every operand is ≥ 0, so the computed result is at
    least the exact one times (1 − u₃₂)^k less one smallest normal per operation, k below fan-in + outputs + 32;
    one factor 1 + 2γ_k and an additive term put it back above.
    """
    u, n = unit_roundoff(model.dtype), step.fan_in
    at_centre = step.magnitude32(centre.abs())
    spread_over_ball = step.reach32(float32_up(reach))
    scale = at_centre + spread_over_ball
    outputs = scale[0].numel()
    # M ≤ (|A_v||ĉ| + |b_v| + |ẑ_v| + γ_n·(|A_v||ĉ| + |b_v|))/2 + ‖A_v‖·R, and M ≤ S; in place, on |ẑ|
    partial = output.detach().float().abs().add_(at_centre, alpha=1 + float(float32_up(torch.tensor(gamma(n, u)))))
    partial = torch.minimum(scale, partial.mul_(0.5).add_(spread_over_ball))
    # n_v ≤ n the products that can be nonzero, plus the bias (exact in float32); without a count, n_v = n. An
    # output with nothing nonzero has n_v − 1 = −1, and S − M ≥ 0 still bounds its exact zero
    terms = None if bool(nonzero.all()) else step.terms(nonzero)
    rounding = scale + (n - 1) * partial if terms is None else torch.addcmul(scale, terms - 1, partial)
    factor = u / (1 - n * u) if n * u < 0.5 else math.inf
    k = n + outputs + 32
    inflate = (1 + 2 * gamma(k, U32)) * (1 + 8 * U64) * factor
    fits = scale.flatten(1).amax(1).double() * (2 * (1 + 2 * gamma(k, U32))) < torch.finfo(model.dtype).max
    flush = (2 * k + 2) * (TINY32 + torch.finfo(model.dtype).tiny) * (1 + min(float(scale.max()), 3e38))
    return _Fresh(rounding, inflate, flush), fits
