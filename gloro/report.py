"""Aggregate experiments into the tidy tables and figures of results/: runs, VRA by radius, Table 1.

Every table is a view of the per-run outputs (train.json, history.csv, certify.json, attack.json); the
authors' numbers come from one file with a source column (workflow/resources/published.csv), and a cell
the project cannot source stays empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gloro.atomic import atomic_path, write_text

METHODS = {"gloro": "GloRo", "trades": "GloRo-T"}
PUBLISHED_METHODS = {"gloro": "GloRo", "gloro_trades": "GloRo-T", "kw": "KW", "bcp": "BCP"}
TABLE1_METRICS = ("clean", "pgd", "vra")


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """One experiment's row of runs.csv and its per-epoch history."""
    train = json.loads((run_dir / "train.json").read_text())
    certify = json.loads((run_dir / "certify.json").read_text())
    attack = json.loads((run_dir / "attack.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    experiment, cost, best = train["experiment"], train["cost"], train["best_on_test"] or {}
    audit = attack["audit"]
    row = {
        "experiment": experiment["name"],
        "dataset": experiment["dataset"],
        "architecture": experiment["architecture"],
        "activation": experiment["activation"],
        "method": METHODS[experiment["loss"]],
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
        "audited_points": audit["certified"],
        "soundness_violations": audit["violations"],
        "best_on_test_epoch": best.get("epoch"),
        "best_on_test_vra": best.get("vra"),
        "best_on_test_clean_accuracy": best.get("clean_accuracy"),
        "first_epoch_sec": cost["first_epoch_seconds"],
        "sec_per_epoch": cost["later_epochs_mean_seconds"] or cost["first_epoch_seconds"],
        "train_images_per_second": cost["later_epochs_images_per_second"],
        "peak_mem_mb": cost["peak_mem_mb"],
        "peak_mem_source": cost["peak_mem_source"],
        "lipschitz_power_iteration": certify["lipschitz_power_iteration"],
        "lipschitz_sound": certify["lipschitz_sound"],
        "lipschitz_sound_over_power": certify["lipschitz_ratio"],
        "forward_points_per_second": certify["forward_points_per_second"],
        "certify_points_per_second": certify["certify_points_per_second"],
        **train["provenance"],
        "train_data_checksums": json.dumps(train["data"].get("sources", [])),
        "attack_settings": json.dumps(attack["attack_settings"], sort_keys=True),
    }
    return row, history.assign(experiment=experiment["name"])


def vra_by_radius(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Long table (experiment, radius, vra) from each run's certify.json."""
    rows = []
    for run_dir in run_dirs:
        certify = json.loads((run_dir / "certify.json").read_text())
        name = run_dir.name
        rows += [{"experiment": name, "radius": r["radius"], "vra": r["vra"]} for r in certify["vra_at_radii"]]
    return pd.DataFrame(rows, columns=["experiment", "radius", "vra"])


def certification_cost(runs: pd.DataFrame, run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Global vs local certification (VRA, seconds per point, on the same test points) and certification vs
    plain inference throughput, one row per experiment."""
    rows = []
    for (_, run), run_dir in zip(runs.iterrows(), run_dirs, strict=True):
        local = json.loads((run_dir / "bounds.json").read_text())["local_vs_global"]
        rows.append(
            {
                "experiment": run["experiment"],
                "eval_epsilon": run["eval_epsilon"],
                "points": local["num_points"],
                "vra_global": local["vra_global"],
                "vra_local": local["vra_local"],
                "certified_local_only": local["certified_local_only"],
                "sec_per_point_global": local["seconds_per_point_global"],
                "sec_per_point_local": local["seconds_per_point_local"],
                "local_over_global_time": local["seconds_per_point_local"] / local["seconds_per_point_global"],
                "forward_points_per_second": run["forward_points_per_second"],
                "certify_points_per_second": run["certify_points_per_second"],
                "certify_over_forward_throughput": run["certify_points_per_second"] / run["forward_points_per_second"],
            }
        )
    return pd.DataFrame(rows)


def table1(runs: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 layout: reproduced clean / PGD / VRA (percent), sec/epoch and memory per setting and
    method, each beside the published number, its source and the difference; sourced baselines as extra rows."""
    published = published.assign(
        method=published["method"].map(PUBLISHED_METHODS), eps_key=published["epsilon"].round(3)
    )
    rows = []
    settings = set()
    for _, run in runs.iterrows():
        key = (run["dataset"], round(float(run["eval_epsilon"]), 3), run["architecture"])
        settings.add(key)
        row = {
            "dataset": run["dataset"],
            "epsilon": run["eval_epsilon"],
            "architecture": run["architecture"],
            "method": run["method"],
            "experiment": run["experiment"],
        }
        values = {"clean": run["clean_accuracy"], "pgd": run["pgd_accuracy"], "vra": run["vra"]}
        for metric in TABLE1_METRICS:
            match = published_cell(published, key, run["method"], metric)
            ours = 100 * float(values[metric])
            row[metric] = round(ours, 2)
            row[f"{metric}_reported"] = match["value_percent"] if match is not None else None
            row[f"{metric}_source"] = match["source"] if match is not None else None
            row[f"{metric}_diff"] = round(ours - match["value_percent"], 2) if match is not None else None
        row["sec_per_epoch"] = round(float(run["sec_per_epoch"]), 3)
        row["peak_mem_mb"] = run["peak_mem_mb"]
        rows.append(row)
    for key in sorted(settings):
        for method in ("KW", "BCP"):
            cells = {m: published_cell(published, key, method, m) for m in TABLE1_METRICS}
            if all(cell is None for cell in cells.values()):
                continue
            row = {"dataset": key[0], "epsilon": key[1], "architecture": key[2], "method": method, "experiment": None}
            for metric, cell in cells.items():
                row[metric] = None
                row[f"{metric}_reported"] = cell["value_percent"] if cell is not None else None
                row[f"{metric}_source"] = cell["source"] if cell is not None else None
                row[f"{metric}_diff"] = None
            rows.append(row | {"sec_per_epoch": None, "peak_mem_mb": None})
    return pd.DataFrame(rows)


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


def plot_vra_by_radius(table: pd.DataFrame, stem: Path) -> None:
    """VRA against the certified radius, one line per experiment (distinct markers for grayscale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for (name, group), marker in zip(table.groupby("experiment"), "os^vDP*X", strict=False):
        axis.plot(group["radius"], group["vra"], marker=marker, label=name)
    axis.set_xlabel("radius ε (ℓ2, pixels in [0, 1])")
    axis.set_ylabel("verified-robust accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    save_figure(figure, stem)


def plot_training_curves(history: pd.DataFrame, stem: Path) -> None:
    """Loss, clean accuracy, training VRA and ε over epochs, one line per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "training loss"),
        ("clean_accuracy", "clean accuracy (train)"),
        ("vra", "VRA at train ε (train)"),
        ("epsilon", "train ε"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(14, 3))
    for axis, (column, label) in zip(axes, panels, strict=True):
        for name, group in history.groupby("experiment"):
            axis.plot(group["epoch"] + 1, group[column], label=name)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
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


def plot_tightness(run_dirs: Sequence[Path], stem: Path) -> None:
    """Sound margin Lipschitz bound over the empirical lower bound: tightest and median class pair per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, tightest, median = [], [], []
    for run_dir in run_dirs:
        tightness = json.loads((run_dir / "bounds.json").read_text())["tightness"]
        names.append(run_dir.name)
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
    experiments: Sequence[str],
    run_dirs: Sequence[str | Path],
    published: str | Path,
    tables_dir: str | Path,
    figures_dir: str | Path,
) -> None:
    """Write tables/runs.csv, vra_by_radius.csv, table1.{csv,md,tex}, certification_cost.{csv,md} and
    figures/*.{pdf,png}."""
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    run_dirs = [Path(p) for p in run_dirs]
    rows, histories = zip(*(read_run(run_dir) for run_dir in run_dirs), strict=True)
    runs = pd.DataFrame(list(rows))
    write_csv(runs, tables_dir / "runs.csv")
    radius_table = vra_by_radius(run_dirs)
    write_csv(radius_table, tables_dir / "vra_by_radius.csv")
    table = table1(runs, pd.read_csv(published))
    write_csv(table, tables_dir / "table1.csv")
    write_text(tables_dir / "table1.md", markdown_table(table))
    shown = table.drop(columns=[c for c in table.columns if c.endswith("_source")])
    write_text(tables_dir / "table1.tex", shown.to_latex(index=False, na_rep="", float_format="%.2f"))
    cost = certification_cost(runs, run_dirs)
    write_csv(cost, tables_dir / "certification_cost.csv")
    write_text(tables_dir / "certification_cost.md", markdown_table(cost))
    plot_vra_by_radius(radius_table, figures_dir / "vra_by_radius")
    history = pd.concat(histories, ignore_index=True)
    plot_training_curves(history, figures_dir / "training_curves")
    plot_epoch_cost(history, figures_dir / "epoch_cost")
    plot_tightness(run_dirs, figures_dir / "tightness")
