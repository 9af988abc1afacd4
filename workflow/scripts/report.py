"""Rule `report`: aggregate every experiment's outputs into the declared tables and figures."""

import contextlib

from gloro.bench.report import write_report
from gloro.bench.run_files import ReportFiles, RunReports
from gloro.plugins import load_plugins

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    load_plugins(snakemake.config["plugins"])  # the config's own methods, layers, data sets, ...
    inputs = snakemake.input
    reports = {
        name: RunReports(train=train, history=history, certify=certify, attack=attack, bounds=bounds, steps=steps)
        for name, train, history, certify, attack, bounds, steps in zip(
            snakemake.params.experiments,
            inputs.train,
            inputs.history,
            inputs.certify,
            inputs.attack,
            inputs.bounds,
            inputs.steps,
            strict=True,
        )
    }
    outputs = ReportFiles(**{name: snakemake.output[name] for name in ReportFiles.standard_names()})
    write_report(reports, inputs.published, outputs, not_run=snakemake.params.not_run)
