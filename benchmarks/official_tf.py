"""Measure training throughput of the official TensorFlow GloRo library.

Stdlib only: it runs in the project's venv and drives a separate TF venv
(`ensure_official_venv`) in which `official_tf_worker.py` does the timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REQUIREMENTS = ("tensorflow-cpu==2.15.1",)
# gloro declares `tensorflow>=2.3`, which tensorflow-cpu does not satisfy by
# name, so pip would pull the full `tensorflow` wheel on top; gloro itself only
# imports tensorflow and numpy, both already brought in by tensorflow-cpu.
NO_DEPS_REQUIREMENTS = ("gloro==1.1.1",)
MARKER_NAME = ".gloro-bench-installed.json"
WORKER = Path(__file__).resolve().with_name("official_tf_worker.py")
PIP_TIMEOUT_S = 3600
WORKER_TIMEOUT_S = 3600
TAIL_CHARS = 4000


def venv_python(path: Path) -> Path:
    """Return the interpreter path inside a venv at `path` (POSIX or Windows)."""
    if os.name == "nt":
        return path / "Scripts" / "python.exe"
    return path / "bin" / "python"


def expected_marker() -> dict[str, list[str]]:
    """Describe what a finished install contains, so changed pins trigger a redo."""
    return {"requirements": list(REQUIREMENTS), "no_deps": list(NO_DEPS_REQUIREMENTS)}


def install_is_complete(path: Path) -> bool:
    """Tell whether a previous install at `path` finished with the current pins."""
    marker = path / MARKER_NAME
    if not marker.is_file() or not venv_python(path).exists():
        return False
    try:
        return json.loads(marker.read_text()) == expected_marker()
    except (OSError, ValueError):
        return False


def tail(text: str) -> str:
    """Keep only the end of long tool output for error messages."""
    return text[-TAIL_CHARS:]


def clean_env() -> dict[str, str]:
    """Copy the environment minus variables that would leak our venv into theirs."""
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(name, None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_checked(command: list[str], what: str, timeout: float) -> str:
    """Run a command; raise RuntimeError with its output tail if it fails."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or "") + (error.stderr or "")
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        raise RuntimeError(f"{what} timed out after {timeout}s:\n{tail(output)}") from error
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail(done.stdout + done.stderr)}")
    return done.stdout


def create_fresh_venv(path: Path) -> None:
    """Create an empty venv at `path`, wiping a half-finished one first."""
    if path.exists() and any(path.iterdir()):
        if not (path / "pyvenv.cfg").is_file():
            raise RuntimeError(f"{path} exists and is not a venv; refusing to overwrite it")
        shutil.rmtree(path)
    venv.EnvBuilder(with_pip=True, clear=True).create(path)


def pip_install(python: Path, packages: tuple[str, ...], no_deps: bool = False) -> None:
    """Install pinned packages into the venv with its own pip."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if no_deps:
        command.append("--no-deps")
    run_checked([*command, *packages], f"pip install {' '.join(packages)}", PIP_TIMEOUT_S)


def verify_imports(python: Path) -> None:
    """Import tensorflow and gloro once so a broken install is caught before marking."""
    code = "import tensorflow, gloro.models; print(tensorflow.__version__, gloro.__file__)"
    # -I keeps the current directory (maybe the repo, with its own `gloro`) off sys.path.
    run_checked([str(python), "-I", "-c", code], "import check of tensorflow and gloro", PIP_TIMEOUT_S)


def ensure_official_venv(path: Path) -> Path:
    """Create and fill the official TF GloRo venv at `path` once; return its python."""
    path = Path(path).resolve()
    python = venv_python(path)
    if install_is_complete(path):
        return python
    create_fresh_venv(path)
    pip_install(python, REQUIREMENTS)
    pip_install(python, NO_DEPS_REQUIREMENTS, no_deps=True)
    verify_imports(python)
    (path / MARKER_NAME).write_text(json.dumps(expected_marker()))
    return python


def worker_command(
    python: Path,
    architecture: str,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    power_iterations: int,
    refresh_iterates: bool,
) -> list[str]:
    """Build the command line that runs the timing worker in the TF venv."""
    flags = [] if refresh_iterates else ["--no-refresh-iterates"]
    return [
        # -I: keep the repo, PYTHONPATH and user site off sys.path, so `gloro` is the official one.
        str(python),
        "-I",
        str(WORKER),
        "--architecture",
        architecture,
        "--batch-size",
        str(batch_size),
        "--steps",
        str(steps),
        "--warmup-steps",
        str(warmup_steps),
        "--power-iterations",
        str(power_iterations),
        *flags,
    ]


def parse_report(stdout: str) -> dict:
    """Read the worker's JSON report from the last non-empty stdout line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("official TF worker printed no report")
    try:
        return json.loads(lines[-1])
    except ValueError as error:
        raise RuntimeError(f"official TF worker printed bad JSON:\n{tail(stdout)}") from error


def measure_official_throughput(
    python: Path,
    architecture: str = "2C2F",
    batch_size: int = 256,
    steps: int = 50,
    warmup_steps: int = 5,
    power_iterations: int = 10,
    *,
    refresh_iterates: bool = True,
) -> dict:
    """Time official GloRo training in a subprocess and return its JSON report."""
    # refresh_iterates=False skips the library's untimed iterate convergence around `fit`
    # (minutes on 6C2F); what is timed is unchanged.
    command = worker_command(
        Path(python),
        architecture,
        batch_size,
        steps,
        warmup_steps,
        power_iterations,
        refresh_iterates,
    )
    stdout = run_checked(command, f"official TF worker ({architecture})", WORKER_TIMEOUT_S)
    return parse_report(stdout)


def measure_official_epochs(
    python: Path,
    architecture: str,
    data: Path,
    epochs: int,
    batch_size: int = 256,
    power_iterations: int = 10,
    epsilon: float = 0.3,
) -> dict:
    """Time whole `fit` epochs of the official library over the arrays in `data` (.npz: images NHWC, labels)."""
    command = worker_command(Path(python), architecture, batch_size, 1, 0, power_iterations, True)
    command += ["--data", str(data), "--epochs", str(epochs), "--epsilon", str(epsilon)]
    stdout = run_checked(command, f"official TF fit epochs ({architecture})", WORKER_TIMEOUT_S)
    return parse_report(stdout)


def main() -> int:
    """Install if needed and print reports for both paper architectures."""
    python = ensure_official_venv(Path(__file__).resolve().with_name(".venv-official"))
    for architecture in ("2C2F", "6C2F"):
        print(json.dumps(measure_official_throughput(python, architecture)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
