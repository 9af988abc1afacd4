"""The install a user gets is the one tested: a wheel built from the project, installed into a fresh virtual
environment, ships every C source `gloro/native.py` compiles and certifies exactly as the editable install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A short training and certification run; prints where gloro and its compiled library came from, and the numbers.
PROBE = """
import json
import gloro
from gloro import native
from gloro.data import load_digits

x, y = load_digits("train")
net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.3, seed=0)
gloro.train(net, x[:256], y[:256], gloro.TrainingRecipe(epochs=1, batch_size=64, seed=0), progress=False)
certificate = net.freeze().certify(load_digits("test")[0][:64])
library = native.library()
print(json.dumps({
    "package": gloro.__file__,
    "sources": [str(source) for source in native.SOURCES],
    "library": None if library is None else library._name,
    "lipschitz": net.lipschitz_constant().tolist(),
    "predictions": certificate.predictions.tolist(),
    "radius": certificate.radius.tolist(),
}))
"""


def probe(python: Path, cache: Path, cwd: Path) -> dict:
    """Run PROBE with `python` in isolated mode (no current folder or PYTHON* variables on its path)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "GLORO_NATIVE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(python), "-I", "-c", PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_wheel_in_a_fresh_environment_compiles_the_native_path_and_certifies_as_the_editable_install(tmp_path):
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler: the compiled path cannot be built here (set CC)")
    # the sources a release would hold, copied so that the build leaves nothing in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT / "gloro", source / "gloro", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels]
    built = subprocess.run([*map(str, build), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("gloro_bench-*.whl")

    # a fresh environment: the project only from the wheel, its dependencies from this one's site-packages
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    site = Path(
        subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        .decode()
        .strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")  # a plain path: its .pth files unread
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    installed = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]

    from_wheel = probe(python, tmp_path / "cache-wheel", tmp_path)
    editable = probe(Path(sys.executable), tmp_path / "cache-editable", tmp_path)
    assert Path(from_wheel["package"]).is_relative_to(site), from_wheel["package"]
    assert Path(editable["package"]).is_relative_to(ROOT), editable["package"]
    # every source the compiled library is built from is installed, and the library was built from them here
    missing = [path for path in from_wheel["sources"] if not (Path(path).is_file() and Path(path).is_relative_to(site))]
    assert not missing, f"the wheel lacks sources that gloro/native.py compiles: {missing}"
    assert from_wheel["library"] is not None and Path(from_wheel["library"]).is_relative_to(tmp_path / "cache-wheel")
    # same sources, compiler, machine and thread count: the same numbers, bit for bit
    for key in ("lipschitz", "predictions", "radius"):
        assert from_wheel[key] == editable[key], key
