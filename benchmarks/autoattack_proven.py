"""AutoAttack on the same points with and without `proven=`: the certified points counted robust unattacked.

The points come with the certify stage's `certificates.csv` (the run folder of `--checkpoint`); a point is
proven where a certificate certifies it with its label as the prediction. Both sides run the standard
ℓ2 AutoAttack at the pipeline's batch size, in turns, and print their seconds and robust accuracies, which
agree (certified points cannot be flipped) but for the random starts of the points attacked.

    .venv/bin/python benchmarks/autoattack_proven.py --checkpoint results/runs/<experiment>/model.pt
        [--dataset fashion-mnist] [--points 300] [--batch-size 1024] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from interleaved import interleaved  # beside this script
from trained_points import add_arguments, net_and_points

import gloro
from gloro.bench.stages import proven_robust, read_certificates
from gloro.cpu_memory import keep_freed_memory
from gloro.data.prepare import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, points=300)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not args.checkpoint:
        parser.error("--checkpoint is required: the certificates come from its run folder")
    keep_freed_memory()
    net, images, labels = net_and_points(args)
    net.freeze()
    certificates = read_certificates(Path(args.checkpoint).with_name("certificates.csv"), args.epsilon)
    every_label = load_dataset(args.dataset, "test", progress=False).labels  # certificates.csv covers them all
    proven = proven_robust(certificates, every_label)[: args.points]
    sides = {"proven skipped": proven, "all attacked": None}

    def measure(side: str) -> dict:
        start = time.perf_counter()
        report = gloro.autoattack_accuracy(
            net.model, images, labels, args.epsilon, batch_size=args.batch_size, progress=False, proven=sides[side]
        )
        return {
            "seconds": time.perf_counter() - start,
            "robust_accuracy": report.metrics["robust_accuracy"],
            "proven_not_attacked": report.metrics["proven_not_attacked"],
        }

    runs = interleaved(sides, args.rounds, measure)
    seconds = {side: min(run["seconds"] for run in values) for side, values in runs.items()}
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "points": args.points,
                "runs": runs,
                "speedup": seconds["all attacked"] / seconds["proven skipped"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
