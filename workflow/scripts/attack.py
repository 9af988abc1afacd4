"""Rule `attack`: PGD accuracy and the soundness audit of one experiment (gloro.bench.stages.attack_experiment)."""

import contextlib

import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.machine import resolve_device
from gloro.bench.run_files import AttackFiles
from gloro.bench.stages import attack_experiment
from gloro.cpu_memory import keep_freed_memory
from gloro.plugins import load_plugins

with open(snakemake.log.main, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, layers, data sets, ...
    torch.set_num_threads(snakemake.threads)
    keep_freed_memory()  # reuse freed activations instead of page-faulting them in every step
    experiment = Experiment.from_config(snakemake.wildcards.experiment, snakemake.params.settings)
    files = AttackFiles(
        model=snakemake.input.model,
        certificates=snakemake.input.certificates,
        report=snakemake.output.report,
        violations=snakemake.log.violations,
    )
    attack_experiment(
        experiment,
        files,
        DataOptions(**snakemake.params.data),
        resolve_device(snakemake.params.device),
        pgd=snakemake.params.evaluation["pgd"],
        autoattack=snakemake.params.evaluation["autoattack"],
        batch_size=snakemake.params.evaluation["batch_size"],
    )
