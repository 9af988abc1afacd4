# Helpers shared by the rules: which experiments run, per-experiment settings, resources.
import re
import shlex
import sys

from gloro.certify import list_certifiers
from gloro.data import cache_file, dataset_available, datasets
from gloro.bench.experiment import Experiment, cost_reference
from gloro.bench.run_files import AttackFiles, BoundsFiles, CertifyFiles, ReportFiles, StepCostFiles, TrainFiles
from gloro.plugins import load_plugins

load_plugins(config["plugins"])  # before any experiment is read: the methods, certifiers and architectures
if unknown := sorted(set(config["evaluation"]["compare_certifiers"]) - set(list_certifiers())):
    raise ValueError(
        f"evaluation.compare_certifiers: unknown certifiers {unknown}; known: {', '.join(list_certifiers())}"
    )

LEFT_OUT = {}  # experiment -> data set, for those selected_experiments leaves out for want of their data


def selected_experiments(config):
    """Every experiment, less those marked when_available whose data cannot be read without a download."""
    names = []
    for name, settings in sorted(config["experiments"].items()):
        Experiment.from_config(name, settings)  # method options and schedules checked before any job runs
        if settings.get("not_run"):
            print(f"note: {name} is not run: {settings['not_run']}", file=sys.stderr)
            continue
        offline = settings.get("when_available") and not config["download"]
        if offline and not dataset_available(
            settings["dataset"], data_dir=config["data_dir"], cache_dir=config["data_cache"]
        ):
            print(f"note: leaving out {name}: {settings['dataset']} is not on this machine", file=sys.stderr)
            LEFT_OUT[name] = settings["dataset"]
            continue
        names.append(name)
    if not names:
        raise ValueError("no experiment can run: every one is marked not_run, or when_available and lacks its data")
    return names


def left_out_note():
    """What the run left out for want of data, and how to add it; empty when nothing was."""
    if not LEFT_OUT:
        return ""
    names = ", ".join(sorted(LEFT_OUT))
    datasets = sorted(set(LEFT_OUT.values()))
    ways = []
    if "fashion-mnist" in datasets:
        ways.append("Fashion-MNIST: apt-get install dataset-fashion-mnist (Debian, Ubuntu)")
    ways.append("any data set: --config download=True, or data_dir=<folder with the official files>")
    return (
        f"note: left out, for want of their data ({', '.join(datasets)}): {names}. "
        f"To add them, then run the same command again: {'; '.join(ways)}."
    )


def not_run_experiments(config):
    """The experiments a config plans but marks `not_run`, with their settings, for Table 1's rows."""
    return {name: settings for name, settings in config["experiments"].items() if settings.get("not_run")}


def experiment_settings(wildcards):
    """The config entry of one experiment, as the rule scripts receive it."""
    return config["experiments"][wildcards.experiment]


def cost_reference_settings(wildcards):
    """{name: config entry} of the experiment whose training time Table 1 divides by this one's; {} for none."""
    name = cost_reference(wildcards.experiment, config["experiments"])
    return {} if name is None else {name: config["experiments"][name]}


def data_file(dataset, split):
    """The cached split that rule prepare_data writes (`dataset` may be a wildcard pattern)."""
    return str(cache_file(dataset, split, config["data_cache"]))


def experiment_data(split):
    """An input function: the cached `split` of the experiment's data set."""

    def data(wildcards):
        return data_file(config["experiments"][wildcards.experiment]["dataset"], split)

    return data


def prepare_options():
    """Command-line options of `python -m gloro.data prepare` for this config's data folders and download switch."""
    options = ["--cache-dir", config["data_cache"]]
    for plugin in config["plugins"]:  # a data set of the config's own is registered by its plugin
        options += ["--plugin", plugin]
    if config["data_dir"]:
        options += ["--data-dir", config["data_dir"]]
    if not config["download"]:
        options.append("--no-download")
    if not config["strict_checksums"]:
        options.append("--no-strict")
    return " ".join(shlex.quote(option) for option in options)


def run_dir(experiment="{experiment}"):
    """The run folder of one experiment (a wildcard pattern by default)."""
    return f"{RESULTS}/runs/{experiment}"


def run_file(files, name, experiment="{experiment}"):
    """A file of one experiment's run folder, under the name `files` (a gloro.bench.run_files class) gives it."""
    return f"{run_dir(experiment)}/{files.standard_names()[name]}"


def result_file(name):
    """A table or figure of results/, under the name gloro.bench.run_files.ReportFiles gives it."""
    return f"{RESULTS}/{ReportFiles.standard_names()[name]}"


DATA_OPTIONS = {
    "data_dir": config["data_dir"],
    "cache_dir": config["data_cache"],
    "download": config["download"],
    "strict": config["strict_checksums"],
}
GPU = 1 if config["device"] in ("auto", "cuda") or config["device"].startswith("cuda") else 0
# the SLURM partitions of the jobs that run a model (and may take a GPU) and of the report (local runs ignore both)
MODEL_PARTITION = config["slurm"]["gpu_partition" if GPU else "cpu_partition"]
REPORT_PARTITION = config["slurm"]["cpu_partition"]
DATASET_PATTERN = "|".join(re.escape(name) for name in datasets())
