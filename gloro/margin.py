"""The GloRo margin: pairwise constants K_ij, the ⊥ logit y_⊥, and certificates, as pure functions."""

from __future__ import annotations

import math

import torch

from gloro import native
from gloro.certificate import Certificate
from gloro.outward import U64, gamma

SLACK = 2 * torch.finfo(torch.float64).eps  # 4u: covers the rounding of a gap and of its offset difference
EPS64 = torch.finfo(torch.float64).eps
TRUE_MIN64 = 2.0**-1074  # the smallest subnormal float64


def head_distances(weight: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """‖w_i − w_j‖₂ for all pairs of rows of the last layer's weight (m×d → m×m), as one differentiable op.

    Training lets `cdist` pick its fast form (a Gram matmul past 25 rows); `exact=True` sums the squared
    differences in float64 without forming the m×m×d tensor and rounds the result up (γ_{d+3} covers the
    differences, squares, sum and root), which certification uses.
    """
    if exact:
        w = weight.detach().double()
        distances = torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist")
        inflated = distances * (1 + gamma(w.shape[1] + 3, U64))
        return torch.nextafter(inflated, torch.full_like(inflated, math.inf)).fill_diagonal_(0.0)
    return torch.cdist(weight, weight)


def sound_margin_lipschitz(sub_lipschitz: float, weight: torch.Tensor) -> torch.Tensor:
    """K_ij = K·‖w_i − w_j‖ rounded up, for a sound K (a float64 number) and the head's weight."""
    product = float(sub_lipschitz) * head_distances(weight, exact=True)
    return torch.nextafter(product, torch.full_like(product, math.inf)).fill_diagonal_(0.0)


def bottom_logit(
    logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """y_⊥ = max_{i≠j} (y_i + ε·K_ij + O_ij) with j = argmax y; K_ij m×m, O_ij the rounding offsets (if any)."""
    top = logits.argmax(dim=1)
    shift = epsilon * margin_lipschitz  # ε scales m² entries, not N·m
    if offsets is not None:
        shift = shift + offsets
    shifted = logits + shift.to(logits.dtype)[top]
    shifted = shifted.scatter(1, top[:, None], float("-inf"))
    return shifted.max(dim=1).values


def with_bottom(
    logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """The m+1 GloRo logits [y, y_⊥]."""
    return torch.cat((logits, bottom_logit(logits, margin_lipschitz, epsilon, offsets)[:, None]), dim=1)


def certify_logits(
    logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float, *, offsets: torch.Tensor
) -> Certificate:
    """Certify in float64: radius = min_{i≠j} (y_j − y_i − O_ij)/K_ij rounded down; certified ⇔ radius ≥ ε.

    O_ij (`ForwardError.margin_offsets`) covers the rounding of the forward pass, so the radius holds for
    the exact net and for the float one; a row with a non-finite logit gets radius −inf. A negative radius
    means "not certified", not a distance. float32 logits on the CPU take `gloro.native`'s certify plan, one
    compiled pass with the same operations.
    """
    return MarginCertifier(margin_lipschitz, offsets, copy=False)(logits, epsilon)


def reference_certificate(
    logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float, offsets: torch.Tensor
) -> Certificate:
    """`certify_logits` in PyTorch operations, on any device and dtype."""
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"certify_logits needs (N, classes) logits with at least one class, got {tuple(logits.shape)}")
    top = logits.detach().argmax(dim=1)
    radius = radius_with_rows(logits, margin_lipschitz, offsets.double()[top])
    return Certificate(top, radius >= epsilon, radius, float(epsilon), "global")


def radius_with_rows(logits: torch.Tensor, margin_lipschitz: torch.Tensor, offset_rows: torch.Tensor) -> torch.Tensor:
    """min_{i≠j} (y_j − y_i − O_i)/K_ji rounded down, j = argmax y, with one row of offsets O per point (N, m);
    −inf for a row with a non-finite logit."""
    top = logits.detach().argmax(dim=1)
    return radius_from_rows(logits, margin_lipschitz.double().to(logits.device)[top], offset_rows)


def radius_from_rows(logits: torch.Tensor, lipschitz_rows: torch.Tensor, offset_rows: torch.Tensor) -> torch.Tensor:
    """`radius_with_rows` with each point's own row of constants K_ji (N, m), as a local bound gives; a zero
    constant with a non-negative margin left gives an infinite ratio."""
    y = logits.detach().double()
    top = logits.detach().argmax(dim=1)
    top_value = y.gather(1, top[:, None])
    gap = top_value - y
    low = gap - offset_rows.to(y.device)
    low = low - SLACK * (gap.abs() + low.abs())
    k = lipschitz_rows.double().to(y.device)
    ratio = torch.where(k > 0, low / k, torch.where(low >= 0, math.inf, -math.inf))
    ratio = torch.where(ratio.isfinite(), ratio - ratio.abs() * EPS64 - TRUE_MIN64, ratio)  # an ulp below
    radius = ratio.scatter_(1, top[:, None], math.inf).min(dim=1).values
    return torch.where(torch.isfinite(y).all(dim=1), radius, -math.inf)


class MarginCertifier:
    """`certify_logits` for one K_ij and O_ij, checked and prepared once: a frozen net certifies every batch
    with the same constants, and after a large forward pass each check costs microseconds."""

    def __init__(self, margin_lipschitz: torch.Tensor, offsets: torch.Tensor, copy: bool = True) -> None:
        """`copy`: the compiled path reads private copies (False for a certifier used once, at once)."""
        self.margin_lipschitz, self.offsets = margin_lipschitz, offsets
        self.compiled = native.certify_plan(margin_lipschitz, offsets, copy=copy)

    def __call__(self, logits: torch.Tensor, epsilon: float) -> Certificate:
        compiled = None if self.compiled is None else self.compiled(logits, epsilon)
        if compiled is None:
            return reference_certificate(logits, self.margin_lipschitz, epsilon, self.offsets)
        predictions, certified, radius = compiled
        return Certificate(predictions, certified, radius, float(epsilon), "global")

    def __getstate__(self) -> dict:  # the compiled plan holds this process's addresses
        return {"margin_lipschitz": self.margin_lipschitz, "offsets": self.offsets}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["margin_lipschitz"], state["offsets"])
