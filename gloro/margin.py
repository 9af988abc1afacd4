"""The GloRo margin: pairwise constants K_ij, the ⊥ logit y_⊥, and certificates, as pure functions."""

from __future__ import annotations

import torch

from gloro import native
from gloro.certificate import Certificate


def head_distances(weight: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """‖w_i − w_j‖₂ for all pairs of rows of the last layer's weight (m×d → m×m), as one differentiable op.

    Training lets `cdist` pick its fast form (a Gram matmul past 25 rows); `exact=True` sums the squared
    differences in float64 without forming the m×m×d tensor, which certification uses.
    """
    if exact:
        w = weight.detach().double()
        return torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.cdist(weight, weight)


def bottom_logit(logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float) -> torch.Tensor:
    """y_⊥ = max_{i≠j} (y_i + ε·K_ij) with j = argmax y; `margin_lipschitz` is the m×m matrix K_ij."""
    top = logits.argmax(dim=1)
    shifted = logits + (epsilon * margin_lipschitz.to(logits.dtype))[top]  # ε scales m² entries, not N·m
    shifted = shifted.scatter(1, top[:, None], float("-inf"))
    return shifted.max(dim=1).values


def with_bottom(logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The m+1 GloRo logits [y, y_⊥]."""
    return torch.cat((logits, bottom_logit(logits, margin_lipschitz, epsilon)[:, None]), dim=1)


def certify_logits(logits: torch.Tensor, margin_lipschitz: torch.Tensor, epsilon: float) -> Certificate:
    """Certify in float64: radius = min_{i≠j} (y_j − y_i)/K_ij; certified ⇔ radius ≥ ε ⇔ y_j ≥ y_⊥.

    float32 logits on the CPU take `gloro.native.certify`, one compiled pass with the same operations.
    """
    compiled = native.certify(logits, margin_lipschitz, epsilon)
    if compiled is not None:
        predictions, certified, radius = compiled
        return Certificate(predictions, certified, radius, float(epsilon), "global")
    y = logits.detach().double()
    top_value, top = y.max(dim=1)
    gaps = (top_value[:, None] - y) / margin_lipschitz.double()[top]
    radius = gaps.scatter_(1, top[:, None], float("inf")).min(dim=1).values
    return Certificate(top, radius >= epsilon, radius, float(epsilon), "global")
