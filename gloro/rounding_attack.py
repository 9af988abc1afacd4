"""Summation orders chosen to push a float32 sum's rounding one way: the attack on the rounding allowance.

A certificate promises the prediction for the net as it computes in float32 with *each inner product summed
in any order* (docs/certificates.md). `adversarial_sums` picks such an order, greedily, so that the rounding
adds up in a chosen direction instead of cancelling as it does in the order a kernel happens to use. What it
reaches is an error some legal computation really makes: a lower bound on the worst case, which any sound
allowance must cover, and so a lower bound on how much of the allowance the promise itself costs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from gloro.gloro_net import GloroNet


@torch.no_grad()
def adversarial_sums(terms: torch.Tensor, direction: torch.Tensor, window: int = 64) -> torch.Tensor:
    """The float32 sum of each row of `terms` (B, n), added one at a time in an order that pushes its rounding
    towards the sign of `direction` (B,): the computed sums (B,), float32.

    Terms of the sign that makes the partial sum large go first, largest first, then the others smallest first,
    so the partial sum, and with it each addition's possible rounding, stays large for as long as it can; at
    each step the next term is the one of the following `window` whose addition rounds furthest in `direction`.
    """
    terms = terms.detach().float().cpu()
    rows, count = terms.shape
    direction = direction.detach().cpu().sign().double()
    total = terms.double().sum(1)
    lead = torch.where(total >= 0, 1.0, -1.0)[:, None]  # the sign whose terms outweigh the others
    leading = terms * lead > 0
    # leading terms by decreasing magnitude, then the rest by increasing magnitude
    key = torch.where(leading, -terms.abs().double(), 1e300 + terms.abs().double())
    pool = terms.gather(1, key.argsort(dim=1, stable=True)).contiguous()
    sums = torch.zeros(rows, dtype=torch.float32)
    arange = torch.arange(rows)
    for step in range(count):
        candidates = pool[:, step : step + window]
        computed = sums[:, None] + candidates  # float32, rounded to nearest
        pushed = (computed.double() - (sums.double()[:, None] + candidates.double())) * direction[:, None]
        best = pushed.argmax(1)
        sums = computed[arange, best]
        chosen = step + best
        first = pool[:, step].clone()
        pool[arange, step] = pool[arange, chosen]
        pool[arange, chosen] = first
    return sums


@torch.no_grad()
def adversarial_linear(layer: nn.Linear, x: torch.Tensor, direction: torch.Tensor, window: int = 64) -> torch.Tensor:
    """`layer` at one input `x` (n,) as float32 computes it with its products rounded and each output's sum of
    products and bias taken in the order `adversarial_sums` picks for `direction` (outputs,): the outputs."""
    weight = layer.weight.detach().float().cpu()
    products = weight * x.detach().float().cpu()[None, :]  # each product rounded to float32
    bias = layer.bias.detach().float().cpu()[:, None] if layer.bias is not None else products[:, :0]
    return adversarial_sums(torch.cat((products, bias), 1), direction, window)


@dataclass(frozen=True)
class AttackedMargin:
    """One point's margin y_top − y_runner-up: exact (float64), as PyTorch's order computes it, and with the
    widest Linear layer summed in the order that shrinks it most."""

    runner_up: int
    exact: float
    computed: float
    attacked: float

    @property
    def attacked_error(self) -> float:
        return self.exact - self.attacked

    @property
    def computed_error(self) -> float:
        return abs(self.computed - self.exact)


@torch.no_grad()
def attack_margins(net: GloroNet, x: torch.Tensor, window: int = 64) -> list[AttackedMargin]:
    """For each point of `x`, the margin to the exact runner-up class with the net's widest Linear layer (the
    most inputs among `net.model`'s top-level layers) summed in the order `adversarial_linear` picks against it,
    each output pushed the way that lowers the margin (the sign of its gradient in float64), the rest of
    `net.model` as PyTorch computes it."""
    layers = list(net.model)
    linear = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    widest = max(linear, key=lambda i: layers[i].in_features)
    prefix, layer, suffix = nn.Sequential(*layers[:widest]), layers[widest], nn.Sequential(*layers[widest + 1 :])
    exact = copy.deepcopy(net.model).double()
    exact_suffix = nn.Sequential(*list(exact)[widest + 1 :])
    rows = []
    for point in x:
        reference = exact(point[None].double())[0]
        computed = net.predict_clean(point[None])[0].double()
        top = int(computed.argmax())
        runner = int(torch.cat((reference[:top], reference[top + 1 :])).argmax())
        runner += runner >= top
        hidden = prefix(point[None])[0].flatten()
        with torch.enable_grad():
            z = layer(hidden[None])[0].detach().double().requires_grad_()
            out = exact_suffix(z[None])[0]
            (out[top] - out[runner]).backward()
        attacked = suffix(adversarial_linear(layer, hidden, -z.grad.sign(), window)[None])[0].double()
        rows.append(
            AttackedMargin(
                runner,
                float(reference[top] - reference[runner]),
                float(computed[top] - computed[runner]),
                float(attacked[top] - attacked[runner]),
            )
        )
    return rows
