"""Where a point's rounding allowance comes from, layer by layer (issue 28).

For the first test points of a checkpoint, the ball's bound b_i(x, r) (`RoundingModel.ball_pairs`, what
`certify` subtracts where the box-wide offsets decide) is computed once as it is, then once per affine layer
with only that layer's own rounding kept (every other layer's set to zero, the walk otherwise unchanged).
Printed: the median over points and classes of each, and each layer's share of their sum. The bound is not
exactly additive (a ReLU mask or a `min` can pick the other term), so the shares are an attribution, not a
decomposition.

    .venv/bin/python benchmarks/allowance_by_layer.py CHECKPOINT DATASET [--points 256] [--epsilon E] \\
        [--cifar-shaped]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

import gloro.ball_rounding as ball_rounding
from gloro.checkpoint import load
from gloro.data import Subset, load_dataset


@contextlib.contextmanager
def only_layer(keep: int | None, calls: list[int]) -> Iterator[None]:
    """Within the block, every affine layer's own rounding but the `keep`-th (in walk order) is zero; `calls`
    collects how many affine layers the walk met."""
    original = ball_rounding._rounding32

    def rounding(*args, **kwargs):
        fresh, fits = original(*args, **kwargs)
        index = len(calls)
        calls.append(index)
        if keep is not None and index != keep:
            fresh = ball_rounding._Fresh(torch.zeros_like(fresh.units), 0.0, 0.0)
        return fresh, fits

    ball_rounding._rounding32 = rounding
    try:
        yield
    finally:
        ball_rounding._rounding32 = original


def median_pair_bound(bounds: torch.Tensor, predictions: torch.Tensor) -> float:
    """The median of b_i over points and the classes i other than the prediction."""
    others = torch.ones_like(bounds, dtype=torch.bool).scatter(1, predictions[:, None], False)
    return float(bounds[others].median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--epsilon", type=float, default=None, help="the ball's radius (default: the net's eval ε)")
    parser.add_argument("--cifar-shaped", action="store_true", help="pad 28×28 to 32×32 and repeat to 3 channels")
    args = parser.parse_args()
    net = load(args.checkpoint)
    net.freeze()
    split = load_dataset(args.dataset, "test", subset=Subset(args.points, 0), progress=False)
    x = split.images.float() / net.metadata["input_divisor"]
    if args.cifar_shaped:
        x = F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    epsilon = net.eval_epsilon if args.epsilon is None else args.epsilon
    model = net.sound_constants().rounding
    with torch.no_grad():
        predictions = net.predict_clean(x).argmax(1)
    radius = torch.full((len(x),), float(epsilon), dtype=torch.float64)
    calls: list[int] = []
    with only_layer(None, calls):
        whole = median_pair_bound(model.ball_pairs(x, radius, predictions), predictions)
    layers = len(calls)
    parts = []
    for index in range(layers):
        with only_layer(index, []):
            parts.append(median_pair_bound(model.ball_pairs(x, radius, predictions), predictions))
    print(f"{args.checkpoint}: {len(x)} points, radius {epsilon:g}, median b_i {whole:.3g} (logits)")
    total = sum(parts)
    for index, part in enumerate(parts):
        name = "head" if index == layers - 1 else f"affine layer {index + 1}"
        print(f"  {name:>16}: {part:.3g} ({100 * part / total:.0f}% of the layers' sum)")


if __name__ == "__main__":
    main()
