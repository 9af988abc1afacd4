"""How the tables read: rounded cells, cost ratios with their spread, footnotes and captions, Markdown."""

from __future__ import annotations

import math

import pandas as pd

from gloro.evaluation import radius_label
from gloro.step_cost import ROUND_SECONDS, ROUNDS

UNSTEADY_LOW, UNSTEADY_HIGH = 0.85, 1.15  # a cost ratio whose spread leaves ±15% is not printed as one number


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


def cost_view(table: pd.DataFrame) -> pd.DataFrame:
    """The certification cost as a reader wants it: VRA in percent, milliseconds and thousands of points
    per second to two significant digits, ratios as 1.0×."""
    return pd.DataFrame(
        {
            "Experiment": table["experiment"],
            "ε": [radius_label(e) for e in table["eval_epsilon"]],
            "Points": table["points"],
            "VRA % global": [f"{100 * v:.1f}" for v in table["vra_global"]],
            "VRA % local": [NOT_RUN if missing(v) else f"{100 * v:.1f}" for v in table["vra_local"]],
            "Only local": [NOT_RUN if missing(v) else int(v) for v in table["certified_local_only"]],
            "Global ms/point†": [significant(1000 * v) for v in table["sec_per_point_global"]],
            "Local ms/point†": [NOT_RUN if missing(v) else significant(1000 * v) for v in table["sec_per_point_local"]],
            "Local ÷ global": [
                NOT_RUN if missing(v) else cell
                for v, cell in zip(table["vra_local"], spread_cells(table, "local_over_global_time"))
            ],
            "Forward k points/s†": [significant(v / 1000) for v in table["forward_points_per_second"]],
            "Certify k points/s†": [significant(v / 1000) for v in table["certify_points_per_second"]],
            "Certify ÷ forward": spread_cells(table, "certify_over_forward_throughput"),
        }
    )


NOT_RUN = "—"


def missing(value) -> bool:
    """None or NaN: a cell with nothing measured."""
    return value is None or pd.isna(value)


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
            "Claimed K": [claimed_cell(v) for v in table["claimed_over_sound"]],
            "VRA % claimed": ["" if pd.isna(v) else f"{v:.1f}" for v in table["vra_claimed"]],
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


def cost_caption(runs: pd.DataFrame, date: str, table: pd.DataFrame | None = None) -> str:
    """The line under the certification-cost table: when and where, and what its columns compare (and, where
    the local certifier could not run on a net of `table`, why)."""
    unsupported = [] if table is None else [v for v in table.get("local_unsupported", []) if not missing(v)]
    reason = " ".join(str(unsupported[0]).split()) if unsupported else ""  # on one line: a caption is one
    skipped = f" {NOT_RUN}: the local certifier was not run on that net ({reason})." if unsupported else ""
    return (
        f"Certification cost, measured {measured_on(runs, date)}: the global and local certificates on the same "
        "test points (local: per-point Lipschitz bounds; only local: points it certifies and the global one does "
        "not), and throughput over the whole test split, certifying (forward pass and certificate) against the "
        "plain forward pass of the same batches, in interleaved rounds; global and local timed side by side on the "
        "same points (certify ÷ forward and local ÷ global: the median of the rounds' ratios, the middle half of "
        f"them in parentheses, 'unsteady' where those leave ±15%); {MACHINE_TIMES}.{skipped}"
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
    claimed = (
        "claimed K, on rows certified by the Lipschitz bound: how far the constant the net's training uses (its "
        "layers' power-iteration estimates, or a construction's 1 per layer) lies below the sound bound of the "
        f"trained weights ({CLAIM_FLAG}: below, so a VRA computed with it is not a certificate); VRA % claimed: the "
        "VRA that constant gives with no rounding allowance, as the method's own evaluation would print it"
    )
    where = f"Table 1, measured {measured_on(runs, date)}"
    return f"{where}; {sources}; {seconds}; {memory}; {ratios}; {rounding}; {claimed}; {MACHINE_TIMES}."


CLAIM_FLAG = "⚑"


def claimed_cell(ratio) -> str:
    """How far the Lipschitz constant a net's training claims lies below the sound one ('12 ppm below ⚑',
    '3.1% below ⚑'), or 'none below' where it does not."""
    if ratio is None or pd.isna(ratio):
        return ""
    short = 1 - float(ratio)
    if short <= 0:
        return "none below"
    amount = f"{significant(100 * short)}%" if short >= 1e-3 else f"{significant(1e6 * short)} ppm"
    return f"{amount} below {CLAIM_FLAG}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency); empty cells for missing values."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = ["" if pd.isna(value) else str(value) for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
