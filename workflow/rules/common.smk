# Helpers shared by the rules: per-experiment settings and resources.


def experiment_settings(wildcards):
    """The config entry of one experiment, as the rule scripts receive it."""
    return config["experiments"][wildcards.experiment]


def run_dir(experiment="{experiment}"):
    return f"{RESULTS}/runs/{experiment}"


DATA_OPTIONS = {
    "data_dir": config["data_dir"],
    "cache_dir": config["data_cache"],
    "download": config["download"],
}
GPU = 1 if config["device"] in ("auto", "cuda") or config["device"].startswith("cuda") else 0
