"""Rule `attack`: PGD accuracy and the soundness audit of one experiment (gloro.experiment.attack_experiment)."""

import contextlib
from pathlib import Path

import torch

from gloro.experiment import DataOptions, Experiment, attack_experiment, resolve_device

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    torch.set_num_threads(snakemake.threads)
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    attack_experiment(
        experiment,
        Path(snakemake.output.report).parent,
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
        pgd=snakemake.params.evaluation["pgd"],
    )
