"""AOL, almost-orthogonal layers (Prach & Lampert, ECCV 2022): a dense layer x ↦ P D x + b with
D = diag(d), d_i = (Σ_j |PᵀP|_ij + 10⁻⁶)^{-1/2}, which has ‖PD‖₂ ≤ 1 in exact arithmetic for any P.

The certificate does not take that claim: the layer lowers to the nn.Linear it computes (weight P D̂ as
rounded in its own precision), whose sound bound the library proves as for any dense layer; the claim is
only the training estimate (`gloro.layer_rules.ClaimedBound`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gloro.architectures import ArchitectureSpec, register_architecture
from gloro.layer_rules import ClaimedBound, register_layer_rule
from gloro.layers import MinMax, normalized_linear

SAFETY = 1e-6  # added under the square root, as the authors do: it only shrinks d
MAX_WIDTH = 1024  # AOL-D4's width on large inputs (a 64×64×3 image has 12,288 units)


class AOLDense(nn.Module):
    """One AOL dense layer from `features_in` to `features_out` units, with a bias."""

    def __init__(self, features_in: int, features_out: int) -> None:
        super().__init__()
        self.raw = nn.Linear(features_in, features_out)  # P (torch's out × in layout) and b, drawn as any Linear

    def rescaled_weight(self) -> torch.Tensor:
        """P D: each input column of P scaled by d_i = (Σ_j |PᵀP|_ij + 10⁻⁶)^{-1/2}."""
        p = self.raw.weight
        return p * ((p.T @ p).abs().sum(1) + SAFETY).rsqrt()[None, :]

    def as_linear(self) -> nn.Linear:
        """The nn.Linear this layer computes (built without drawing weights), for the certifiers."""
        weight = self.rescaled_weight()
        layer = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], device="meta")
        del layer.weight, layer.bias
        layer.weight, layer.bias = weight, self.raw.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.rescaled_weight(), self.raw.bias)


register_layer_rule(
    AOLDense,
    "block",
    lower=lambda layer: (layer.as_linear(),),
    bound=lambda layer, shape, generator: ClaimedBound(layer, shape, generator, claim=1.0),
)


@register_architecture("AOL-D4")
def aol_dense_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """A small all-dense AOL net for CPU runs: four AOL layers of the flattened input's width (at most 1024)
    with MinMax between them, and the row-normalised head (AOL's own nets put AOL convs first and end in a
    projection)."""
    features = math.prod(spec.input_shape)
    width = min(features, MAX_WIDTH)
    layers: list[nn.Module] = [nn.Flatten()]
    for index in range(4):
        layers += [AOLDense(features if index == 0 else width, width), MinMax()]
    return [*layers, normalized_linear(width, spec.num_classes)]
