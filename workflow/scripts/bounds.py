"""Rule `bounds`: local vs global certification and bound tightness (gloro.bench.stages.bounds_experiment)."""

import contextlib

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import resolve_device
from gloro.bench.run_files import BoundsFiles
from gloro.bench.stages import bounds_experiment
from gloro.cpu_memory import keep_freed_memory
from gloro.plugins import load_plugins

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, layers, data sets, ...
    torch.set_num_threads(snakemake.threads)
    keep_freed_memory()  # reuse freed activations instead of page-faulting them in every step
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    evaluation = snakemake.params.evaluation
    bounds_experiment(
        experiment,
        BoundsFiles(model=snakemake.input.model, report=snakemake.output.report),
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
        points=evaluation["local_points"],
        tightness_steps=evaluation["tightness_steps"],
        tightness_pairs=evaluation["tightness_pairs"],
        certifiers=evaluation["compare_certifiers"],
    )
