"""The tidy tables of results/ as data frames: VRA by radius, certification cost, the certifier comparison and
Table 1 beside the published numbers (runs.csv's rows are `gloro.bench.runs`).

Every table is a view of the per-run outputs (history.csv and the stages' records, `gloro.bench.results`); the
authors' numbers come from one file with a source column (workflow/resources/published.csv), and a cell
the project cannot source stays empty.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from gloro.bench.results import BoundsResult, CertifyResult
from gloro.bench.run_files import RunReports
from gloro.methods import COST_REFERENCE, get_method, list_methods, table_labels

TABLE1_METRICS = ("clean", "pgd", "vra")


def vra_by_radius(reports: Mapping[str, RunReports]) -> pd.DataFrame:
    """Long table (experiment, certifier, radius, vra): the global certificate's VRA at each radius, from one
    pass (KW and BCP decide one ε at a time, so their nets appear here by the global bound)."""
    rows = []
    for name, files in reports.items():
        rows += [
            {"experiment": name, "certifier": "global", "radius": r["radius"], "vra": r["vra"]}
            for r in CertifyResult.read(files.certify).global_report["vra_at_radii"]
        ]
    return pd.DataFrame(rows, columns=["experiment", "certifier", "radius", "vra"])


def certification_cost(runs: pd.DataFrame, reports: Mapping[str, RunReports]) -> pd.DataFrame:
    """Global vs local certification (VRA, seconds per point, on the same test points) and certification vs
    plain inference throughput, one row per experiment."""
    rows = []
    for _, run in runs.iterrows():
        bounds = BoundsResult.read(reports[run["experiment"]].bounds)
        compared = {row["certifier"]: row for row in bounds.certifiers}
        # bounds_experiment runs both; the local one is left out of a net with a layer it cannot follow
        globally, local = compared["global"], compared.get("local", {})
        rows.append(
            {
                "experiment": run["experiment"],
                "eval_epsilon": run["eval_epsilon"],
                "points": globally["num_points"],
                "local_unsupported": bounds.unsupported.get("local"),
                "vra_global": globally["vra"],
                "vra_local": local.get("vra"),
                "certified_local_only": local.get("certified_not_by_first"),
                "sec_per_point_global": globally["sec_per_point"],
                "sec_per_point_local": local.get("sec_per_point"),
                "local_over_global_time": local.get("time_over_first"),  # global is first: timed side by side
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


def percent_or_none(value) -> float | None:
    """A share as a percentage, None where it is missing (a run folder written before it was recorded)."""
    return None if value is None or pd.isna(value) else 100 * float(value)


def inverse(value) -> float | None:
    """1 ÷ value, None where it is missing (a run folder written before it was recorded) or not positive."""
    return None if value is None or pd.isna(value) or value <= 0 else 1 / value


def certifier_comparison(reports: Mapping[str, RunReports]) -> pd.DataFrame:
    """Long table: every compared certifier of every run on the same test points (bounds.json `certifiers`)."""
    rows = []
    for name, files in reports.items():
        for row in BoundsResult.read(files.bounds).certifiers:
            rows.append({"experiment": name, **row})
    return pd.DataFrame(rows)


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
        # the constant training claims (power iteration, or a construction's 1 per layer) over the sound one, on
        # rows whose method certifies with the Lipschitz bound (KW's and BCP's claims are their own bounds)
        claimed = number_or_none(run.get("lipschitz_power_iteration"))
        sound = number_or_none(run.get("lipschitz_sound"))
        lipschitz_method = run["certifier"] == "global"
        row["claimed_over_sound"] = claimed / sound if lipschitz_method and claimed is not None and sound else None
        row["vra_claimed"] = percent_or_none(run.get("global_vra_claimed")) if lipschitz_method else None
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
        for name in list_methods()
        for loss in get_method(name).losses
    }


def baseline_labels() -> tuple[str, ...]:
    """The labels of every method but the cost reference's (KW, BCP): where the config runs none of them at a
    setting with published numbers, Table 1 adds a row with those numbers alone."""
    own = next(get_method(name).labels for name in list_methods() if COST_REFERENCE in get_method(name).labels)
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
    "claimed_over_sound",  # K as training has it (power iteration, or the construction's claim) ÷ the sound K
    "vra_claimed",  # the VRA that claimed K gives, with no rounding allowance: not a certificate where K is short
    "gloro_time_ratio",
    "gloro_time_ratio_low",  # the ratio's spread with the epochs each side took; see ratio_range
    "gloro_time_ratio_high",
    "gloro_mem_ratio",
    "note",
]


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


def autoattack_note(run: Mapping) -> str | None:
    """When AutoAttack covered only the first test points, say so, with PGD's accuracy on those same points:
    the two columns are then over different points and must not be compared directly."""
    points, total = run.get("autoattack_points"), run.get("test_examples")
    if points is None or pd.isna(points) or total is None or pd.isna(total) or int(points) >= int(total):
        return None
    same = run.get("pgd_accuracy_on_autoattack_points")
    pgd = "" if same is None or pd.isna(same) else f" (PGD on those points: {100 * float(same):.1f}%)"
    return f"AutoAttack on the first {int(points):,} of {int(total):,} test points{pgd}"
