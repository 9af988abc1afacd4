"""Rule `train`: train one experiment (gloro.bench.stages.train_experiment)."""

import contextlib

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import resolve_device
from gloro.bench.run_files import TrainFiles
from gloro.bench.stages import train_experiment
from gloro.cpu_memory import keep_freed_memory
from gloro.plugins import load_plugins

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, layers, data sets, ...
    torch.set_num_threads(snakemake.threads)
    keep_freed_memory()  # reuse freed activations instead of page-faulting them in every step
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    files = TrainFiles(
        model=snakemake.output.model,
        best_model=snakemake.output.best_model,
        history=snakemake.output.history,
        summary=snakemake.output.summary,
        scratch=snakemake.params.scratch,
        warmup=snakemake.params.warmup,
    )
    train_experiment(
        experiment,
        files,
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
    )
