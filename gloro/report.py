"""Aggregate experiments into the tidy tables and figures of results/: runs, VRA by radius, Table 1.

Every table is a view of the per-run outputs (train.json, history.csv, certify.json, attack.json); the
authors' numbers come from one file with a source column (workflow/resources/published.csv), and a cell
the project cannot source stays empty.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from gloro.atomic import atomic_path, write_text
from gloro.evaluate import radius_label
from gloro.methods import COST_REFERENCE, get_method, methods, table_labels
from gloro.run_files import ReportFiles, RunReports, stage_files
from gloro.step_cost import ROUND_SECONDS, ROUNDS

TABLE1_METRICS = ("clean", "pgd", "vra")
UNSTEADY_LOW, UNSTEADY_HIGH = 0.85, 1.15  # a cost ratio whose spread leaves ±15% is not printed as one number


def read_run(files: RunReports) -> tuple[dict, pd.DataFrame]:
    """One experiment's row of runs.csv and its per-epoch history."""
    train = json.loads(files.train.read_text())
    certify = json.loads(files.certify.read_text())
    attack = json.loads(files.attack.read_text())
    history = pd.read_csv(files.history)
    experiment, cost, best = train["experiment"], train["cost"], train["best_on_test"] or {}
    steps = json.loads(files.steps.read_text()) if files.steps.is_file() else {}  # older run folders lack it
    reference = steps.get("reference") or {}
    training_epoch = cost.get("later_epochs_median_seconds") or cost["later_epochs_mean_seconds"]
    audit, audits, certified = attack["audit"], attack["audits"], certify["global"]
    method = get_method(experiment["method"])
    row = {
        "experiment": experiment["name"],
        "dataset": experiment["dataset"],
        "architecture": experiment["architecture"],
        "activation": experiment["activation"],
        "method": method.label(experiment["loss"]),
        "certifier": certify["certifier"],
        "train_epsilon": json.dumps(experiment["train_epsilon"]),
        "eval_epsilon": experiment["eval_epsilon"],
        "epochs": experiment["epochs"],
        "batch_size": experiment["batch_size"],
        "power_iterations": experiment["power_iterations"],
        "augmentation": experiment["augmentation"],
        "seed": experiment["seed"],
        "subset": json.dumps(experiment["subset"]),
        "clean_accuracy": certify["clean_accuracy"],
        "vra": certify["vra"],
        "rejection_rate": certify["rejection_rate"],
        "pgd_accuracy": attack["pgd_accuracy"],
        "autoattack_accuracy": attack.get("autoattack_accuracy"),
        "autoattack_points": attack.get("autoattack_points"),
        "autoattack_proven_not_attacked": attack.get("autoattack_proven_not_attacked"),
        "pgd_accuracy_on_autoattack_points": attack.get("pgd_accuracy_on_autoattack_points"),
        "test_examples": certify["num_examples"],
        "cert_sec_per_point": certify["sec_per_point"],
        "audited_points": audit["certified"],
        "soundness_violations": sum(a["violations"] for a in audits.values()),
        "audited_certifiers": ",".join(audits),
        "best_on_test_epoch": best.get("epoch"),
        "best_on_test_vra": best.get("vra"),
        "best_on_test_clean_accuracy": best.get("clean_accuracy"),
        "first_epoch_sec": cost["first_epoch_seconds"],
        # the training step timed past the noise (steps.json); where a run folder lacks it, training's median
        # later epoch (older runs: the mean)
        "sec_per_epoch": steps.get("seconds_per_epoch") or training_epoch or cost["first_epoch_seconds"],
        "sec_per_epoch_min": steps.get("seconds_per_epoch_min"),
        "sec_per_epoch_max": steps.get("seconds_per_epoch_max"),
        "sec_per_epoch_in_training": training_epoch,
        "time_ratio_reference": reference.get("experiment"),
        "reference_time_ratio": reference.get("time_ratio"),
        "reference_time_ratio_low": reference.get("time_ratio_low"),
        "reference_time_ratio_high": reference.get("time_ratio_high"),
        "train_examples": train["data"]["examples"],
        "train_images_per_second": cost["later_epochs_images_per_second"],
        "peak_mem_mb": cost["peak_mem_mb"],
        "peak_mem_source": cost["peak_mem_source"],
        "global_vra": certified["vra"],
        "global_vra_ignoring_rounding": certified.get("vra_ignoring_rounding"),
        "global_vra_box_allowance": certified.get("vra_box_allowance"),
        "rounding_offset_max": certified.get("rounding_offset_max"),
        "lipschitz_power_iteration": certified["lipschitz_power_iteration"],
        "lipschitz_sound": certified["lipschitz_sound"],
        "lipschitz_sound_over_power": certified["lipschitz_ratio"],
        "forward_points_per_second": certified["forward_points_per_second"],
        "certify_points_per_second": certified["certify_points_per_second"],
        "certify_slowdown": certified.get("certify_slowdown"),  # median of the rounds' certify ÷ forward time
        "certify_slowdown_q1": certified.get("certify_slowdown_q1"),  # and its quartiles over the rounds
        "certify_slowdown_q3": certified.get("certify_slowdown_q3"),
        **{f"vra_{c['certifier']}": c["vra"] for c in certify["certificates"]},
        **{f"sec_per_point_{c['certifier']}": c["sec_per_point"] for c in certify["certificates"]},
        "method_settings": json.dumps(train["method"]["recipe"], sort_keys=True),
        **train["provenance"],
        "train_data_checksums": json.dumps(train["data"].get("sources", [])),
        "attack_settings": json.dumps(attack["attack_settings"], sort_keys=True),
    }
    return row, history.assign(experiment=experiment["name"])


def vra_by_radius(reports: Mapping[str, RunReports]) -> pd.DataFrame:
    """Long table (experiment, certifier, radius, vra): the global certificate's VRA at each radius, from one
    pass (KW and BCP decide one ε at a time, so their nets appear here by the global bound)."""
    rows = []
    for name, files in reports.items():
        certify = json.loads(files.certify.read_text())
        rows += [
            {"experiment": name, "certifier": "global", "radius": r["radius"], "vra": r["vra"]}
            for r in certify["global"]["vra_at_radii"]
        ]
    return pd.DataFrame(rows, columns=["experiment", "certifier", "radius", "vra"])


def certification_cost(runs: pd.DataFrame, reports: Mapping[str, RunReports]) -> pd.DataFrame:
    """Global vs local certification (VRA, seconds per point, on the same test points) and certification vs
    plain inference throughput, one row per experiment."""
    rows = []
    for _, run in runs.iterrows():
        bounds = json.loads(reports[run["experiment"]].bounds.read_text())
        compared = {row["certifier"]: row for row in bounds["certifiers"]}
        globally, local = compared["global"], compared["local"]  # bounds_experiment always runs both
        rows.append(
            {
                "experiment": run["experiment"],
                "eval_epsilon": run["eval_epsilon"],
                "points": local["num_points"],
                "vra_global": globally["vra"],
                "vra_local": local["vra"],
                "certified_local_only": local["certified_not_by_first"],
                "sec_per_point_global": globally["sec_per_point"],
                "sec_per_point_local": local["sec_per_point"],
                "local_over_global_time": local["time_over_first"],  # global is first: timed side by side
                "local_over_global_time_low": local.get("time_over_first_q1"),
                "local_over_global_time_high": local.get("time_over_first_q3"),
                "forward_points_per_second": run["forward_points_per_second"],
                "certify_points_per_second": run["certify_points_per_second"],
                "certify_over_forward_throughput": throughput_ratio(run),
                "certify_over_forward_throughput_low": inverse(run.get("certify_slowdown_q3")),
                "certify_over_forward_throughput_high": inverse(run.get("certify_slowdown_q1")),
            }
        )
    return pd.DataFrame(rows)


def throughput_ratio(run: pd.Series) -> float:
    """Certify ÷ forward throughput: the inverse of the median round's slowdown, both sides timed in the same
    rounds; the ratio of the two rates for a run folder written before the rounds' ratio was kept."""
    slowdown = run.get("certify_slowdown")
    if slowdown is not None and not pd.isna(slowdown) and slowdown > 0:
        return 1 / slowdown
    return run["certify_points_per_second"] / run["forward_points_per_second"]


def inverse(value) -> float | None:
    """1 ÷ value, None where it is missing (a run folder written before it was recorded) or not positive."""
    return None if value is None or pd.isna(value) or value <= 0 else 1 / value


def certifier_comparison(reports: Mapping[str, RunReports]) -> pd.DataFrame:
    """Long table: every compared certifier of every run on the same test points (bounds.json `certifiers`)."""
    rows = []
    for name, files in reports.items():
        for row in json.loads(files.bounds.read_text())["certifiers"]:
            rows.append({"experiment": name, **row})
    return pd.DataFrame(rows)


def comparison_view(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a reader wants it: VRA in percent to one decimal, milliseconds to two digits."""
    return pd.DataFrame(
        {
            "Experiment": table["experiment"],
            "Certifier": table["certifier"],
            "ε": [radius_label(e) for e in table["epsilon"]],
            "Points": table["num_points"],
            "VRA %": [f"{100 * v:.1f}" for v in table["vra"]],
            "Certified beyond the first": table["certified_not_by_first"],
            "ms/point": [significant(1000 * v) for v in table["sec_per_point"]],
            "Time ÷ first": [f"{significant(v)}×" for v in table["time_over_first"]],
        }
    )


def table1(runs: pd.DataFrame, published: pd.DataFrame, not_run: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """The paper's Table 1, every row measured in this run: one row per setting (data set, ε, architecture)
    and method, with clean / PGD / VRA in percent (VRA by the method's own certifier), seconds per epoch,
    peak memory and certification time per point; beside each accuracy the published number, its source
    and the difference. On KW and BCP rows, GloRo's training seconds per image and peak memory as a ratio to
    that row's (the paper's cost claim, measured on one machine). A published baseline with no run in the
    config gets a row that says so, and so does each experiment in `not_run` (name → config entry, with
    its `not_run` reason)."""
    published = published.assign(
        method=published["method"].map(published_labels()), eps_key=published["epsilon"].round(3)
    )
    rows = []
    settings: dict[tuple, dict] = {}
    for _, run in runs.iterrows():
        key = (run["dataset"], round(float(run["eval_epsilon"]), 3), run["architecture"])
        settings.setdefault(key, {}).setdefault(run["method"], run)
        row = {
            "dataset": run["dataset"],
            "epsilon": run["eval_epsilon"],
            "architecture": run["architecture"],
            "method": run["method"],
            "experiment": run["experiment"],
            "certifier": run["certifier"],
        }
        values = {"clean": run["clean_accuracy"], "pgd": run["pgd_accuracy"], "vra": run["vra"]}
        for metric in TABLE1_METRICS:
            match = published_cell(published, key, run["method"], metric)
            ours = 100 * float(values[metric])
            row[metric] = ours
            row[f"{metric}_reported"] = match["value_percent"] if match is not None else None
            row[f"{metric}_source"] = match["source"] if match is not None else None
            row[f"{metric}_diff"] = ours - match["value_percent"] if match is not None else None
        autoattack = run.get("autoattack_accuracy")
        row["autoattack"] = None if autoattack is None or pd.isna(autoattack) else 100 * float(autoattack)
        row["autoattack_note"] = autoattack_note(run) if row["autoattack"] is not None else None
        row["sec_per_epoch"] = float(run["sec_per_epoch"])
        row["sec_per_epoch_min"], row["sec_per_epoch_max"] = run.get("sec_per_epoch_min"), run.get("sec_per_epoch_max")
        # GloRo's training time over this row's: both steps timed on the same batches in this row's job
        for suffix in ("", "_low", "_high"):
            row[f"gloro_time_ratio{suffix}"] = number_or_none(run.get(f"reference_time_ratio{suffix}"))
        row["train_examples"] = int(run["train_examples"])
        row["peak_mem_mb"] = run["peak_mem_mb"]
        row["peak_mem_source"] = run["peak_mem_source"]
        row["cert_ms_per_point"] = 1000 * float(run["cert_sec_per_point"])
        ignoring = run.get("global_vra_ignoring_rounding")
        measured_cost = ignoring is not None and not pd.isna(ignoring)
        row["rounding_cost"] = 100 * (float(ignoring) - float(run["global_vra"])) if measured_cost else None
        rows.append(row)
    for row in rows:
        gloro = settings[(row["dataset"], round(float(row["epsilon"]), 3), row["architecture"])].get(COST_REFERENCE)
        measured = row["method"] != COST_REFERENCE and gloro is not None
        row["gloro_mem_ratio"] = float(gloro["peak_mem_mb"]) / float(row["peak_mem_mb"]) if measured else None
        row["note"] = row.pop("autoattack_note")
    planned = set()
    for name, entry in (not_run or {}).items():
        method = get_method(entry.get("method", "gloro"))
        label = method.label(entry.get("loss") or method.losses[0])
        key = (entry["dataset"], round(float(entry["eval_epsilon"]), 3), entry["architecture"])
        planned.add((key, label))
        note = f"not run: {entry['not_run']}"
        rows.append(unmeasured_row(published, key, entry["eval_epsilon"], label, note) | {"experiment": name})
    for key in sorted(settings):
        for method in baseline_labels():
            if method in settings[key] or (key, method) in planned:
                continue
            if all(published_cell(published, key, method, metric) is None for metric in TABLE1_METRICS):
                continue
            note = f"no {method} experiment at this setting in the config: published numbers only"
            rows.append(unmeasured_row(published, key, key[1], method, note))
    order = {label: position for position, label in enumerate(table_labels())}
    rows.sort(
        key=lambda row: (
            row["dataset"],
            round(float(row["epsilon"]), 3),
            row["architecture"],
            order.get(row["method"], len(order)),  # a label no registered method gives (an older run's): last
            row["method"],
        )
    )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def published_labels() -> dict[str, str]:
    """workflow/resources/published.csv's method keys (gloro, gloro_trades, kw, bcp) → table labels."""
    return {
        get_method(name).published_key(loss): get_method(name).label(loss)
        for name in methods()
        for loss in get_method(name).losses
    }


def baseline_labels() -> tuple[str, ...]:
    """The labels of every method but the cost reference's (KW, BCP): where the config runs none of them at a
    setting with published numbers, Table 1 adds a row with those numbers alone."""
    own = next(get_method(name).labels for name in methods() if COST_REFERENCE in get_method(name).labels)
    return tuple(label for label in table_labels() if label not in own)


def number_or_none(value) -> float | None:
    """A float, or None for a missing or NaN cell."""
    return None if value is None or pd.isna(value) else float(value)


def unmeasured_row(published: pd.DataFrame, key: tuple, epsilon: float, method: str, note: str) -> dict:
    """A Table 1 row with no measurement: the published numbers at the setting, and why nothing was measured."""
    row = {"dataset": key[0], "epsilon": epsilon, "architecture": key[2], "method": method, "note": note}
    for metric in TABLE1_METRICS:
        cell = published_cell(published, key, method, metric)
        row[metric] = row[f"{metric}_diff"] = None
        row[f"{metric}_reported"] = cell["value_percent"] if cell is not None else None
        row[f"{metric}_source"] = cell["source"] if cell is not None else None
    return row


TABLE1_COLUMNS = [
    "dataset",
    "epsilon",
    "architecture",
    "method",
    "experiment",
    "certifier",
    *(f"{metric}{suffix}" for metric in TABLE1_METRICS for suffix in ("", "_reported", "_source", "_diff")),
    "autoattack",  # ℓ2 AutoAttack accuracy in percent, where the run measured it (evaluation.autoattack)
    "sec_per_epoch",  # the median later epoch
    "sec_per_epoch_min",  # the fastest later epoch (None with fewer than two)
    "sec_per_epoch_max",  # the slowest
    "train_examples",
    "peak_mem_mb",
    "peak_mem_source",
    "cert_ms_per_point",
    "rounding_cost",  # points of the global certificate's VRA given up to the rounding allowance
    "gloro_time_ratio",
    "gloro_time_ratio_low",  # the ratio's spread with the epochs each side took; see ratio_range
    "gloro_time_ratio_high",
    "gloro_mem_ratio",
    "note",
]


def cost_view(table: pd.DataFrame) -> pd.DataFrame:
    """The certification cost as a reader wants it: VRA in percent, milliseconds and thousands of points
    per second to two significant digits, ratios as 1.0×."""
    return pd.DataFrame(
        {
            "Experiment": table["experiment"],
            "ε": [radius_label(e) for e in table["eval_epsilon"]],
            "Points": table["points"],
            "VRA % global": [f"{100 * v:.1f}" for v in table["vra_global"]],
            "VRA % local": [f"{100 * v:.1f}" for v in table["vra_local"]],
            "Only local": table["certified_local_only"],
            "Global ms/point†": [significant(1000 * v) for v in table["sec_per_point_global"]],
            "Local ms/point†": [significant(1000 * v) for v in table["sec_per_point_local"]],
            "Local ÷ global": spread_cells(table, "local_over_global_time"),
            "Forward k points/s†": [significant(v / 1000) for v in table["forward_points_per_second"]],
            "Certify k points/s†": [significant(v / 1000) for v in table["certify_points_per_second"]],
            "Certify ÷ forward": spread_cells(table, "certify_over_forward_throughput"),
        }
    )


def spread_cell(value, low, high) -> str:
    """A ratio with its spread over timed rounds ('0.25× (0.24–0.26×)'), or 'unsteady: low–high×' where the
    spread leaves ±15% of it: the job was too short or too disturbed to measure it as one number."""
    if value is None or pd.isna(value):
        return ""
    if any(v is None or pd.isna(v) for v in (low, high)):
        return f"{significant(value)}×"
    text = f"{significant(low)}–{significant(high)}×"
    if low < UNSTEADY_LOW * value or high > UNSTEADY_HIGH * value:
        return f"unsteady: {text}"
    return f"{significant(value)}× ({text})"


def spread_cells(table: pd.DataFrame, column: str) -> list[str]:
    """`spread_cell` for each row of `column`, its spread from `<column>_low` and `_high` where present."""
    low = table.get(f"{column}_low", pd.Series([None] * len(table), index=table.index))
    high = table.get(f"{column}_high", pd.Series([None] * len(table), index=table.index))
    return [spread_cell(v, lo, hi) for v, lo, hi in zip(table[column], low, high, strict=True)]


def significant(value: float, digits: int = 2) -> str:
    """`value` to `digits` significant digits, without exponents (0.0042, 1.3, 57, 690)."""
    if value is None or pd.isna(value):
        return ""
    if value == 0:
        return "0"
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    exponent = math.floor(math.log10(abs(rounded)))  # 0.999 rounds to 1.0: one digit fewer after the point
    return f"{rounded:.{max(digits - 1 - exponent, 0)}f}"


def autoattack_note(run: Mapping) -> str | None:
    """When AutoAttack covered only the first test points, say so, with PGD's accuracy on those same points:
    the two columns are then over different points and must not be compared directly."""
    points, total = run.get("autoattack_points"), run.get("test_examples")
    if points is None or pd.isna(points) or total is None or pd.isna(total) or int(points) >= int(total):
        return None
    same = run.get("pgd_accuracy_on_autoattack_points")
    pgd = "" if same is None or pd.isna(same) else f" (PGD on those points: {100 * float(same):.1f}%)"
    return f"AutoAttack on the first {int(points):,} of {int(total):,} test points{pgd}"


def table1_view(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as a paper prints it: accuracies in percent to one decimal with the published number in
    parentheses, seconds to two significant digits, MB as integers, ratios as 0.12×."""

    def percent(row, metric):
        ours, reported = row[metric], row[f"{metric}_reported"]
        text = "–" if pd.isna(ours) else f"{ours:.1f}"
        return text if pd.isna(reported) else f"{text} ({reported:.1f})"

    def ratio(value):
        return "" if value is None or pd.isna(value) else f"{significant(value)}×"

    view = pd.DataFrame(
        {
            "Data set": table["dataset"],
            "ε": [radius_label(e) for e in table["epsilon"]],
            "Arch.": table["architecture"],
            "Method": table["method"],
            "Clean %": [percent(row, "clean") for _, row in table.iterrows()],
            "PGD %": [percent(row, "pgd") for _, row in table.iterrows()],
            "AutoAttack %": ["" if pd.isna(v) else f"{v:.1f}" for v in table["autoattack"]],
            "VRA %": [percent(row, "vra") for _, row in table.iterrows()],
            "s/epoch†": [significant(v) for v in table["sec_per_epoch"]],
            "Peak MB": ["" if pd.isna(v) else f"{v:.0f}" for v in table["peak_mem_mb"]],
            "Cert. ms/point†": [significant(v) for v in table["cert_ms_per_point"]],
            "Rounding pts": ["" if pd.isna(v) else f"{v:.2f}" for v in table["rounding_cost"]],
            "GloRo time ÷ this": [
                spread_cell(*values) for values in zip(*(table[f"gloro_time_ratio{e}"] for e in ("", "_low", "_high")))
            ],
            "GloRo memory ÷ this": [ratio(v) for v in table["gloro_mem_ratio"]],
            "Note": ["" if pd.isna(v) else v for v in table["note"]],
        }
    )
    if (view["AutoAttack %"] == "").all():  # not measured in this run: no empty column
        view = view.drop(columns="AutoAttack %")
    return view


def measured_on(runs: pd.DataFrame, date: str) -> str:
    """'2026-12-01 on AMD EPYC, AVX512, 2 threads, torch 2.13.0+cpu': when and where a run's numbers were measured."""
    devices = "; ".join(sorted(set(runs["device_name"])))
    return f"{date} on {devices}, torch {runs['torch_version'].iloc[0]}"


MACHINE_TIMES = (
    "† a time or rate of this machine during the job, which its load moves: on a shared 2-core host, two make "
    "runs in a row moved such cells by up to 1.7× (benchmarks/README.md); compare methods and runs by the ratios, "
    "each timed within one job"
)


def cost_caption(runs: pd.DataFrame, date: str) -> str:
    """The line under the certification-cost table: when and where, and what its columns compare."""
    return (
        f"Certification cost, measured {measured_on(runs, date)}: the global and local certificates on the same "
        "test points (local: per-point Lipschitz bounds; only local: points it certifies and the global one does "
        "not), and throughput over the whole test split, certifying (forward pass and certificate) against the "
        "plain forward pass of the same batches, in interleaved rounds; global and local timed side by side on the "
        "same points (certify ÷ forward and local ÷ global: the median of the rounds' ratios, the middle half of "
        f"them in parentheses, 'unsteady' where those leave ±15%); {MACHINE_TIMES}."
    )


def comparison_caption(runs: pd.DataFrame, date: str) -> str:
    """The line under the certifier comparison: when and where, and which row the ratios refer to."""
    return (
        f"Certifiers compared on the same test points, measured {measured_on(runs, date)}; the first of each "
        "experiment is the reference for the last two columns."
    )


def with_footnotes(view: pd.DataFrame, column: str = "Note", longest: int = 30) -> tuple[pd.DataFrame, list[str]]:
    """Notes longer than `longest` characters replaced by numbered references (a paper's table stays narrow)
    and the footnotes they refer to, in order."""
    footnotes: list[str] = []

    def short(note: str) -> str:
        if len(note) <= longest:
            return note
        footnotes.append(note)
        head = note.split(":", 1)[0] if ":" in note[:longest] else "see"
        return f"{head} [{len(footnotes)}]"

    return view.assign(**{column: [short(note) for note in view[column]]}), footnotes


def table1_caption(runs: pd.DataFrame, date: str) -> str:
    """One line under the table: where and when it was measured, and what the parentheses and ratios mean."""
    sources = "published numbers in parentheses (sources in table1.csv)"
    memory = "peak memory: CUDA max allocated on a GPU, the job's peak RSS on the CPU"
    seconds = (
        "s/epoch: the trained net's training step timed after training, alone on the job's cores, repeated past "
        f"{ROUND_SECONDS:g} s a round over {ROUNDS} rounds, median round, times the training set's size"
    )
    ratios = (
        "time ratio: GloRo's step over this row's per training image, both timed on the same batches in "
        "interleaved rounds of one job (median round; in parentheses the lowest and highest round, 'unsteady' "
        "where they leave ±15%); memory ratio: GloRo's peak over this row's, same run and machine"
    )
    rounding = (
        "rounding pts: how far the global certificate's VRA on that row's net lies below its VRA ignoring "
        "floating-point rounding, the price of certificates that hold for the net as it computes"
    )
    where = f"Table 1, measured {measured_on(runs, date)}"
    return f"{where}; {sources}; {seconds}; {memory}; {ratios}; {rounding}; {MACHINE_TIMES}."


def published_cell(published: pd.DataFrame, key: tuple, method: str, metric: str):
    """The published row for (dataset, ε, architecture), method and metric, or None when unsourced."""
    dataset, epsilon, architecture = key
    hits = published[
        (published["dataset"] == dataset)
        & (published["eps_key"] == epsilon)
        & (published["architecture"] == architecture)
        & (published["method"] == method)
        & (published["metric"] == metric)
    ]
    return None if hits.empty else hits.iloc[0]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


def save_figure(figure, stem: Path) -> None:
    """Save as PDF and PNG, each atomically."""
    import matplotlib.pyplot as plt

    for suffix in (".pdf", ".png"):
        target = stem.with_suffix(suffix)
        with atomic_path(target) as temporary:
            figure.savefig(temporary, format=suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(figure)


def plot_vra_by_radius(table: pd.DataFrame, stem: Path, published: pd.DataFrame | None = None) -> None:
    """VRA against the certified radius, one line per experiment (distinct markers for grayscale); where
    Table 1 has a published VRA for an experiment (`published`: experiment, epsilon, vra_reported in %),
    a hollow marker of the same colour at its ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reported = {} if published is None else {
        row["experiment"]: (row["epsilon"], row["vra_reported"] / 100)
        for _, row in published.iterrows()
        if not pd.isna(row["vra_reported"])
    }  # fmt: skip
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for (name, group), marker in zip(table.groupby("experiment"), "os^vDP*X", strict=False):
        (line,) = axis.plot(group["radius"], group["vra"], marker=marker, label=name)
        if name in reported:
            epsilon, vra = reported[name]
            axis.plot([epsilon], [vra], marker=marker, markersize=11, fillstyle="none", color=line.get_color(),
                      linestyle="none", label=f"{name}, published")  # fmt: skip
    axis.set_xlabel("radius ε (ℓ2, pixels in [0, 1])")
    axis.set_ylabel("verified-robust accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    save_figure(figure, stem)


def plot_training_curves(
    history: pd.DataFrame, stem: Path, best_epochs: Mapping[str, int | None] | None = None
) -> None:
    """Per epoch, one line per experiment: training loss, accuracy and VRA on the training batches, clean
    accuracy and VRA on the test points certified after each epoch, and train ε; a star marks the epoch of
    each run's best-on-test checkpoint (`best_epochs`: experiment → epoch, counted from 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "training loss"),
        ("clean_accuracy", "clean accuracy, training batches"),
        ("vra", "VRA at train ε, training batches"),
        ("epsilon", "train ε"),
        ("eval_clean_accuracy", "clean accuracy, test"),
        ("eval_vra", "VRA at eval ε, test"),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5), layout="constrained")
    for axis, (column, label) in zip(axes.flat, panels, strict=True):
        for name, group in history.groupby("experiment"):
            if column not in group or group[column].isna().all():
                continue
            group = group.dropna(subset=[column])  # a run evaluated every k epochs: join the epochs it has
            (line,) = axis.plot(group["epoch"] + 1, group[column], label=name)
            best = (best_epochs or {}).get(name)
            if column == "eval_vra" and best is not None and not pd.isna(best):
                at = group[group["epoch"] == best]
                axis.plot(at["epoch"] + 1, at[column], marker="*", markersize=12, color=line.get_color(),
                          linestyle="none")  # fmt: skip
        axis.set_xlabel("epoch")
        axis.set_title(label, fontsize=10)
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    (star,) = axes.flat[5].plot([], [], marker="*", color="gray", linestyle="none", label="best-on-test checkpoint")
    axes.flat[5].legend(handles=[star], fontsize=7)
    save_figure(figure, stem)


def plot_epoch_cost(history: pd.DataFrame, stem: Path) -> None:
    """Seconds and peak memory per epoch, one line per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3))
    for name, group in history.groupby("experiment"):
        axes[0].plot(group["epoch"] + 1, group["seconds"], label=name)
        axes[1].plot(group["epoch"] + 1, group["peak_mem_mb"], label=name)
    axes[0].set_ylabel("seconds per epoch")
    axes[1].set_ylabel("peak memory (MB)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(figure, stem)


def plot_tightness(reports: Mapping[str, RunReports], stem: Path) -> None:
    """Sound margin Lipschitz bound over the empirical lower bound: tightest and median class pair per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, tightest, median = [], [], []
    for name, files in reports.items():
        tightness = json.loads(files.bounds.read_text())["tightness"]
        names.append(name)
        tightest.append(tightness["min_sound_over_lower"])
        median.append(tightness["median_sound_over_lower"])
    figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], tightest, width=0.4, color="0.3", label="tightest pair")
    axis.bar([p + 0.2 for p in positions], median, width=0.4, color="0.7", hatch="//", label="median pair")
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(list(positions), names, rotation=20, ha="right", fontsize=7)
    axis.set_ylabel("sound bound / lower bound")
    axis.legend(fontsize=7)
    save_figure(figure, stem)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency); empty cells for missing values."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = ["" if pd.isna(value) else str(value) for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    write_text(outputs.cost_md, markdown_table(cost_view(cost)) + "\n" + cost_caption(runs, today) + "\n")
    globally_certified = set(runs.loc[runs["certifier"] == "global", "experiment"])
    shown = radius_table[radius_table["experiment"].isin(globally_certified)]
    plot_vra_by_radius(shown, outputs.figure_stem("vra"), table[["experiment", "epsilon", "vra_reported"]])
    history = pd.concat(histories, ignore_index=True)
    best_epochs = dict(zip(runs["experiment"], runs["best_on_test_epoch"], strict=True))
    plot_training_curves(history, outputs.figure_stem("curves"), best_epochs)
    plot_epoch_cost(history, outputs.figure_stem("epoch_cost"))
    plot_tightness(reports, outputs.figure_stem("tightness"))
