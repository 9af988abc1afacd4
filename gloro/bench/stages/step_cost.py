"""The time_steps stage: the trained net's training step timed past the noise, beside its reference's."""

from __future__ import annotations

import os

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import provenance
from gloro.bench.results import StepCostResult
from gloro.bench.run_files import StepCostFiles, stage_files
from gloro.bench.stages.loading import load_for_evaluation, new_net
from gloro.step_cost import steady_cost


def step_cost_experiment(
    experiment: Experiment,
    files: StepCostFiles | str | os.PathLike,
    data: DataOptions,
    device: torch.device,
    reference: Experiment | None = None,
) -> StepCostResult:
    """Time the trained net's training step past the noise (`gloro.step_cost`: the seconds per epoch that Table 1
    prints), beside a fresh net of the `reference` experiment on the same batches and in the same rounds when
    one is given (its step costs the same whatever its weights; a baseline's does not, hence the trained net),
    and write the timings at `files`."""
    files = stage_files(StepCostFiles, files)
    train_split = data.load(experiment, "train")
    net, _ = load_for_evaluation(experiment, files.model, device)
    versus = None if reference is None else (reference.name, new_net(reference, train_split), reference.recipe())
    images, labels = train_split.float_images(), train_split.labels
    summary = StepCostResult(
        experiment=experiment.name,
        **steady_cost(net, experiment.recipe(), images, labels, device=device, reference=versus),
        provenance=provenance(device),
    )
    summary.write(files.report)
    return summary
