"""How far the network as it computes (float32, or its parameters' precision) can be from the exact one.

A rigorous bound on the rounding of each layer over a region of inputs, propagated to the logits:
ŷ_i − y_i is split into the head's own rounding ρ_i and the error δ of the head's input, so that
|(ŷ_j − ŷ_i) − (y_j − y_i)| ≤ ρ_i + ρ_j + min(‖w_j − w_i‖·‖δ‖, |w_j − w_i|·|δ|). δ is bounded twice, in ℓ2
through the layer norms and per unit through |A|, each step keeping the smaller. The region is a box
[lower, upper] intersected with an ℓ2 ball about a centre: the input box [lo, hi]^d once for the whole
net (`forward_error`, the ⊥ logit's offsets), or one ball B(x, r) per point (`RoundingModel.ball_pairs`,
which certification takes where the box-wide offsets decide the outcome). Each unit's magnitude over the
region is the smallest of interval propagation's, the exact value at the centre plus L_k·r (L_k the sound
bound of the layers before), and the layer's ℓ2 bound. The rounding model (Higham, Thm 3.5): an inner
product of n terms with a bias is off by at most γ_{n+1}·|W||x̂| in any order of evaluation, plus, for
underflow (flush-to-zero included), one smallest normal number per operation. ReLU, MinMax, Flatten and
Identity are exact in floating point and 1-Lipschitz; a residual layer x + f(x) adds its two paths' errors
and one rounding of the sum. The layers' steps are in `gloro.rounding_steps`, the ball's own bound in
`gloro.ball_rounding`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gloro.layer_rules import rule_for
from gloro.margin import head_distances
from gloro.outward import TINY64, U64, gamma, row_norms_up, unit_roundoff, up
from gloro.rounding_steps import AffineStep, ResidualStep, bucketed, build_steps, outward, spread, within_reach


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
        return _doubled_up(pair).fill_diagonal_(0.0)


def _doubled_up(pair: torch.Tensor) -> torch.Tensor:
    """2·pair pushed two float64 steps up: strictly above twice the exact value whatever pair's last rounding."""
    infinity = torch.full_like(pair, math.inf)
    return torch.nextafter(torch.nextafter(2 * pair, infinity), infinity)


@dataclass(frozen=True)
class _Region:
    """What the walk over a region knows at a layer's input, per row: the exact values' interval, a point of
    the region computed in float64 and that computation's ℓ2 error, the float net's error per unit and in ℓ2,
    the sound bound L of the layers so far, a bound on ‖h‖, and whether the float net could overflow."""

    lower: torch.Tensor
    upper: torch.Tensor
    centre: torch.Tensor
    units: torch.Tensor
    error: torch.Tensor
    centre_error: torch.Tensor
    lipschitz: float
    norm_bound: torch.Tensor
    overflow: torch.Tensor


@dataclass(frozen=True)
class RegionError:
    """The rounding bound over one region per row: ρ_i (B, m) and ‖δ‖ (B,)."""

    logit_rounding: torch.Tensor
    feature_error: torch.Tensor


class RoundingModel:
    """A net's layers in float64, prepared once per set of weights, and the rounding bound over any region.

    `layers` are primitive layers (`GloroNet.primitive_layers`) ending with the Linear head; `layer_norms` are
    sound ℓ2 bounds of all layers but the head (`gloro.layer_bounds.rounding_norms`: a `ResidualNorms` for a
    residual layer); `dtype` is the precision the net computes in, `input_range` its input box.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        input_shape: Sequence[int],
        layer_norms: Sequence,
        input_range: tuple[float, float] = (0.0, 1.0),
        dtype: torch.dtype = torch.float32,
    ) -> None:
        *body, head = layers
        self.input_shape = tuple(input_shape)
        self.distances = head_distances(head.weight, exact=True).cpu()
        self.steps = build_steps(body, layer_norms)
        self.head = AffineStep(head, math.inf)
        self.input_range = tuple(float(v) for v in input_range)
        self.dtype = dtype

    @property
    def num_classes(self) -> int:
        return len(self.head.map.weight)

    def region(
        self, lower: torch.Tensor, upper: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor
    ) -> RegionError:
        """The rounding bound over {x′ ∈ [lower, upper] : ‖x′ − centre‖ ≤ radius} for each row (float64, B rows).

        Rows on which the computation could overflow get infinite bounds, so that nothing is certified there.
        """
        lower, upper, centre = lower.double(), upper.double(), centre.double()
        radius = radius.double().clamp_min(0.0) * (1 + 2 * U64)
        rows = len(lower)
        zeros = torch.zeros(rows, dtype=torch.float64)
        norm_bound = torch.minimum(row_norms_up(centre) + radius, row_norms_up(torch.maximum(lower.abs(), upper.abs())))
        start = _Region(lower, upper, centre, torch.zeros_like(lower), zeros, zeros, 1.0, norm_bound, zeros.bool())
        state = self._walk(self.steps, start, radius)
        lower, upper, centre, units = (t.flatten(1) for t in (state.lower, state.upper, state.centre, state.units))
        reach = state.centre_error + state.lipschitz * radius
        head = self.head
        half = head.magnitude((upper - lower) / 2, bias=False)
        slack = outward(head.magnitude((lower.abs() + upper.abs()) / 2) + half, head.fan_in)
        largest = head.affine((lower + upper) / 2).abs() + half + slack
        rho, _, fits = self._rounding(head, lower, upper, centre, reach, state.norm_bound, state.error, units, largest)
        overflow = state.overflow | ~fits | ~torch.isfinite(rho).all(1)
        rho = torch.nextafter(rho, torch.tensor(math.inf, dtype=torch.float64)).masked_fill(overflow[:, None], math.inf)
        return RegionError(rho, state.error.masked_fill(overflow, math.inf))

    def _walk(self, steps: list, state: _Region, radius: torch.Tensor) -> _Region:
        """`state` at the input of `steps` carried to their output."""
        for step in steps:
            if isinstance(step, ResidualStep):
                state = self._residual(step, state, radius)
            elif isinstance(step, AffineStep):
                state = self._affine(step, state, radius)
            else:  # monotone in each input: the interval's ends map to the output's
                units = rule_for(step).carry_error(step, state.units, state.upper)
                lower, upper, centre = step(state.lower), step(state.upper), step(state.centre)
                state = dataclasses.replace(state, lower=lower, upper=upper, centre=centre, units=units)
        return state

    def _affine(self, step: AffineStep, state: _Region, radius: torch.Tensor) -> _Region:
        """An affine layer: its rounding γ_n·(|A||x̂| + |b|) added to the error carried through |A| and ‖A‖."""
        u = unit_roundoff(self.dtype)
        lower, upper, centre, norm_bound, error = state.lower, state.upper, state.centre, state.norm_bound, state.error
        reach = state.centre_error + state.lipschitz * radius  # ‖h(x′) − ĉ‖ ≤ reach on the region
        middle = step.affine((lower + upper) / 2)
        half = step.magnitude((upper - lower) / 2, bias=False)
        slack = outward(step.magnitude((lower.abs() + upper.abs()) / 2) + half, step.fan_in)
        largest = middle.abs() + half + slack  # of each exact output's magnitude on the region
        region = (lower, upper, centre, reach, norm_bound, error, state.units)
        rounding_units, carried, fits = self._rounding(step, *region, largest)
        overflow = state.overflow | ~fits | ~torch.isfinite(rounding_units.flatten(1)).all(1)
        # or through norms: ‖|A||x̂| + |b|‖ ≤ ‖|A|‖·‖x̂‖ + ‖b over the outputs‖, and the underflow
        outputs = rounding_units[0].numel()
        by_norms = gamma(step.fan_in, u) * (step.abs_norm * (norm_bound + error) + step.output_bias_norm(outputs))
        by_norms = by_norms * (1 + 4 * U64) + self._underflow(step, norm_bound, error) * math.sqrt(outputs)
        rounding = torch.minimum(row_norms_up(rounding_units), by_norms * (1 + 2 * U64))
        units = (carried + rounding_units) * (1 + 2 * U64)
        error = torch.minimum((step.norm * error + rounding) * (1 + 4 * U64), row_norms_up(units))
        units = torch.minimum(units, spread(error, units))
        centre_terms = step.magnitude(centre.abs() + spread(state.centre_error, centre))
        centre_rounding = row_norms_up(outward(centre_terms, step.fan_in))
        lower, upper = middle - half - slack, middle + half + slack
        centre = step.affine(centre)
        centre_error = (step.norm * state.centre_error + centre_rounding) * (1 + 4 * U64)
        lipschitz = up(up(state.lipschitz * step.norm) * (1 + 2 * U64))
        return self._settled(lower, upper, centre, units, error, centre_error, lipschitz, overflow, radius)

    def _residual(self, step: ResidualStep, state: _Region, radius: torch.Tensor) -> _Region:
        """x + f(x): both paths' errors add, and the sum itself rounds once, |fl(a + b) − (a + b)| ≤ u·|a + b| (less
        three smallest normals where subnormal operands or results are flushed); its Lipschitz bound is the
        smaller of L·(the layer's sound bound) and L + L_f.

        The error in ℓ2 is the smaller of two bounds: the input's error e carried through both paths, e + e_f
        (e_f grows with the branch's norms), and L_g·e + e′, the exact layer g's own bound times e plus the
        rounding e′ of computing the branch at the computed input ĥ (its walk started from ĥ, with no error):
        ‖ĝ(ĥ) − g(h)‖ ≤ ‖ĝ(ĥ) − g(ĥ)‖ + ‖g(ĥ) − g(h)‖. The second is far smaller where the branch's norms multiply
        to more than the layer's bound (SLL: about 2 against 1)."""
        u, tiny = unit_roundoff(self.dtype), torch.finfo(self.dtype).tiny
        out = self._walk(step.branch, state, radius)
        through_layer = math.inf
        if state.lipschitz > 0:  # ĥ(x′) is within e of h(x′): the region about ĉ, its radius grown by e / L
            grown = radius + state.error / state.lipschitz * (1 + 4 * U64)
            fresh = self._walk(step.branch, _computed_inputs(state), grown)
            through_layer = (step.norm * state.error + fresh.error) * (1 + 4 * U64)
            out = dataclasses.replace(out, overflow=out.overflow | fresh.overflow)
        largest = torch.maximum(state.lower.abs(), state.upper.abs()) + torch.maximum(out.lower.abs(), out.upper.abs())
        slack = 2 * U64 * largest + TINY64
        lower, upper = state.lower + out.lower - slack, state.upper + out.upper + slack
        centre = state.centre + out.centre
        centre_rounding = row_norms_up(2 * U64 * centre.abs() + TINY64)
        centre_error = (state.centre_error + out.centre_error + centre_rounding) * (1 + 4 * U64)
        through = up(up(state.lipschitz * step.norm) * (1 + 2 * U64))
        lipschitz = min(through, up(up(state.lipschitz + out.lipschitz) * (1 + 2 * U64)))
        lower, upper = within_reach(lower, upper, centre, (centre_error + lipschitz * radius) * (1 + 2 * U64))
        carried = state.units + out.units
        magnitude = torch.maximum(lower.abs(), upper.abs()) + carried  # |â + b̂| per unit
        units = (carried + u * magnitude + 3 * tiny) * (1 + 4 * U64)
        by_centre = (row_norms_up(centre) + centre_error + lipschitz * radius) * (1 + 4 * U64)
        norm_bound = torch.minimum(by_centre, row_norms_up(torch.maximum(lower.abs(), upper.abs())))
        both = torch.minimum(state.error + out.error, through_layer)
        by_norms = (both + u * (norm_bound + both) + 3 * tiny * math.sqrt(units[0].numel())) * (1 + 4 * U64)
        error = torch.minimum(by_norms, row_norms_up(units))
        units = torch.minimum(units, spread(error, units))
        fits = magnitude.flatten(1).amax(1) * 2 < torch.finfo(self.dtype).max  # NaN or inf: False
        overflow = state.overflow | out.overflow | ~fits
        return _Region(lower, upper, centre, units, error, centre_error, lipschitz, norm_bound, overflow)

    @staticmethod
    def _settled(lower, upper, centre, units, error, centre_error, lipschitz, overflow, radius) -> _Region:
        """The state after an affine layer, its interval cut to the centre's reach and its norm bound taken."""
        lower, upper = within_reach(lower, upper, centre, (centre_error + lipschitz * radius) * (1 + 2 * U64))
        by_centre = (row_norms_up(centre) + centre_error + lipschitz * radius) * (1 + 4 * U64)
        norm_bound = torch.minimum(by_centre, row_norms_up(torch.maximum(lower.abs(), upper.abs())))
        return _Region(lower, upper, centre, units, error, centre_error, lipschitz, norm_bound, overflow)

    def _rounding(self, step, lower, upper, centre, reach, norm_bound, error, units, largest):
        """Per output v of `step` on the region: a bound on its rounding plus underflow, |A_v|·|ĥ − h|, and per
        row whether every |A_v||x̂| + |b_v| stays below half the largest finite number (no overflow).

        The rounding of an n_v-term sum is at most (1 + γ_n)·u·(S + (n_v − 1)·M) (docs/certificates.md), S a
        bound on |A_v||x̂| + |b_v| and M = min(S, (S + Z)/2) on the largest partial sum, Z a bound on
        |A_v x̂ + b_v|: `largest` (each exact output's magnitude on the region) plus |A_v||x̂ − h|.
        |x̂| ≤ |h| + |ĥ − h|. |A_v||h| is the least of |A_v| times each unit's largest |h| (interval, |ĉ| + reach,
        ‖h‖), of |A_v||ĉ| + ‖A_v‖·reach and of ‖A_v‖·‖h‖ (Cauchy–Schwarz: the region moves all units at once
        by at most `reach` in ℓ2, not each by `reach`); |A_v||ĥ − h| the lesser of |A_v|·units and ‖A_v‖·error.
        """
        by_units = torch.minimum(torch.maximum(lower.abs(), upper.abs()), centre.abs() + spread(reach, centre))
        scale = step.magnitude_up(by_units * (1 + 4 * U64))
        by_centre, by_norm = step.reach(reach), step.reach(norm_bound)
        if by_centre is not None:
            scale = torch.minimum(scale, step.magnitude_up(centre.abs()) + by_centre)
            scale = torch.minimum(scale, step.magnitude_up(torch.zeros_like(centre[:1])) + by_norm)
        carried = step.magnitude_up(units, bias=False)
        by_error = step.reach(error)
        if by_error is not None:
            carried = torch.minimum(carried, by_error)
        scale = (scale + carried) * (1 + 2 * U64)  # |A||x̂| + |b| per output
        partial = torch.minimum(scale, (scale + largest + carried) / 2 * (1 + 4 * U64))
        fits = scale.flatten(1).amax(1) * 2 < torch.finfo(self.dtype).max  # NaN or inf: False
        u = unit_roundoff(self.dtype)
        terms = step.terms((lower != 0) | (upper != 0) | (units != 0))
        count = torch.full_like(scale[:1], float(step.fan_in)) if terms is None else terms.double()
        if u * step.fan_in >= 0.5:  # γ_n·S (infinite from n·u ≥ 1)
            rounding = gamma(step.fan_in, u) * scale * (1 + 4 * U64)
        else:  # (1 + γ_n)·u = u/(1 − nu), n·u < 1/2, with its roundings covered
            sums = (scale + (count - 1).clamp_min(0) * partial) * (1 + 4 * U64)
            rounding = sums * u / (1 - count * u) * (1 + 8 * U64)
        return rounding + spread(self._underflow(step, norm_bound, error), rounding), carried, fits

    def _underflow(self, step, norm_bound, error) -> torch.Tensor:
        """One smallest normal number per operation of an n-term inner product, scaled by its largest input."""
        return (2 * step.fan_in + 2) * torch.finfo(self.dtype).tiny * (1 + norm_bound + error) * (1 + 2 * U64)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The net's logits in float64 on the CPU (within `float64_error` of the exact ones)."""
        return self.head.affine(_evaluate(self.steps, x.detach().double().cpu()).flatten(1))

    def in_precision(self, dtype: torch.dtype) -> RoundingModel:
        """The same layers' bounds for the net evaluated in `dtype` (float64: as `evaluate` does)."""
        other = copy.copy(self)
        other.dtype = dtype
        other.__dict__.pop("float64_error", None)
        return other

    @functools.cached_property
    def float64_error(self) -> ForwardError:
        """The rounding bound of `evaluate` over the whole box (about 10⁻¹³ of the logits' scale)."""
        return box_error(self.in_precision(torch.float64))

    def ball_pairs(self, x: torch.Tensor, radius: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """b_i (B, m): a bound on |(ŷ_j − ŷ_i) − (y_j − y_i)| anywhere on B(x, r) ∩ box, j = `predictions`
        (`gloro.ball_rounding.ball_pairs`)."""
        from gloro.ball_rounding import ball_pairs

        return ball_pairs(self, x, radius, predictions)

    @torch.no_grad()
    def measured_pairs(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """a_i (B, m): a bound on |(ŷ_j − ŷ_i) − (y_j − y_i)| at x itself, j = argmax of the computed `logits`:
        their distance from a float64 evaluation, plus that evaluation's own bound."""
        top = logits.argmax(1).cpu()
        difference = logits.detach().double().cpu() - self.evaluate(bucketed(x))[: len(x)]
        measured = (difference.gather(1, top[:, None]) - difference).abs() * (1 + 4 * U64)
        bound = self.float64_error
        rho = bound.logit_rounding
        own = rho[top][:, None] + rho[None] + self.distances[top] * bound.feature_error
        return ((measured + own) * (1 + 4 * U64)).nan_to_num(nan=math.inf)


def _computed_inputs(state: _Region) -> _Region:
    """The region's state for the computed values ĥ as exact inputs: each unit's interval widened by its error
    bound, no error carried, ‖ĥ‖ ≤ ‖h‖ + e (the caller grows the radius so that the reach covers ĥ too)."""
    low, high = state.lower - state.units, state.upper + state.units
    lower = low - (2 * U64 * low.abs() + TINY64)
    upper = high + (2 * U64 * high.abs() + TINY64)
    zero = torch.zeros_like(state.error)
    norm_bound = (state.norm_bound + state.error) * (1 + 2 * U64)
    return dataclasses.replace(
        state, lower=lower, upper=upper, units=torch.zeros_like(state.units), error=zero, norm_bound=norm_bound
    )


def _evaluate(steps: list, h: torch.Tensor) -> torch.Tensor:
    """`steps` applied to h in float64 (a residual layer as h + its branch)."""
    for step in steps:
        if isinstance(step, ResidualStep):
            h = h + _evaluate(step.branch, h)
        else:
            h = step.affine(h) if isinstance(step, AffineStep) else step(h)
    return h


def forward_error(
    layers: Sequence[nn.Module],
    input_shapes: Sequence[Sequence[int]],
    layer_norms: Sequence,
    input_range: tuple[float, float] = (0.0, 1.0),
    dtype: torch.dtype = torch.float32,
) -> ForwardError:
    """The `ForwardError` of a sequential net evaluated in `dtype` on inputs in `input_range`^d.

    `input_shapes[0]` is the per-example input shape; see `RoundingModel` for the rest. Infinite where the
    computation could overflow for some input in the box, so that nothing is certified.
    """
    return box_error(RoundingModel(layers, input_shapes[0], layer_norms, input_range, dtype))


def box_error(model: RoundingModel) -> ForwardError:
    """The rounding bound of `model` over its whole input box: the region about the box's centre with the
    box's half-diagonal as radius."""
    lo, hi = model.input_range
    input_shape = model.input_shape
    lower = torch.full((1, *input_shape), lo, dtype=torch.float64)
    upper = torch.full_like(lower, hi)
    d, centre = math.prod(input_shape), (lower + upper) / 2
    half_width = up(up((hi - lo) / 2) + up(U64 * max(abs(lo), abs(hi))))  # the centre's rounding included
    radius = torch.tensor([up(math.sqrt(d) * half_width * (1 + 4 * U64))], dtype=torch.float64)
    bound = model.region(lower, upper, centre, radius)
    return ForwardError(bound.logit_rounding[0], float(bound.feature_error[0]), model.dtype, (lo, hi))
