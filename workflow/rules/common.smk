# Helpers shared by the rules: which experiments run, per-experiment settings, resources.
import sys

from gloro.data import dataset_available


def selected_experiments(config):
    """Every experiment, less those marked when_available whose data cannot be read without a download."""
    names = []
    for name, settings in sorted(config["experiments"].items()):
        offline = settings.get("when_available") and not config["download"]
        if offline and not dataset_available(
            settings["dataset"], data_dir=config["data_dir"], cache_dir=config["data_cache"]
        ):
            print(f"note: leaving out {name}: {settings['dataset']} is not on this machine", file=sys.stderr)
            continue
        names.append(name)
    if not names:
        raise ValueError("no experiment can run: every one is marked when_available and lacks its data")
    return names


def experiment_settings(wildcards):
    """The config entry of one experiment, as the rule scripts receive it."""
    return config["experiments"][wildcards.experiment]


def run_dir(experiment="{experiment}"):
    """The run folder of one experiment (a wildcard pattern by default)."""
    return f"{RESULTS}/runs/{experiment}"


DATA_OPTIONS = {
    "data_dir": config["data_dir"],
    "cache_dir": config["data_cache"],
    "download": config["download"],
}
GPU = 1 if config["device"] in ("auto", "cuda") or config["device"].startswith("cuda") else 0
