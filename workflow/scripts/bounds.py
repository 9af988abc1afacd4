"""Rule `bounds`: local vs global certification and bound tightness (gloro.experiment.bounds_experiment)."""

import contextlib
from pathlib import Path

import torch

from gloro.experiment import DataOptions, Experiment, bounds_experiment, resolve_device

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    torch.set_num_threads(snakemake.threads)
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    evaluation = snakemake.params.evaluation
    bounds_experiment(
        experiment,
        Path(snakemake.output.report).parent,
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
        points=evaluation["local_points"],
        tightness_steps=evaluation["tightness_steps"],
        tightness_pairs=evaluation["tightness_pairs"],
    )
