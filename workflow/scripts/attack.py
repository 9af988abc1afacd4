"""Rule `attack`: PGD accuracy and the soundness audit of one experiment (gloro.experiment.attack_experiment)."""

import contextlib

import torch

from gloro.cpu_memory import keep_freed_memory
from gloro.experiment import DataOptions, Experiment, attack_experiment, resolve_device
from gloro.plugins import load_plugins
from gloro.run_files import AttackFiles

with open(snakemake.log.main, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, certifiers and architectures
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
