"""What a certificate of a GloRo Net rests on: the sound K and K_ij, the rounding offsets O_ij, and the model of
the net's rounding that gives each point its own allowance where the box-wide one decides."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gloro.certificate import Certificate
from gloro.forward_error import ForwardError, RoundingModel
from gloro.margin import MarginCertifier, radius_from_rows


@dataclass(frozen=True, eq=False)
class SoundConstants:
    """What a certificate rests on: K (a float64 number), K_ij, the box-wide rounding offsets O_ij (m×m
    float64) and the model of the net's rounding that gives each point's own (`refine`)."""

    sub_lipschitz: float
    margin_lipschitz: torch.Tensor
    offsets: torch.Tensor
    forward_error: ForwardError
    rounding: RoundingModel

    @functools.cached_property
    def certifier(self) -> MarginCertifier:
        """`certify_logits` with these K_ij and O_ij, prepared on first use."""
        return MarginCertifier(self.margin_lipschitz, self.offsets)

    @functools.cached_property
    def unrounded(self) -> MarginCertifier:
        """`certify_logits` with these K_ij and no offsets: the radius that ignores rounding, an upper bound."""
        return MarginCertifier(self.margin_lipschitz, torch.zeros_like(self.offsets))

    def certify(self, x: torch.Tensor, logits: torch.Tensor, epsilon: float) -> Certificate:
        """The global certificate of the computed `logits` at the points `x`: box-wide offsets first, then each
        point's own where they decide the outcome at ε (`refine`)."""
        return self.refine(x, logits, self.certifier(logits, epsilon), (epsilon,))

    def refine(
        self, x: torch.Tensor, logits: torch.Tensor, certificate: Certificate, thresholds: Sequence[float]
    ) -> Certificate:
        """`certificate` (from the box-wide offsets) with a larger radius, where one can be proven, for every
        point whose box-wide radius is below some threshold that its radius ignoring rounding, r₀, reaches.

        Such a point's offsets come from its own ball (`proven_radius`), of the radius of each threshold in
        turn; its radius becomes the largest threshold so proven (its box-wide radius where none is), a lower
        bound on what the point's own allowance would give, at one bound per threshold. Certified ⇔ ≥ ε.
        """
        box = certificate.radius.cpu()
        levels = torch.tensor(sorted(float(t) for t in thresholds), dtype=torch.float64)
        candidates = (box[:, None] < levels).any(1).nonzero().flatten()
        if len(candidates) == 0:
            return certificate
        chosen = logits[candidates.to(logits.device)]
        reach = self.unrounded(chosen, 0.0).radius.cpu()
        decided = ((box[candidates][:, None] < levels) & (reach[:, None] >= levels)).any(1)
        if not decided.any():
            return certificate
        band, reach = candidates[decided], reach[decided]
        points, chosen = x[band.to(x.device)].cpu(), chosen[decided.to(chosen.device)].cpu()
        own, failed = box[band], torch.zeros(len(band), dtype=torch.bool)
        for level in levels.tolist():  # a point refused at one level is not tried at larger ones: no smaller bound
            still = (own < level) & (reach >= level) & ~failed
            if still.any():
                ball = torch.full((int(still.sum()),), level, dtype=torch.float64)
                proven = self.proven_radius(points[still], chosen[still], ball)
                own[still] = torch.maximum(own[still], proven)
                failed[still] = proven < level
        radius = box.clone()
        radius[band] = own
        radius = radius.to(certificate.radius.device)
        return dataclasses.replace(certificate, radius=radius, certified=radius >= certificate.epsilon)

    def proven_radius(
        self, x: torch.Tensor, logits: torch.Tensor, ball: torch.Tensor, lipschitz_rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A certified radius (at most `ball`) for each point from its own offsets over B(x, ball) ∩ box: twice
        the ball's rounding bound b (`RoundingModel.ball_pairs`; x lies in the ball), then, where that falls
        short of `ball`, the rounding measured at x plus b (`RoundingModel.measured_pairs`). The constants are
        the global K_ji, or each point's own row (a local bound valid on the same ball)."""
        top = logits.argmax(1)
        k = self.margin_lipschitz.cpu()[top] if lipschitz_rows is None else lipschitz_rows.cpu()
        bound = self.rounding.ball_pairs(x, ball, top)
        radius = radius_from_rows(logits, k, 2 * bound)
        short = radius < ball
        if short.any():
            rows = self.rounding.measured_pairs(x[short], logits[short]) + bound[short]
            radius[short] = torch.maximum(radius[short], radius_from_rows(logits[short], k[short], rows))
        return torch.minimum(radius, ball)

    def certified_over_ball(
        self, x: torch.Tensor, logits: torch.Tensor, lower_margins: torch.Tensor, epsilon: float
    ) -> torch.Tensor:
        """Certified ⇔ the computed logits at x are finite and every lower bound on the exact margin
        y_j − y_i over B(x, ε) (j = argmax of `logits`; a bound of the certifier's own, such as KW's, BCP's or
        CROWN's) exceeds what rounding can take from the computed margin anywhere on the ball: the box-wide
        O_ij / 2 first, then, where that decides, the ball's own bound b_i (`RoundingModel.ball_pairs`)."""
        device = lower_margins.device
        logits, top = logits.cpu(), logits.argmax(1).cpu()
        lower = lower_margins.double().cpu().scatter(1, top[:, None], math.inf)
        finite = torch.isfinite(logits).all(1)
        certified = finite & (lower > self.offsets.cpu()[top] / 2).all(1)
        band = (finite & ~certified & (lower > 0).all(1)).nonzero().flatten()
        if len(band):
            ball = torch.full((len(band),), float(epsilon), dtype=torch.float64)
            bound = self.rounding.ball_pairs(x[band.to(x.device)].cpu(), ball, top[band])
            certified[band] = (lower[band] > bound).all(1)
        return certified.to(device)

    def __getstate__(self) -> dict:  # the prepared certifiers are rebuilt where they are unpickled
        return {key: value for key, value in self.__dict__.items() if key not in ("certifier", "unrounded")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
