"""CPL, convex potential layers (Meunier, Delattre, Araujo & Allauzen, ICML 2022): dense layers
h(x) = x − (2/(σ̂² + 10⁻⁴))·Wᵀσ(Wx + b), σ = ReLU, 1-Lipschitz in exact arithmetic when σ̂ ≥ ‖W‖₂.

The layer takes σ̂ from power iteration (one step per training forward pass, persisted, as its authors run it;
they run 100 more at evaluation, this layer keeps the trained estimate), an estimate from below, so the
construction's 1 can fail. The certificate does not take it: the bound is SLL's (`gloro.families.sll.SLLBound`,
CPL being SLL with T = I/(σ̂² + 10⁻⁴)) of the weights and the σ̂ the layer really computes with, and Table 1
flags a claimed 1 below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gloro.architectures import ArchitectureSpec, register_architecture
from gloro.families.sll import SLLBound
from gloro.layer_rules import register_layer_rule
from gloro.layers import computed_linear, normalized_linear


class CPLDense(nn.Module):
    """One CPL dense layer on `features` units with an inner width (the rows of W) of `inner`; `vector` is the
    power iteration's estimate of W's top right singular vector, advanced after each training forward pass
    (train mode, gradients on), so that a pass never changes the map it computes, nor does evaluation."""

    def __init__(self, features: int, inner: int | None = None) -> None:
        super().__init__()
        inner = features if inner is None else int(inner)
        self.down = nn.Linear(features, inner)  # W (inner × features) and b
        nn.init.xavier_normal_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        self.register_buffer("vector", torch.full((features,), 1 / math.sqrt(features)))

    def norm_estimate(self) -> torch.Tensor:
        """‖W v‖ for the stored unit vector v: at most ‖W‖₂, and close to it once the iteration has converged."""
        return torch.linalg.vector_norm(self.down.weight @ self.vector)

    def scale(self) -> torch.Tensor:
        """t = 1/(‖W v‖² + 10⁻⁴) for every inner unit: SLL's T for CPL's step 2/(σ̂² + 10⁻⁴)."""
        return (1 / (self.norm_estimate() ** 2 + 1e-4)).expand(self.down.out_features)

    def up_weight(self) -> torch.Tensor:
        """−2t·Wᵀ (features × inner), as the layer computes it."""
        return -2 * self.down.weight.T * self.scale()[None, :]

    def up(self) -> nn.Linear:
        """The branch's last layer: a bias-free nn.Linear holding `up_weight`."""
        return computed_linear(self.up_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = x + F.linear(F.relu(self.down(x)), self.up_weight())
        if self.training and torch.is_grad_enabled():  # a training step: advance the estimate for the next one
            with torch.no_grad():
                weight = self.down.weight
                # a new tensor, not an in-place update: this pass's graph keeps the vector it used
                self.vector = F.normalize(weight.T @ F.normalize(weight @ self.vector, dim=0), dim=0)
        return output


register_layer_rule(
    CPLDense,
    "residual",
    branch=lambda layer: (layer.down, nn.ReLU(), layer.up()),
    bound=lambda layer, shape, generator: SLLBound(),  # down, scale() and up_weight() as SLL's layer has them
)


@register_architecture("CPL-D4")
def cpl_dense_small(spec: ArchitectureSpec) -> Sequence[nn.Module]:
    """A small all-dense CPL net for CPU runs, shaped as SLL-D4: four CPL layers on the flattened input (inner
    width twice the input's, at most 1024) and a row-normalised logit layer."""
    features = math.prod(spec.input_shape)
    inner = min(2 * features, 1024)
    return [nn.Flatten(), *(CPLDense(features, inner) for _ in range(4)), normalized_linear(features, spec.num_classes)]
