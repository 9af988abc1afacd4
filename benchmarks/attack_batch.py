"""PGD's cost per image at several batch sizes: the same points, the same checkpoint, interleaved.

`evaluation.batch_size` sets how many points an attack takes at a time. On a CPU a larger batch amortises
each step's fixed costs (calls into oneDNN, autograd bookkeeping, torchattacks' Python loop). The robust
accuracy at each size is printed beside its time: the random starts fall differently with the batches, so
it may move by a few points in 10,000, never systematically.
Without `--checkpoint`, a 2C2F with its initial weights stands in.

    .venv/bin/python benchmarks/attack_batch.py [--checkpoint results/runs/<experiment>/model.pt]
        [--dataset fashion-mnist] [--points 2048] [--steps 20] [--restarts 2] [--batch-sizes 256 512 1024]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gloro
from gloro.checkpoint import load
from gloro.data.registry import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    gloro.keep_freed_memory()
    if args.checkpoint:
        net = load(args.checkpoint)
    else:
        net = gloro.GloroNet(gloro.create_model("2C2F", (1, 28, 28), 10), args.epsilon)
    net.freeze()
    test = load_dataset(args.dataset, "test", progress=False)
    images, labels = test.float_images()[: args.points], test.labels[: args.points]
    seconds: dict[int, list[float]] = {size: [] for size in args.batch_sizes}
    accuracy: dict[int, float] = {}
    order = list(args.batch_sizes)
    for _ in range(args.rounds):
        for size in order:
            start = time.perf_counter()
            report = gloro.pgd_accuracy(
                net.model,
                images,
                labels,
                args.epsilon,
                steps=args.steps,
                restarts=args.restarts,
                batch_size=size,
                progress=False,
            )
            seconds[size].append(time.perf_counter() - start)
            accuracy[size] = report.metrics["robust_accuracy"]
        order.reverse()  # each size goes first and last in turn
    smallest = args.batch_sizes[0]
    median = {size: statistics.median(values) for size, values in seconds.items()}
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "points": args.points,
                "steps": args.steps,
                "restarts": args.restarts,
                "seconds": seconds,
                "median_seconds": median,
                f"speedup_over_{smallest}": {size: median[smallest] / median[size] for size in median},
                "robust_accuracy": accuracy,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
