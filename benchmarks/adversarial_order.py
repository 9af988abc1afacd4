"""How much of a point's rounding allowance a legal float32 summation order really takes (issue 28).

For each point: the widest layer (the Linear with the most inputs) is computed in the order
`gloro.rounding_attack.adversarial_linear` picks to shrink the margin to the runner-up class, the rest of the
net as PyTorch computes it; the margin's error against a float64 evaluation is set beside the error of
PyTorch's own order and beside b(x, 0), the allowance the point's certificate subtracts for any order.

    .venv/bin/python benchmarks/adversarial_order.py --minmax-init [--points 64]
    .venv/bin/python benchmarks/adversarial_order.py --checkpoint model.pt --dataset fashion-mnist [--cifar-shaped]

`--minmax-init` takes a CIFAR-shaped 6C2F with MinMax at its default initialisation on uniform random images:
issue 28 asks that such a net certify at ε = 0 every point whose float64 margin exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

import gloro
from gloro.checkpoint import load
from gloro.data import Subset, load_dataset
from gloro.rounding_attack import attack_margins


def minmax_net(seed: int) -> gloro.GloroNet:
    model = gloro.create_model("6C2F", (3, 32, 32), 10, activation="minmax", seed=seed)
    return gloro.GloroNet(model, epsilon=36 / 255)


def points(args: argparse.Namespace, net: gloro.GloroNet) -> torch.Tensor:
    if args.dataset is None:
        return torch.rand(args.points, *net.input_shape, generator=torch.Generator().manual_seed(args.seed))
    split = load_dataset(args.dataset, "test", subset=Subset(args.points, 0), progress=False)
    x = split.images.float() / net.metadata["input_divisor"]
    return F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1) if args.cifar_shaped else x


@torch.no_grad()
def measure(net: gloro.GloroNet, x: torch.Tensor) -> list[dict]:
    rounding = net.sound_constants().rounding
    top = net.predict_clean(x).argmax(1)
    bound = rounding.ball_pairs(x, torch.zeros(len(x), dtype=torch.float64), top)
    return [
        {
            "float64_margin": row.exact,
            "pytorch_order_error": row.computed_error,
            "adversarial_error": row.attacked_error,
            "allowance_b": float(bound[i, row.runner_up]),
            "flipped": row.attacked < 0,
        }
        for i, row in enumerate(attack_margins(net, x))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--dataset", help="with --checkpoint: its data set's test split (default: random images)")
    parser.add_argument("--cifar-shaped", action="store_true", help="pad to 32×32 and repeat to 3 channels")
    parser.add_argument("--minmax-init", action="store_true", help="a MinMax 6C2F at its default initialisation")
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.minmax_init == (args.checkpoint is not None):
        parser.error("give exactly one of --checkpoint and --minmax-init")
    net = minmax_net(args.seed) if args.minmax_init else load(args.checkpoint)
    net.freeze()
    rows = measure(net, points(args, net))
    ratios = [r["adversarial_error"] / r["allowance_b"] for r in rows]
    summary = {
        "points": len(rows),
        "median_pytorch_order_error": statistics.median(r["pytorch_order_error"] for r in rows),
        "median_adversarial_error": statistics.median(r["adversarial_error"] for r in rows),
        "median_allowance_b": statistics.median(r["allowance_b"] for r in rows),
        "adversarial_over_allowance": {"median": statistics.median(ratios), "max": max(ratios)},
        "flipped_with_float64_margin_over_1e-4": sum(r["flipped"] and r["float64_margin"] > 1e-4 for r in rows),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
