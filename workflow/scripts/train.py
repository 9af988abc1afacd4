"""Rule `train`: train one experiment (gloro.experiment.train_experiment)."""

import contextlib
from pathlib import Path

import torch

from gloro.experiment import DataOptions, Experiment, resolve_device, train_experiment

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    torch.set_num_threads(snakemake.threads)
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    train_experiment(
        experiment,
        Path(snakemake.output.model).parent,
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
    )
