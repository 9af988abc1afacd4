"""Rule `certify`: certify one trained experiment on its test split (gloro.bench.stages.certify_experiment)."""

import contextlib

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import resolve_device
from gloro.bench.run_files import CertifyFiles
from gloro.bench.stages import certify_experiment
from gloro.cpu_memory import keep_freed_memory
from gloro.plugins import load_plugins

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, layers, data sets, ...
    torch.set_num_threads(snakemake.threads)
    keep_freed_memory()  # reuse freed activations instead of page-faulting them in every step
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    evaluation = snakemake.params.evaluation
    files = CertifyFiles(
        model=snakemake.input.model,
        report=snakemake.output.report,
        radii=snakemake.output.radii,
        certificates=snakemake.output.certificates,
    )
    certify_experiment(
        experiment,
        files,
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
        radii=evaluation["radii"],
        batch_size=evaluation["batch_size"],
    )
