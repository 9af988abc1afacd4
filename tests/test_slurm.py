"""The pipeline on a real one-node SLURM cluster, through profiles/slurm: the same tables as a local run,
and a training job cancelled mid-run that resumes from its scratch file when SLURM runs it again.

Needs root and Debian's slurm-wlm and munge (.ci/run installs them where apt exists); skipped with the
reason elsewhere. The cluster is this machine: munged, slurmctld and slurmd are started here and stopped
by process id, and /etc/slurm/slurm.conf (where jobs' own srun calls look for it) is written for the
test and removed after, only where no configuration of another cluster is there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by gloro-bench's tests/test_slurm.py for a one-node test cluster"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
CANCELLED = "digits_2c2f_gloro"  # the experiment whose training job is cancelled mid-run
# its epochs: a few seconds of training, still far longer than the test takes to cancel it after the first
# (the executor's status checks, which back off by 10 s each, not the training, set how long a job lasts here)
CANCELLED_EPOCHS = 40
# Long enough to mean a hang, not a slow machine: the whole test takes about 5 minutes on 2 cores.
HANG_SECONDS = 1800

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def unavailable() -> str | None:
    """Why a test cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the SLURM executor is not installed: pip install snakemake-executor-plugin-slurm"
    if CONF.exists() and not CONF.read_text().startswith(MARK):
        return f"{CONF} configures another cluster; this test starts its own only where there is none"
    if memory_mb() < 12_000:
        return "the training jobs ask SLURM for 8 GB; this machine has less than 12 GB"
    return None


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def slurm_conf(folder: Path) -> str:
    host = socket.gethostname()
    return "\n".join(
        [
            MARK,
            "ClusterName=gloro-test",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={folder / 'munge.socket'}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "SlurmctldPort=16817",
            "SlurmdPort=16818",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MinJobAge=600",  # squeue must still list a finished job when the executor asks
            "ReturnToService=2",
            f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb() - 1024} State=UNKNOWN",
            # the partitions profiles/slurm sends jobs to by default (config key slurm)
            f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP",
            "",
        ]
    )


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[Path]:
    """A one-node SLURM cluster on this machine, for the duration of the module."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(slurm_conf(folder))
    daemons: list[subprocess.Popen] = []
    logs = []
    try:
        munge_files = [f"--{kind}-file={folder / f'munged.{kind}'}" for kind in ("log", "pid", "seed")]
        munged = ["munged", "--foreground", "--force", f"--socket={folder / 'munge.socket'}", f"--key-file={key}"]
        for name, command in (
            ("munged", [*munged, *munge_files]),
            ("slurmctld", ["slurmctld", "-D"]),
            ("slurmd", ["slurmd", "-D"]),
        ):
            log = open(folder / f"{name}.out", "w")  # noqa: SIM115 - closed with the daemons
            logs.append(log)
            daemons.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            if name == "munged":
                wait_for((folder / "munge.socket").exists, 30, "munged's socket")

        def idle() -> bool:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
            return state.returncode == 0 and "idle" in state.stdout

        wait_for(idle, 300, "the node to come up idle")
        yield folder
    finally:
        for daemon in reversed(daemons):  # only what this fixture started, by process id
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for log in logs:
            log.close()
        if CONF.exists() and CONF.read_text().startswith(MARK):
            CONF.unlink()


def digits_config(path: Path, results: Path, cache: Path) -> Path:
    """The default config's digits 2C2F experiments, scaled to a couple of minutes; the one that is cancelled
    trains long enough to be caught mid-run."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiments = {
        name: s
        for name, s in default["experiments"].items()
        if s["dataset"] == "digits" and s["architecture"] == "2C2F"
    }
    assert set(experiments) == {"digits_2c2f_gloro", "digits_2c2f_trades", "digits_2c2f_kw", "digits_2c2f_bcp"}
    for name, settings in experiments.items():
        settings["epochs"] = CANCELLED_EPOCHS if name == CANCELLED else 3
    experiments[CANCELLED]["learning_rate"]["epochs"] = CANCELLED_EPOCHS
    config = {
        "results": str(results),
        "data_cache": str(cache),
        "device": "cpu",  # no GPU on this node: the jobs must ask for none
        "evaluation": {
            "pgd": {"steps": 10, "restarts": 1},
            "local_points": 20,
            "tightness_steps": 20,
            "tightness_pairs": 10,
            "radii": [0.0, 0.3],
        },
        "experiments": experiments,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def slurm_job_of(rule: str, experiment: str) -> str | None:
    """The SLURM id of the running job of `rule` for `experiment` (the executor names it in the comment)."""
    queue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True, text=True).stdout
    for line in queue.splitlines():
        job, _, comment = line.partition(" ")
        if comment.startswith(f"rule_{rule}") and experiment in comment:
            return job
    return None


ONE_THREAD = ["--set-threads", *(f"{rule}=1" for rule in ("train", "time_steps", "certify", "attack", "bounds"))]


def snakemake(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=HANG_SECONDS)


MEASURED = ["experiment", "certifier", "clean_accuracy", "pgd_accuracy", "vra", "soundness_violations"]


def test_the_digits_experiments_run_through_slurm_as_they_run_here(slurm_cluster, tmp_path):
    cache = tmp_path / "cache"
    data = digits_config(tmp_path / "data.yaml", tmp_path / "data", cache)
    splits = [str(cache / f"digits-{split}.pt") for split in ("train", "test")]
    prepared = snakemake(*splits, "--cores", "1", "--configfile", str(data))  # once, before both runs read it
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    # both runs at once, one thread per job, so that the node's two CPUs run two SLURM jobs at a time
    local = digits_config(tmp_path / "local.yaml", tmp_path / "local", cache)
    local_log = open(tmp_path / "snakemake-local.log", "w")  # noqa: SIM115 - a file: a pipe would fill and stall it
    here = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(local), *ONE_THREAD],
        cwd=ROOT,
        stdout=local_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    results = tmp_path / "slurm"
    config = digits_config(tmp_path / "slurm.yaml", results, cache)
    command = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--configfile", str(config)]
    command += ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2", "--verbose"]
    command += ONE_THREAD
    log = open(tmp_path / "snakemake-slurm.log", "w")  # noqa: SIM115 - closed below
    run = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        scratch = results / "runs" / CANCELLED / "scratch.pt"
        wait_for(lambda: scratch.exists() or run.poll() is not None, HANG_SECONDS, f"{CANCELLED}'s first epoch")
        job = slurm_job_of("train", CANCELLED)
        assert job is not None and run.poll() is None, "the training job was not found running under SLURM"
        subprocess.run(["scancel", job], check=True)  # as a preemption would
        run.wait(timeout=HANG_SECONDS)
        here.wait(timeout=HANG_SECONDS)
    finally:
        for process in (run, here):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
        log.close()
        local_log.close()
    assert here.returncode == 0, (tmp_path / "snakemake-local.log").read_text()[-3000:]
    output = (tmp_path / "snakemake-slurm.log").read_text()
    assert run.returncode == 0, output[-4000:]
    calls = [line for line in output.splitlines() if "sbatch call:" in line]
    assert len(calls) == output.count("submitted with SLURM jobid") >= 22  # 4 × 5 jobs, a retry, the report
    assert not [call for call in calls if "--gpus" in call or "--gres" in call]  # device: cpu asks for no GPU
    assert all(" -p cpu" in call for call in calls)  # the config's cpu partition, for every job

    train_log = (results / "logs" / "train" / f"{CANCELLED}.log").read_text()
    assert "resuming after epoch" in train_log  # the retry continued from the scratch file
    resumed_after = int(train_log.split("resuming after epoch ")[1].split()[0])
    assert 0 <= resumed_after < CANCELLED_EPOCHS - 1
    history = pd.read_csv(results / "runs" / CANCELLED / "history.csv")
    assert history["epoch"].tolist() == list(range(CANCELLED_EPOCHS))  # every epoch once
    assert not scratch.exists()

    slurm_runs = pd.read_csv(results / "tables" / "runs.csv")[MEASURED].sort_values("experiment")
    local_runs = pd.read_csv(tmp_path / "local" / "tables" / "runs.csv")[MEASURED].sort_values("experiment")
    assert len(slurm_runs) == 4
    pd.testing.assert_frame_equal(slurm_runs.reset_index(drop=True), local_runs.reset_index(drop=True))
    columns = ["experiment", "clean", "pgd", "vra"]
    slurm_table = pd.read_csv(results / "tables" / "table1.csv")[columns]
    local_table = pd.read_csv(tmp_path / "local" / "tables" / "table1.csv")[columns]
    pd.testing.assert_frame_equal(slurm_table, local_table)
