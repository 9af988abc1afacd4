"""Does the per-epoch certificate slow the training epochs that follow it? Trains the default config's digits
2C2F GloRo net with and without per-epoch evaluation, and with SciPy's BLAS on torch's thread count for every
call (the setting before `gloro.eigen.blas_threads`), and prints each run's median later epoch.

    python benchmarks/epochs_after_evaluation.py [--epochs 40] [--repeats 2]

Each case runs in its own process, the cases interleaved, so that they share the machine's moments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "evaluated every epoch": ("eval", False),
    "evaluated, BLAS on torch's threads for every call": ("eval", True),
    "no evaluation": ("plain", False),
}


def one_run(evaluate: bool, all_threads: bool, epochs: int) -> list[float]:
    """Train in this process; the seconds of each later epoch."""
    import dataclasses

    import yaml

    import gloro.eigen
    from gloro.bench.experiment import DataOptions, Experiment
    from gloro.bench.stages import new_net
    from gloro.cpu_memory import keep_freed_memory
    from gloro.training import train

    keep_freed_memory()  # as the pipeline's training job
    if all_threads:
        gloro.eigen.PARALLEL_MIN_FLOPS = 0.0
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiment = Experiment.from_config("digits_2c2f_gloro", config["experiments"]["digits_2c2f_gloro"])
    data = DataOptions(cache_dir=str(ROOT / "resources" / "data"))
    split, test = data.load(experiment, "train"), data.load(experiment, "test")
    recipe = dataclasses.replace(experiment.recipe(), epochs=epochs)
    evaluation = {"eval_images": test.float_images(), "eval_labels": test.labels} if evaluate else {}
    history = train(
        new_net(experiment, split), split.float_images(), split.labels, recipe, progress=False, **evaluation
    )
    return [row["seconds"] for row in history[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, all_threads = args.child
        print(json.dumps(one_run(mode == "eval", all_threads == "1", args.epochs)))
        return
    medians: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, (mode, all_threads) in CASES.items():
            command = [sys.executable, __file__, "--epochs", str(args.epochs), "--child", mode, str(int(all_threads))]
            seconds = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            medians[name].append(statistics.median(seconds))
    for name, values in medians.items():
        print(f"{name:52s} median later epoch: {', '.join(f'{v:.3f}' for v in values)} s")


if __name__ == "__main__":
    main()
