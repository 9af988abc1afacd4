"""Rule `report`: aggregate every experiment's outputs into results/tables and results/figures."""

import contextlib
from pathlib import Path

from gloro.report import write_report

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    write_report(
        experiments=snakemake.params.experiments,
        run_dirs=[Path(p).parent for p in snakemake.input.train],
        published=snakemake.input.published,
        tables_dir=Path(snakemake.output.runs).parent,
        figures_dir=Path(snakemake.output.vra_png).parent,
        not_run=snakemake.params.not_run,
    )
