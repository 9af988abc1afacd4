"""What each point's own rounding allowance buys and costs on a trained net (issue 28).

For a checkpoint and its test split: the VRA with the allowance `certify` uses (box-wide offsets, then each
point's own where they decide), with the box-wide offsets alone, and ignoring rounding; the share of points
whose own allowance was computed; and certify ÷ forward, both sides timed on the same batches in interleaved
rounds (`gloro.timing`), medians.

    .venv/bin/python benchmarks/allowance.py results/runs/fashion_mnist_2c2f_gloro/model.pt fashion-mnist \\
        [--subset 2000] [--epsilon 0.3] [--batch-size 1024] [--cifar-shaped]

`--cifar-shaped` pads 28×28 images to 32×32 and repeats them to 3 channels (the stand-in for CIFAR-10 that
the issue's 6C2F measurement uses).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from gloro.checkpoint import load
from gloro.data import Subset, load_dataset
from gloro.precision import exact_arithmetic
from gloro.timing import interleaved_rounds, median_ratio


def measure(path: str, dataset: str, subset: int | None, epsilon: float | None, batch_size: int, cifar: bool) -> dict:
    net = load(path)
    net.freeze()
    split = load_dataset(dataset, "test", subset=None if subset is None else Subset(subset, 0), progress=False)
    x = split.images.float() / net.metadata["input_divisor"]
    if cifar:
        x = F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    epsilon = net.eval_epsilon if epsilon is None else epsilon
    constants = net.sound_constants()
    batches = list(x.split(batch_size))
    with torch.no_grad(), exact_arithmetic():
        logits = [net.predict_clean(batch) for batch in batches]
        refined = torch.cat([constants.certify(b, y, epsilon).certified for b, y in zip(batches, logits)])
        box = torch.cat([constants.certifier(y, epsilon).certified for y in logits])
        naive = torch.cat([constants.unrounded(y, epsilon).certified for y in logits])

        def forward() -> None:
            for batch in batches:
                net.predict_clean(batch)

        def certify() -> None:
            for batch in batches:
                constants.certify(batch, net.predict_clean(batch), epsilon)

        seconds = interleaved_rounds({"forward": forward, "certify": certify}, min_seconds=2.0, min_rounds=5)
    correct = torch.cat([y.argmax(1) for y in logits]) == split.labels
    vra = {
        name: 100 * (correct & mask).double().mean().item()
        for name, mask in [("point", refined), ("box", box), ("ignoring", naive)]
    }
    return {
        "checkpoint": path,
        "epsilon": epsilon,
        "points": len(x),
        "vra_percent": vra,
        "refined_share": (naive & ~box).double().mean().item(),
        "certify_over_forward": median_ratio(seconds["certify"], seconds["forward"]),
        "forward_seconds_median": statistics.median(seconds["forward"]),
        "rounds": len(seconds["forward"]),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--subset", type=int, default=None, help="the first N test points, seeded (default: all)")
    parser.add_argument("--epsilon", type=float, default=None, help="default: the checkpoint's eval ε")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--cifar-shaped", action="store_true", help="pad to 32×32 and repeat to 3 channels")
    args = parser.parse_args()
    result = measure(args.checkpoint, args.dataset, args.subset, args.epsilon, args.batch_size, args.cifar_shaped)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
