"""Aggregate every run into results/: the tables (CSV, Markdown, LaTeX) and the figures, written atomically."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from gloro.atomic import atomic_path, write_text
from gloro.bench.figures import plot_epoch_cost, plot_tightness, plot_training_curves, plot_vra_by_radius
from gloro.bench.run_files import ReportFiles, RunReports, stage_files
from gloro.bench.runs import read_run
from gloro.bench.tables import certification_cost, certifier_comparison, table1, vra_by_radius
from gloro.bench.views import (
    comparison_caption,
    comparison_view,
    cost_caption,
    cost_view,
    markdown_table,
    table1_caption,
    table1_view,
    with_footnotes,
)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


def write_report(
    reports: Mapping[str, RunReports | str | os.PathLike],
    published: str | os.PathLike,
    outputs: ReportFiles | str | os.PathLike,
    not_run: Mapping[str, Mapping] | None = None,
) -> None:
    """Every table and figure of `outputs` (or of the standard layout under a results folder) from each
    experiment's stage summaries (`reports`: experiment → its files, or its run folder); `not_run`
    experiments get Table 1 rows with the reason."""
    reports = {name: stage_files(RunReports, files) for name, files in reports.items()}
    outputs = stage_files(ReportFiles, outputs)
    rows, histories = zip(*(read_run(files) for files in reports.values()), strict=True)
    runs = pd.DataFrame(list(rows))
    write_csv(runs, outputs.runs)
    radius_table = vra_by_radius(reports)
    write_csv(radius_table, outputs.vra_by_radius)
    table = table1(runs, pd.read_csv(published), not_run)
    write_csv(table, outputs.table1)
    today = datetime.date.today().isoformat()
    (view, footnotes), caption = with_footnotes(table1_view(table)), table1_caption(runs, today)
    notes = [f"[{i}] {note}" for i, note in enumerate(footnotes, 1)]
    write_text(outputs.table1_md, markdown_table(view) + "".join(f"\n{line}\n" for line in [caption, *notes]))
    latex_caption = " ".join([caption, *notes])
    write_text(outputs.table1_tex, view.to_latex(index=False, na_rep="", caption=latex_caption, label="tab:table1"))
    comparison = certifier_comparison(reports)
    write_csv(comparison, outputs.comparison)
    comparison_md = markdown_table(comparison_view(comparison)) + "\n" + comparison_caption(runs, today) + "\n"
    write_text(outputs.comparison_md, comparison_md)
    cost = certification_cost(runs, reports)
    write_csv(cost, outputs.cost)
    write_text(outputs.cost_md, markdown_table(cost_view(cost)) + "\n" + cost_caption(runs, today, cost) + "\n")
    globally_certified = set(runs.loc[runs["certifier"] == "global", "experiment"])
    shown = radius_table[radius_table["experiment"].isin(globally_certified)]
    plot_vra_by_radius(shown, outputs.figure_stem("vra"), table[["experiment", "epsilon", "vra_reported"]])
    history = pd.concat(histories, ignore_index=True)
    best_epochs = dict(zip(runs["experiment"], runs["best_on_test_epoch"], strict=True))
    plot_training_curves(history, outputs.figure_stem("curves"), best_epochs)
    plot_epoch_cost(history, outputs.figure_stem("epoch_cost"))
    plot_tightness(reports, outputs.figure_stem("tightness"))
