"""Rule `time_steps`: time one trained experiment's training step beside its cost reference's
(gloro.bench.stages.step_cost_experiment)."""

import contextlib

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import resolve_device
from gloro.bench.run_files import StepCostFiles
from gloro.bench.stages import step_cost_experiment
from gloro.cpu_memory import keep_freed_memory
from gloro.plugins import load_plugins

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, layers, data sets, ...
    torch.set_num_threads(snakemake.threads)
    keep_freed_memory()  # as in training, whose steps these are
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    references = [Experiment.from_config(name, settings) for name, settings in snakemake.params.reference.items()]
    step_cost_experiment(
        experiment,
        StepCostFiles(model=snakemake.input.model, report=snakemake.output.report),
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
        reference=references[0] if references else None,
    )
