"""The bounds stage: certifiers compared on the first test points, and the global bound's tightness."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.results import BoundsResult
from gloro.bench.run_files import BoundsFiles, stage_files
from gloro.bench.stages.loading import load_for_evaluation
from gloro.certify.compare import compare_supported
from gloro.tightness import global_tightness


def bounds_experiment(
    experiment: Experiment,
    files: BoundsFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    points: int,
    tightness_steps: int,
    tightness_pairs: int | None = None,
    certifiers: Sequence[str] = (),
) -> BoundsResult:
    """Certifiers compared on the first `points` test points, and the global bound's tightness.

    Writes `bounds.json`: under `certifiers`, one row per certifier (VRA, seconds per point, points certified
    beyond the global certificate) for the global certificate, which is the reference, the local Lipschitz
    bound, every one of `certifiers` and the experiment's own; under `tightness`, sound K_ij over an empirical
    lower bound (optimised input pairs started from those points).
    """
    files = stage_files(BoundsFiles, files)
    test_split = data.load(experiment, "test")
    net, epsilon_record = load_for_evaluation(experiment, files.model, device)
    net.freeze()
    images, labels = test_split.float_images()[:points], test_split.labels[:points]
    start = time.perf_counter()
    tightness = global_tightness(
        net, inputs=images, steps=tightness_steps, seed=experiment.seed, max_pairs=tightness_pairs
    )
    tightness.pop("pairs", None)
    middle = time.perf_counter()
    names = list(dict.fromkeys(["global", "local", *certifiers, *experiment.certifiers]))
    rows, unsupported = compare_supported(net, images, labels, net.eval_epsilon, names)
    for name, reason in unsupported.items():
        print(f"{experiment.name}: the {name} certifier is left out: {reason}", file=sys.stderr)
    seconds = {"tightness": middle - start, "certifiers": time.perf_counter() - middle}
    result = BoundsResult(
        certifiers=rows, unsupported=unsupported, tightness=tightness, seconds=seconds, **epsilon_record
    )
    result.write(files.report)
    return result
