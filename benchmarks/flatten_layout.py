"""`gloro.train` epochs with and without `gloro.layout.matching_gradients`, interleaved, on `epochs.py`'s cases.

Training runs channels_last for conv nets. Without the layout hook the gradient comes back through the
Flatten row-major, and the ReLU before it runs its backward on mixed layouts; with it, the gradient keeps
the forward's layout. Each round trains both ways (the order alternating), and prints per side the median
seconds of the later epochs (the per-epoch certification is timed apart by `gloro.train`, not included)
and the ratio. Both sides train the same seeded net on the same data, so their losses agree to rounding.

    .venv/bin/python benchmarks/flatten_layout.py [--cases fashion-2c2f cifar-6c2f] [--rounds 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
from unittest import mock

from epochs import CASES, case_data, gloro_epochs  # beside this script
from interleaved import interleaved

import gloro.training
from gloro.cpu_memory import keep_freed_memory


@contextlib.contextmanager
def unhooked(model):
    yield 0


def epoch_seconds(case: str, data, args: argparse.Namespace, side: str) -> float:
    """The median seconds of the later epochs of one `gloro.train` run, with the hook ("matching") or without."""
    architecture, iterations, epsilon, _ = CASES[case]
    patch = mock.patch.object(gloro.training, "matching_gradients", unhooked) if side == "mixed" else None
    with patch or contextlib.nullcontext():
        run = gloro_epochs(architecture, iterations, epsilon, data, args.epochs, args.batch_size)
    return statistics.median(run["epoch_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    keep_freed_memory()
    report = {}
    for case in args.cases:
        data = case_data(CASES[case][3], None)
        seconds = interleaved(["matching", "mixed"], args.rounds, functools.partial(epoch_seconds, case, data, args))
        median = {side: statistics.median(values) for side, values in seconds.items()}
        report[case] = {
            "seconds_per_epoch": seconds,
            "median": median,
            "speedup": median["mixed"] / median["matching"],
            "per_round": [mixed / matching for mixed, matching in zip(seconds["mixed"], seconds["matching"])],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
