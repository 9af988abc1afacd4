"""The Snakemake pipeline: config validation, the paper's job graph, and an end-to-end run on digits."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import gloro.bench.experiment as experiment_module
import gloro.data

ROOT = Path(__file__).resolve().parents[1]
# Long enough to mean a hang, not a slow machine: the longest run here takes about 1.5 minutes on 2 cores.
HANG_SECONDS = 1800


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )


def write_config(path: Path, results: Path, baselines: bool = False, **experiment) -> Path:
    settings = {
        "dataset": "digits",
        "architecture": "2C2F",
        "train_epsilon": 0.45,
        "eval_epsilon": 0.3,
        "epochs": 3,
        "batch_size": 64,
        "subset": {"train": 400, "test": 120},
        **experiment,
    }
    config = {
        "results": str(results),
        "data_cache": str(results.parent / "cache"),
        "evaluation": {
            "pgd": {"steps": 10, "restarts": 1},
            "tightness_steps": 50,
            "radii": [0, 0.1, 0.3],
            "local_points": 20,  # the local certifier is ~100x the global one: a few points show the comparison
        },
        "experiments": {"tiny_gloro": settings, "tiny_trades": {**settings, "loss": "trades"}},
    }
    if baselines:  # KW and BCP on the same net and data, so that Table 1 has measured cost ratios
        kw = {"method": "kw", "epochs": 2, "certifiers": ["kw", "global"], "eval_points": 40}
        config["experiments"]["tiny_kw"] = {**settings, **kw, "subset": {"train": 200, "test": 120}}
        config["experiments"]["tiny_bcp"] = {**settings, "method": "bcp", "epochs": 2, "options": {"kappa": 0.5}}
        tempered = {
            "method": "tempered",
            "architecture": "2B2F",
            "options": {"temperature": {"kind": "linear", "start": 2, "end": 1, "epochs": 3}},
        }
        # a method, a layer and an architecture of the test's own plugins
        config["experiments"]["tiny_tempered"] = {**settings, **tempered}
        config["plugins"] = ["tests/plugins/tempered.py", "tests/plugins/conv_block.py"]
        # a net of residual layers (SLL's), which the local and BCP certifiers cannot follow
        config["experiments"]["tiny_sll"] = {**settings, "method": "sll", "architecture": "SLL-D4"}
        planned = {"method": "bcp", "architecture": "4C3F", "not_run": "too large for this test"}
        config["experiments"]["tiny_bcp_4c3f"] = {**settings, **planned}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epoch": 3}, "epoch"),
        ({"architecture": "9C9F"}, "9C9F"),
        ({"dataset": "imagenet-1k"}, "unknown data set 'imagenet-1k'; known: mnist"),
        ({"eval_epsilon": -1}, "-1"),
        ({"learning_rate": {"kind": "cosine"}}, "learning_rate"),
    ],
)
def test_an_invalid_config_is_rejected_before_any_job(tmp_path, change, named):
    config = write_config(tmp_path / "bad.yaml", tmp_path / "results", **change)
    result = snakemake("-n", "--configfile", str(config))
    assert result.returncode != 0
    assert named in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_a_dry_run_of_the_paper_config_lists_every_job(tmp_path):
    cache = f"data_cache={tmp_path / 'cache'}"
    result = snakemake("-n", "--configfile", "config/paper.yaml", "--config", cache, "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    # GloRo and GloRo-T at four settings, KW at two, BCP at three; LiResNet + EMMA, AOL, SLL and CPL on CIFAR-10
    # and CIFAR-100
    expected = {"all": 1, "attack": 21, "bounds": 21, "certify": 21, "report": 1, "train": 21, "prepare_data": 4}
    expected["time_steps"] = 21  # each trained net's step, timed beside GloRo's
    assert counts == {**expected, "total": 111}  # mnist, cifar10, cifar100 and tiny-imagenet each prepared once
    jobs = snakemake("-n", "--configfile", "config/paper.yaml", "--config", cache)
    assert jobs.returncode == 0, jobs.stderr
    planned = ("mnist_1_58_kw", "mnist_1_58_bcp", "cifar10_36_kw", "cifar10_36_bcp", "tiny_imagenet_36_bcp")
    successors = [f"{data}_36_{family}" for data in ("cifar10", "cifar100") for family in ("liresnet", "aol", "sll")]
    for baseline in (*planned, *successors):
        assert f"experiment={baseline}" in jobs.stdout
    assert "experiment=tiny_imagenet_36_kw" not in jobs.stdout  # planned with the reason it cannot run
    assert "tiny_imagenet_36_kw is not run: the exact l2 KW dual" in jobs.stderr


@pytest.mark.parametrize(
    ("device", "gpu", "partition"), [("auto", 1, "gpu"), ("cuda:1", 1, "a100"), ("cpu", 0, "short")]
)
def test_model_jobs_ask_for_a_gpu_and_its_partition_only_when_the_device_may_be_one(tmp_path, device, gpu, partition):
    config = write_config(tmp_path / "c.yaml", tmp_path / "results")
    overrides = [f"device={device}", "slurm={cpu_partition: short, gpu_partition: a100}" if partition != "gpu" else ""]
    result = snakemake("-n", "--configfile", str(config), "--config", *filter(None, overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = result.stdout.split("\nrule ")[1:]
    model_jobs = [job for job in jobs if job.startswith(("train", "certify", "attack", "bounds"))]
    assert len(model_jobs) == 8  # two experiments
    for job in model_jobs:
        assert f"gpu={gpu}, slurm_partition={partition}" in job
    report = next(job for job in jobs if job.startswith("report"))
    assert "gpu=" not in report and f"slurm_partition={'short' if partition != 'gpu' else 'cpu'}" in report
    profile = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    assert "slurm_extra" not in profile and "gres" not in profile  # the plugin refuses GPUs asked that way


@pytest.mark.slow
def test_the_pipeline_runs_end_to_end_and_a_second_run_does_nothing(tmp_path):
    results = tmp_path / "results"
    config = write_config(tmp_path / "tiny.yaml", results, baselines=True)
    settings = yaml.safe_load(config.read_text())
    absent = {**settings["experiments"]["tiny_gloro"], "dataset": "mnist", "when_available": True}
    settings["experiments"]["tiny_absent"] = absent  # no MNIST here: left out, and the final summary says so
    config.write_text(yaml.safe_dump(settings))
    first = snakemake("--configfile", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    summary = first.stdout + first.stderr
    assert "note: left out, for want of their data (mnist): tiny_absent" in summary
    assert "download=True" in summary.split("note: left out")[-1]
    for split in ("train", "test"):  # prepared once, by rule prepare_data, for both experiments
        assert (tmp_path / "cache" / f"digits-{split}.pt").is_file()
    assert (results / "logs" / "prepare_data" / "digits.log").is_file()
    runs = pd.read_csv(results / "tables" / "runs.csv")
    experiments = ["tiny_bcp", "tiny_gloro", "tiny_kw", "tiny_sll", "tiny_tempered", "tiny_trades"]
    assert sorted(runs["experiment"]) == experiments
    assert dict(zip(runs["experiment"], runs["certifier"])) == {
        "tiny_bcp": "bcp",
        "tiny_gloro": "global",
        "tiny_kw": "kw",
        "tiny_sll": "global",
        "tiny_tempered": "global",
        "tiny_trades": "global",
    }
    bounds = json.loads((results / "runs" / "tiny_sll" / "bounds.json").read_text())
    assert [row["certifier"] for row in bounds["certifiers"]] == ["global"]
    assert sorted(bounds["unsupported"]) == ["bcp", "local"] and "SLLDense" in bounds["unsupported"]["local"]
    tempered = json.loads((results / "runs" / "tiny_tempered" / "train.json").read_text())["method"]
    assert tempered["label"] == "Tempered"  # the plugin's method, trained with its own options, recorded
    assert tempered["recipe"]["options"] == {"temperature": {"kind": "linear", "start": 2, "end": 1, "epochs": 3}}
    history = pd.read_csv(results / "runs" / "tiny_tempered" / "history.csv")
    assert history["temperature"].tolist() == [2.0, 1.5, 1.0]
    assert set(runs.set_index("experiment").loc["tiny_kw", "audited_certifiers"].split(",")) == {"kw", "global"}
    monitored = pd.read_csv(results / "runs" / "tiny_kw" / "history.csv")
    assert (monitored["eval_points"] == 40).all()  # per-epoch monitoring on the first 40 test points only
    for column in ("clean_accuracy", "vra", "pgd_accuracy", "rejection_rate"):
        assert runs[column].between(0, 1).all()
    assert (runs["vra"] <= runs["clean_accuracy"]).all()
    assert (runs["soundness_violations"] == 0).all()
    assert (runs["sec_per_epoch"] > 0).all() and runs["git_commit"].notna().all()
    radius = pd.read_csv(results / "tables" / "vra_by_radius.csv")
    assert list(radius.columns) == ["experiment", "certifier", "radius", "vra"]
    for _, group in radius.groupby("experiment"):
        assert group.sort_values("radius")["vra"].is_monotonic_decreasing
    table = pd.read_csv(results / "tables" / "table1.csv")
    assert {"clean", "pgd", "vra", "vra_reported", "vra_source", "sec_per_epoch"} <= set(table.columns)
    planned = table[table["note"].notna()]
    assert planned[["experiment", "architecture", "method"]].values.tolist() == [["tiny_bcp_4c3f", "4C3F", "BCP"]]
    assert planned["note"].iloc[0] == "not run: too large for this test" and planned["vra"].isna().all()
    assert not (results / "runs" / "tiny_bcp_4c3f").exists()
    table = table[table["note"].isna()]
    # rows by architecture, then in method order; the plugin's method is on the plugin's architecture of blocks
    assert table[["architecture", "method"]].values.tolist() == [
        ["2B2F", "Tempered"],
        *(["2C2F", method] for method in ("GloRo", "GloRo-T", "KW", "BCP")),
        ["SLL-D4", "SLL"],
    ]
    assert table["vra"].notna().all()
    lipschitz_rows = table["certifier"] == "global"  # KW's and BCP's claims are their own bounds: no cells
    assert table.loc[lipschitz_rows, ["claimed_over_sound", "vra_claimed"]].notna().all().all()
    assert table.loc[~lipschitz_rows, ["claimed_over_sound", "vra_claimed"]].isna().all().all()
    sll = table.set_index("method").loc["SLL"]  # the construction's 1 per layer, never above the proven bound
    assert sll["claimed_over_sound"] <= 1 and sll["vra_claimed"] >= sll["vra"]
    baselines = table.set_index("method").loc[["KW", "BCP", "GloRo-T"]]
    gloro_row = table.set_index("method").loc["GloRo"]
    assert baselines["train_examples"].tolist() == [200, 400, 400]  # KW trained on 200 images, the rest 400
    for experiment, row in zip(baselines["experiment"], baselines.itertuples(), strict=True):
        steps = json.loads((results / "runs" / experiment / "steps.json").read_text())
        timed = steps["reference"]  # GloRo's step beside this one's, on the same batches, in the same job
        assert timed["experiment"] == gloro_row["experiment"]
        assert row.gloro_time_ratio == timed["time_ratio"]
        assert row.gloro_time_ratio_low <= row.gloro_time_ratio <= row.gloro_time_ratio_high
        assert row.sec_per_epoch == pytest.approx(steps["seconds_per_epoch"])
    assert baselines["gloro_mem_ratio"].gt(0).all() and pd.isna(gloro_row["gloro_time_ratio"])
    assert "reference" not in json.loads((results / "runs" / gloro_row["experiment"] / "steps.json").read_text())
    markdown = (results / "tables" / "table1.md").read_text()
    assert "| KW |" in markdown and "×" in markdown and "Table 1, measured" in markdown
    assert not re.search(r"\d\.\d{5,}", markdown.split("Table 1, measured")[0])  # no raw floats in the cells
    assert "\\caption{Table 1, measured" in (results / "tables" / "table1.tex").read_text()
    for name, caption in (("certification_cost", "Certification cost, measured"), ("certifier_comparison", "measured")):
        text = (results / "tables" / f"{name}.md").read_text()
        assert caption in text and "| Experiment |" in text
        assert not re.search(r"\d\.\d{5,}|e-0\d", text.split(caption)[0])  # rounded cells, no exponents
    cost = pd.read_csv(results / "tables" / "certification_cost.csv")
    local = cost.set_index("experiment")["vra_local"]
    assert local.drop("tiny_sll").notna().all() and pd.isna(local["tiny_sll"])  # local cannot follow SLL's layers
    ran = cost[cost["vra_local"].notna()]
    assert (ran["vra_local"] >= ran["vra_global"]).all()  # the local bound is never looser
    cost_md = (results / "tables" / "certification_cost.md").read_text()
    assert "local bounds follow a chain of layers, not a residual layer (SLLDense)" in cost_md.splitlines()[-1]
    assert (cost["certify_over_forward_throughput"] > 0).all()
    for stem in ("vra_by_radius", "training_curves", "epoch_cost", "tightness"):
        for suffix in (".pdf", ".png"):
            assert (results / "figures" / f"{stem}{suffix}").stat().st_size > 1000
    html = results / "report.html"
    assert snakemake("--configfile", str(config), "--report", str(html)).returncode == 0
    assert html.stat().st_size > 10_000
    second = snakemake("--configfile", str(config))
    assert second.returncode == 0
    assert "Nothing to be done" in second.stdout + second.stderr


@pytest.mark.slow
def test_a_training_job_killed_mid_run_resumes_from_its_last_epoch(tmp_path):
    results = tmp_path / "results"
    config = write_config(tmp_path / "long.yaml", results, epochs=30, subset={"train": 1000, "test": 100})
    model = results / "runs" / "tiny_gloro" / "model.pt"
    scratch = model.parent / "scratch.pt"
    command = [sys.executable, "-m", "snakemake", str(model), "--cores", "2", "--configfile", str(config)]
    job = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + HANG_SECONDS
    while not scratch.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the whole job, as a node failure or the OOM killer would
    job.wait()
    assert scratch.exists() and not model.exists(), "the job ended before it could be killed mid-run"

    assert snakemake("--configfile", str(config), "--unlock").returncode == 0
    resumed = snakemake(str(model), "--configfile", str(config))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (results / "logs" / "train" / "tiny_gloro.log").read_text()
    assert "resuming after epoch" in log
    done = int(log.split("resuming after epoch ")[1].split()[0]) + 1
    assert 0 < done < 30
    history = pd.read_csv(model.parent / "history.csv")
    assert history["epoch"].tolist() == list(range(30))  # every epoch once: none lost, none repeated
    assert not scratch.exists()


def test_an_experiment_marked_when_available_is_left_out_without_its_data(tmp_path):
    config = yaml.safe_load(write_config(tmp_path / "c.yaml", tmp_path / "results").read_text())
    config["experiments"]["absent"] = {
        **config["experiments"]["tiny_gloro"],
        "dataset": "mnist",
        "when_available": True,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "c.yaml"), "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "leaving out absent" in result.stderr
    assert "train" in result.stdout and "absent" not in result.stdout


def write_official_cache(cache: Path, name: str, examples: int = 64) -> None:
    """A stand-in cached split of `name` (random pixels) marked official, so the paper config finds its data."""
    spec = gloro.data.dataset_spec(name)
    generator = torch.Generator().manual_seed(0)
    cache.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        meta = {
            "dataset": name,
            "split": split,
            "shape": [examples, *spec.shape],
            "class_names": [str(label) for label in range(spec.num_classes)],
            "divisor": spec.divisor,
            "location": "synthetic",
            "fingerprint": [],
            "sources": [],
            "official": True,
        }
        images = torch.randint(0, 256, (examples, *spec.shape), generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, spec.num_classes, (examples,), generator=generator)
        payload = {"format": 1, "images": images, "labels": labels, "meta": meta}
        torch.save(payload, gloro.data.cache_file(name, split, cache))


@pytest.mark.slow
def test_the_paper_config_trains_and_certifies_each_data_set_unchanged_but_for_size(tmp_path):
    # one experiment per data set and architecture family, one epoch of one batch each, on stand-in data of the
    # real shapes (the nets are the paper's sizes: the sound bound of Tiny-ImageNet's 8C2F, computed at the end
    # of each epoch, alone takes about 17 s on 2 cores)
    for name in ("mnist", "cifar10", "tiny-imagenet"):
        write_official_cache(tmp_path / "cache", name, examples=16)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    shrink = {
        "results": str(tmp_path / "results"),
        "data_cache": str(tmp_path / "cache"),
        "download": False,
        "experiments": {name: {"epochs": 1, "batch_size": 16, "eval_points": 8} for name in paper["experiments"]},
    }
    shrink["experiments"]["cifar10_36_gloro"]["warmup_epochs"] = 1
    (tmp_path / "shrink.yaml").write_text(yaml.safe_dump(shrink))
    runs = tmp_path / "results" / "runs"
    targets = [
        str(runs / "mnist_1_58_trades" / "certify.json"),
        str(runs / "cifar10_36_gloro" / "certify.json"),
        str(runs / "tiny_imagenet_36_trades" / "model.pt"),
    ]
    for baseline in ("cifar10_36_bcp", "tiny_imagenet_36_bcp"):
        shrink["experiments"][baseline]["warmup_epochs"] = 1
    (tmp_path / "shrink.yaml").write_text(yaml.safe_dump(shrink))
    targets += [str(runs / "cifar10_36_bcp" / "certify.json"), str(runs / "tiny_imagenet_36_bcp" / "model.pt")]
    result = snakemake(*targets, "--configfile", "config/paper.yaml", str(tmp_path / "shrink.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    for experiment in ("mnist_1_58_trades", "cifar10_36_gloro", "cifar10_36_bcp"):
        report = json.loads((runs / experiment / "certify.json").read_text())
        assert 0 <= report["vra"] <= report["clean_accuracy"] <= 1
    assert json.loads((runs / "cifar10_36_bcp" / "certify.json").read_text())["certifier"] == "bcp"
    summary = json.loads((runs / "cifar10_36_gloro" / "train.json").read_text())
    assert summary["warmup"]["epochs"] == 1 and summary["experiment"]["augmentation"] == "cifar10"
    tiny = gloro.load(runs / "tiny_imagenet_36_trades" / "model.pt")
    assert tiny.input_shape == (3, 64, 64) and tiny.num_classes == 200
    tiny_bcp = json.loads((runs / "tiny_imagenet_36_bcp" / "train.json").read_text())  # 200 classes, 8C2F
    assert tiny_bcp["method"]["name"] == "bcp" and tiny_bcp["experiment"]["architecture"] == "8C2F"


def test_strict_checksums_false_is_passed_to_prepare_data_and_to_every_job(tmp_path, monkeypatch):
    config = write_config(tmp_path / "c.yaml", tmp_path / "results")
    relaxed = snakemake("-n", "-p", "--configfile", str(config), "--config", "strict_checksums=False")
    assert relaxed.returncode == 0, relaxed.stderr[-3000:]
    assert "gloro.data prepare digits" in relaxed.stdout and "--no-strict" in relaxed.stdout
    strict = snakemake("-n", "-p", "--configfile", str(config))
    assert "gloro.data prepare digits" in strict.stdout and "--no-strict" not in strict.stdout
    seen = {}  # the jobs read the cached splits through DataOptions, which must pass the same switch on
    monkeypatch.setattr(experiment_module, "load_dataset", lambda *args, **kwargs: seen.update(kwargs))
    settings = yaml.safe_load(config.read_text())["experiments"]["tiny_gloro"]
    experiment_module.DataOptions(strict=False).load(experiment_module.Experiment.from_config("tiny", settings), "test")
    assert seen["strict"] is False


# Snakemake's lints that this workflow does not follow, each explained in the README's "Linting" paragraph
ACCEPTED_LINTS = {"Specify a conda environment or container for each rule."}


def test_the_test_config_passes_the_linter_and_a_dry_run():
    linted = snakemake("--lint", "--configfile", ".test/config/config.yaml")
    findings = set(re.findall(r"^    \* (.+?):?$", linted.stdout + linted.stderr, flags=re.MULTILINE))
    assert findings <= ACCEPTED_LINTS, findings - ACCEPTED_LINTS
    assert findings or linted.returncode == 0, linted.stderr[-2000:]
    dry = snakemake("-n", "--configfile", ".test/config/config.yaml", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert re.search(r"^total\s+13$", dry.stdout, flags=re.MULTILINE)  # 2 experiments × 5 rules, data, report, all


def test_the_schema_names_what_the_registries_hold():
    """Each enum of the schema is its registry's list, so a registered activation, init or augmentation is
    accepted the day it is added; data sets, architectures, methods and certifiers have no enum: plugins add to
    them, and an unknown name is refused with the known ones before any job (the invalid-config test)."""
    from gloro.architectures import ACTIVATIONS, INITS
    from gloro.data.augment import augmentations

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["definitions"]["experiment"]["properties"]
    registries = {
        "activation": ACTIVATIONS,
        "init": INITS,
        "augmentation": augmentations(),
    }
    for key, names in registries.items():
        assert sorted(properties[key]["enum"]) == sorted(names), key
    for key in ("dataset", "architecture", "method", "loss", "options", "certifiers"):
        assert "enum" not in yaml.safe_dump(properties[key]), key


def test_a_config_naming_an_unknown_certifier_is_refused_before_any_job(tmp_path):
    config = yaml.safe_load(write_config(tmp_path / "c.yaml", tmp_path / "results").read_text())
    config["evaluation"]["compare_certifiers"] = ["bcp", "lirpa"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "c.yaml"))
    assert result.returncode != 0
    message = "compare_certifiers: unknown certifiers ['lirpa']; known: bcp, crown, global"
    assert message in result.stdout + result.stderr
