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
Identity are exact in floating point and 1-Lipschitz.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gloro.layer_rules import affine_map, rule_for
from gloro.margin import head_distances
from gloro.outward import TINY32, TINY64, U32, U64, gamma, norm_up, row_norms_up, unit_roundoff, up


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
        self.row_norms32 = _float32_up(self.row_norms)

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


def _role(layer: nn.Module) -> str:
    """The layer's role; the rounding model reads primitive layers only, so a block must be lowered first."""
    role = rule_for(layer).role
    if role == "block":
        raise ValueError(f"{layer!r} is a block: give the rounding model its primitives (GloroNet.primitive_layers)")
    return role


def _spread(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row (B,) value broadcast against a (B, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _float32_up(values: torch.Tensor) -> torch.Tensor:
    """Non-negative float64 values as float32 numbers no smaller (inf past float32's range)."""
    return (values * (1 + 2.0**-20) + TINY32).float()


def _bucketed(x: torch.Tensor) -> torch.Tensor:
    """x padded with copies of its first row to a power of two: the few batch shapes this gives keep oneDNN's
    compiled convolutions in its cache, instead of one compilation (~1 ms) per band size."""
    size = 1 << max(len(x) - 1, 0).bit_length()
    return torch.cat((x, x[:1].expand(size - len(x), *x.shape[1:]))) if size > len(x) else x


def _within_reach(lower: torch.Tensor, upper: torch.Tensor, centre: torch.Tensor, reach: torch.Tensor):
    """The interval [lower, upper] cut to ĉ ± reach per unit (every unit of h(x′) is within ‖h(x′) − ĉ‖ ≤ reach
    of ĉ's), the ends rounded outward."""
    spread = _spread(reach, centre)
    slack = 4 * U64 * (centre.abs() + spread) + TINY64
    return torch.maximum(lower, centre - spread - slack), torch.minimum(upper, centre + spread + slack)


@dataclass(frozen=True)
class RegionError:
    """The rounding bound over one region per row: ρ_i (B, m) and ‖δ‖ (B,)."""

    logit_rounding: torch.Tensor
    feature_error: torch.Tensor


class RoundingModel:
    """A net's layers in float64, prepared once per set of weights, and the rounding bound over any region.

    `layers` ends with the Linear head; `layer_norms` are sound ℓ2 bounds of all layers but the head;
    `dtype` is the precision the net computes in, `input_range` its input box.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        input_shape: Sequence[int],
        layer_norms: Sequence[float],
        input_range: tuple[float, float] = (0.0, 1.0),
        dtype: torch.dtype = torch.float32,
    ) -> None:
        *body, head = layers
        self.input_shape = tuple(input_shape)
        self.distances = head_distances(head.weight, exact=True).cpu()
        self.steps: list[AffineStep | nn.Module] = [
            AffineStep(layer, norm) if _role(layer) == "affine" else copy.deepcopy(layer).cpu()
            for layer, norm in zip(body, layer_norms)
        ]
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
        u = unit_roundoff(self.dtype)
        lower, upper, centre = lower.double(), upper.double(), centre.double()
        radius = radius.double().clamp_min(0.0) * (1 + 2 * U64)
        rows = len(lower)
        error = torch.zeros(rows, dtype=torch.float64)  # ℓ2 bound on ĥ − h, the float net's input to a layer
        units = torch.zeros_like(lower)  # per-unit bound on |ĥ − h|
        centre_error = torch.zeros(rows, dtype=torch.float64)  # ℓ2 bound on float64's error in `centre`
        overflow = torch.zeros(rows, dtype=torch.bool)
        lipschitz = 1.0
        norm_bound = torch.minimum(row_norms_up(centre) + radius, row_norms_up(torch.maximum(lower.abs(), upper.abs())))
        for step in self.steps:
            if not isinstance(step, AffineStep):  # monotone in each input: the interval's ends map to the output's
                units = rule_for(step).carry_error(step, units, upper)
                lower, upper, centre = step(lower), step(upper), step(centre)
                continue
            reach = centre_error + lipschitz * radius  # ‖h(x′) − ĉ‖ ≤ reach on the region
            rounding_units, carried, fits = self._rounding(step, lower, upper, centre, reach, norm_bound, error, units)
            overflow |= ~fits | ~torch.isfinite(rounding_units.flatten(1)).all(1)
            # or through norms: ‖|A||x̂| + |b|‖ ≤ ‖|A|‖·‖x̂‖ + ‖b over the outputs‖, and the underflow
            outputs = rounding_units[0].numel()
            by_norms = gamma(step.fan_in, u) * (step.abs_norm * (norm_bound + error) + step.output_bias_norm(outputs))
            by_norms = by_norms * (1 + 4 * U64) + self._underflow(step, norm_bound, error) * math.sqrt(outputs)
            rounding = torch.minimum(row_norms_up(rounding_units), by_norms * (1 + 2 * U64))
            units = (carried + rounding_units) * (1 + 2 * U64)
            error = torch.minimum((step.norm * error + rounding) * (1 + 4 * U64), row_norms_up(units))
            units = torch.minimum(units, _spread(error, units))
            centre_terms = step.magnitude(centre.abs() + _spread(centre_error, centre))
            centre_rounding = row_norms_up(outward(centre_terms, step.fan_in))
            middle = step.affine((lower + upper) / 2)
            half = step.magnitude((upper - lower) / 2, bias=False)
            slack = outward(step.magnitude((lower.abs() + upper.abs()) / 2) + half, step.fan_in)
            lower, upper = middle - half - slack, middle + half + slack
            centre = step.affine(centre)
            centre_error = (step.norm * centre_error + centre_rounding) * (1 + 4 * U64)
            lipschitz = up(up(lipschitz * step.norm) * (1 + 2 * U64))
            lower, upper = _within_reach(lower, upper, centre, (centre_error + lipschitz * radius) * (1 + 2 * U64))
            by_centre = (row_norms_up(centre) + centre_error + lipschitz * radius) * (1 + 4 * U64)
            norm_bound = torch.minimum(by_centre, row_norms_up(torch.maximum(lower.abs(), upper.abs())))
        flat = (t.flatten(1) for t in (lower, upper, centre, units))
        lower, upper, centre, units = flat
        reach = centre_error + lipschitz * radius
        rho, _, fits = self._rounding(self.head, lower, upper, centre, reach, norm_bound, error, units)
        overflow |= ~fits | ~torch.isfinite(rho).all(1)
        rho = torch.nextafter(rho, torch.tensor(math.inf, dtype=torch.float64)).masked_fill(overflow[:, None], math.inf)
        return RegionError(rho, error.masked_fill(overflow, math.inf))

    def _rounding(self, step, lower, upper, centre, reach, norm_bound, error, units):
        """Per output v of `step` on the region: γ_n·(|A_v||x̂| + |b_v|) plus underflow, |A_v|·|ĥ − h|, and per
        row whether every |A_v||x̂| + |b_v| stays below half the largest finite number (no overflow).

        |x̂| ≤ |h| + |ĥ − h|. |A_v||h| is the least of |A_v| times each unit's largest |h| (interval, |ĉ| + reach,
        ‖h‖), of |A_v||ĉ| + ‖A_v‖·reach and of ‖A_v‖·‖h‖ (Cauchy–Schwarz: the region moves all units at once
        by at most `reach` in ℓ2, not each by `reach`); |A_v||ĥ − h| the lesser of |A_v|·units and ‖A_v‖·error.
        """
        by_units = torch.minimum(torch.maximum(lower.abs(), upper.abs()), centre.abs() + _spread(reach, centre))
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
        fits = scale.flatten(1).amax(1) * 2 < torch.finfo(self.dtype).max  # NaN or inf: False
        u = unit_roundoff(self.dtype)
        terms = step.terms((lower != 0) | (upper != 0) | (units != 0))
        if terms is None or u * step.fan_in >= 0.5:
            rounding = gamma(step.fan_in, u) * scale * (1 + 4 * U64)
        else:  # γ_n per output, n·u < 1/2: nu/(1 − nu) with its three roundings covered
            rounding = (terms * u) / (1 - terms * u) * (1 + 8 * U64) * scale * (1 + 4 * U64)
        return rounding + _spread(self._underflow(step, norm_bound, error), rounding), carried, fits

    def _underflow(self, step, norm_bound, error) -> torch.Tensor:
        """One smallest normal number per operation of an n-term inner product, scaled by its largest input."""
        return (2 * step.fan_in + 2) * torch.finfo(self.dtype).tiny * (1 + norm_bound + error) * (1 + 2 * U64)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The net's logits in float64 on the CPU (within `float64_error` of the exact ones)."""
        h = x.detach().double().cpu()
        for step in self.steps:
            h = step.affine(h) if isinstance(step, AffineStep) else step(h)
        return self.head.affine(h.flatten(1))

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

    @torch.no_grad()
    def computed_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's input as the net computes it (its own precision, on the CPU), then the logits."""
        h = x.detach().cpu().to(self.dtype)
        inputs = []
        for step in (*self.steps, self.head):
            inputs.append(h)
            h = step.computed(h) if isinstance(step, AffineStep) else step(h)
        return [*inputs, h]

    @torch.no_grad()
    def ball_pairs(self, x: torch.Tensor, radius: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """b_i (B, m): a bound on |(ŷ_j − ŷ_i) − (y_j − y_i)| anywhere on B(x, r) ∩ box, j = `predictions`.

        Propagated about the net's own computed activations ĉ at x: on the ball, the computed input ĥ of a layer
        is within 2·e + L·r of ĉ in ℓ2 (e the bound on its rounding so far, which holds at x too; L the sound
        bound of the layers before), so |A_v||ĥ| ≤ |A_v||ĉ| + ‖A_v‖·(2e + L·r) by Cauchy–Schwarz, and a unit is
        exactly zero on the whole ball where its computed pre-activation stays ≤ 0 (ReLU), which drops its
        product from the γ_n of every sum it enters. Each layer's rounding is computed in float32 (`_rounding32`).
        """
        count = len(x)
        x, radius, predictions = (_bucketed(t.detach().cpu()) for t in (x, radius, predictions))
        radius = radius.double().clamp_min(0.0) * (1 + 2 * U64)
        rows = len(radius)
        activations = self.computed_activations(x)
        error = torch.zeros(rows, dtype=torch.float64)
        lipschitz = 1.0
        overflow = ~torch.isfinite(activations[-1]).all(1)
        nonzero = (activations[0] != 0) | _spread(radius > 0, activations[0])
        for index, (step, centre) in enumerate(zip(self.steps, activations)):
            reach = (2 * error + lipschitz * radius) * (1 + 4 * U64)
            if isinstance(step, nn.ReLU):  # ẑ(x′) ≤ ĉ + 2e + L·r per unit: ≤ 0 on the whole ball gives ±0
                nonzero = centre > -_spread(_float32_up(reach), centre)
            elif not isinstance(step, AffineStep):  # an output can be nonzero where an input it reads can
                nonzero = rule_for(step).carry_error(step, nonzero.to(torch.uint8), centre).bool()
            else:
                _, norm, fits = self._rounding32(step, centre, nonzero, reach)
                overflow |= ~fits
                error = (step.norm * error + norm) * (1 + 4 * U64)
                lipschitz = up(up(lipschitz * step.norm) * (1 + 2 * U64))
                nonzero = torch.ones(1, dtype=torch.bool).expand(rows, *activations[index + 1].shape[1:])
        reach = (2 * error + lipschitz * radius) * (1 + 4 * U64)
        rho, _, fits = self._rounding32(self.head, activations[-2].flatten(1), nonzero.flatten(1), reach)
        overflow |= ~fits
        top = predictions.detach().cpu()
        rho = rho.masked_fill(overflow[:, None], math.inf)
        feature = self.distances[top] * error.masked_fill(overflow, math.inf)[:, None]
        pairs = (rho + rho.gather(1, top[:, None]) + feature) * (1 + 4 * U64)
        return pairs[:count].nan_to_num(nan=math.inf)

    def _rounding32(self, step: AffineStep, centre: torch.Tensor, nonzero: torch.Tensor, reach: torch.Tensor):
        """For each output v: an upper bound on γ_{n_v}·(|A_v||ĥ| + |b_v|) + underflow (float64, (B, outputs)),
        the ℓ2 norm of those bounds per row (B,), and whether the row's computation is clear of overflow.

        |A_v||ĉ| + |b_v| runs in float32 and so do the products and sums after it; every operand is ≥ 0, so
        the computed result is at least the exact one times (1 − u₃₂)^k less one smallest normal per operation,
        k below fan-in + outputs + 16; one factor 1 + 2γ_k and an additive term put it back above.
        """
        u, n = unit_roundoff(self.dtype), step.fan_in
        scale = step.magnitude32(centre.abs()) + step.reach32(_float32_up(reach))
        outputs = scale[0].numel()
        # γ_{n_v} ≤ n_v·u/(1 − n·u) with n_v ≤ n the products that can be nonzero: n_v in float32 (exact),
        # the constant applied in float64 below; without a count, n_v = n
        terms = None if bool(nonzero.all()) else step.terms(nonzero)
        rounding = scale if terms is None else terms * scale
        factor = (n if terms is None else 1) * u / (1 - n * u) if n * u < 0.5 else math.inf
        k = n + outputs + 16
        inflate = (1 + 2 * gamma(k, U32)) * (1 + 8 * U64) * factor
        fits = scale.flatten(1).amax(1).double() * (2 * (1 + 2 * gamma(k, U32))) < torch.finfo(self.dtype).max
        flush = (2 * k + 2) * (TINY32 + torch.finfo(self.dtype).tiny) * (1 + min(float(scale.max()), 3e38))
        per_output = rounding.double() * inflate + flush if step is self.head else None
        squares = math.sqrt(outputs * TINY32)  # squares flushed to zero in the norm's own sum
        norm = torch.linalg.vector_norm(rounding.flatten(1), dim=1).double() * inflate
        norm = norm + flush * math.sqrt(outputs) + squares
        return per_output, norm * (1 + 4 * U64), fits

    @torch.no_grad()
    def measured_pairs(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """a_i (B, m): a bound on |(ŷ_j − ŷ_i) − (y_j − y_i)| at x itself, j = argmax of the computed `logits`:
        their distance from a float64 evaluation, plus that evaluation's own bound."""
        top = logits.argmax(1).cpu()
        difference = logits.detach().double().cpu() - self.evaluate(_bucketed(x))[: len(x)]
        measured = (difference.gather(1, top[:, None]) - difference).abs() * (1 + 4 * U64)
        bound = self.float64_error
        rho = bound.logit_rounding
        own = rho[top][:, None] + rho[None] + self.distances[top] * bound.feature_error
        return ((measured + own) * (1 + 4 * U64)).nan_to_num(nan=math.inf)


def forward_error(
    layers: Sequence[nn.Module],
    input_shapes: Sequence[Sequence[int]],
    layer_norms: Sequence[float],
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
