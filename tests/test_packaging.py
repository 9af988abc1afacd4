"""Install paths stay in step: pyproject.toml, environment.yml, requirements-nodeps.txt, Makefile, README, CI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    """{name: version} of exact pins; anything that is not `name==version` fails the test."""
    found = {}
    for requirement in requirements:
        match = PIN.match(requirement.strip())
        assert match, f"not an exact name==version pin: {requirement!r}"
        name = normalise(match.group(1))
        assert name not in found, f"{name} is pinned twice"
        found[name] = match.group(2)
    return found


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment_text() -> str:
    return (ROOT / "environment.yml").read_text()


@pytest.fixture(scope="module")
def environment(environment_text) -> dict:
    return yaml.safe_load(environment_text)


def pip_section(environment: dict) -> list[str]:
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return sections[0]


def nodeps_pins() -> dict[str, str]:
    lines = (ROOT / "requirements-nodeps.txt").read_text().splitlines()
    return pins([line for line in lines if line.strip() and not line.lstrip().startswith("#")])


def pyproject_pins(pyproject: dict) -> dict[str, str]:
    project = pyproject["project"]
    return pins([*project["dependencies"], *project["optional-dependencies"]["test"]])


def test_pyproject_and_environment_pin_the_same_versions(pyproject, environment):
    pip = [entry for entry in pip_section(environment) if not entry.startswith("-e")]
    assert pyproject_pins(pyproject) == pins(pip)


def test_environment_installs_the_project_itself(environment):
    assert "-e ." in pip_section(environment)


def test_environment_python_matches_requires_python(pyproject, environment):
    python = [d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1
    version = python[0].split("=")[-1]
    required = pyproject["project"]["requires-python"]
    assert required.startswith(">="), required
    minimum = tuple(int(n) for n in required[2:].split("."))
    assert tuple(int(n) for n in version.split(".")) >= minimum


def test_nodeps_packages_are_not_regular_dependencies(pyproject, environment):
    """torchattacks must be installed with --no-deps: it may not sit in the dependency lists."""
    nodeps = nodeps_pins()
    assert "torchattacks" in nodeps
    assert not set(nodeps) & set(pyproject_pins(pyproject))
    pip = [entry for entry in pip_section(environment) if not entry.startswith("-e")]
    assert not set(nodeps) & set(pins(pip))


def test_environment_instructs_the_nodeps_install(environment_text):
    comments = [line.lstrip("# ").strip() for line in environment_text.splitlines() if line.lstrip().startswith("#")]
    assert any(re.search(r"pip install --no-deps -r requirements-nodeps\.txt", line) for line in comments)
    # Where a comment names a no-deps package's version, it is the pinned one.
    for name, version in nodeps_pins().items():
        mentioned = re.findall(rf"{re.escape(name)}==([A-Za-z0-9.+!-]+)", environment_text, flags=re.IGNORECASE)
        assert all(found == version for found in mentioned), (name, mentioned, version)


def test_makefile_installs_the_same_torch_and_the_nodeps_file(pyproject):
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = pyproject_pins(pyproject)["torch"]
    assert re.findall(r"torch==([A-Za-z0-9.+!-]+)", makefile) == [torch_pin]
    assert re.search(r"pip install .*--no-deps -r requirements-nodeps\.txt", makefile)
    assert re.search(r"pip install .*-e '\.\[test\]'", makefile)


def test_readme_manual_install_pins_the_same_torch(pyproject):
    readme = (ROOT / "README.md").read_text()
    torch_pin = pyproject_pins(pyproject)["torch"]
    assert set(re.findall(r"torch==([A-Za-z0-9.+!-]+)", readme)) <= {torch_pin}


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def test_readme_first_code_block_is_make_run_and_make_test():
    blocks = code_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no code block"
    commands = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def test_makefile_has_run_and_test_targets():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)


def test_makefile_scripts_exist():
    makefile = (ROOT / "Makefile").read_text()
    scripts = re.findall(r"\$\(PY\) ([\w/.-]+\.py)", makefile)
    assert scripts, "no Python scripts found in the Makefile recipes"
    assert [s for s in scripts if not (ROOT / s).is_file()] == []


def test_ci_calls_make_test_and_then_the_slurm_step():
    script = ROOT / ".ci" / "run"
    lines = [line.split("#", 1)[0].strip() for line in script.read_text().splitlines()]
    commands = [line.removeprefix("timed ") for line in lines if line.removeprefix("timed ").startswith("make ")]
    assert commands == ["make test", "make test-slurm"]
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"


def test_make_test_leaves_out_only_the_slurm_test_which_make_test_slurm_runs():
    makefile = (ROOT / "Makefile").read_text()
    recipes = dict(re.findall(r"^([\w-]+):[^\n]*\n((?:\t[^\n]*\n)+)", makefile, flags=re.MULTILINE))
    # the suite on xdist's workers, and nothing else left out (no -k, no other marker)
    assert re.search(r'pytest -q -m "not slurm"( -n auto| --maxprocesses \d+| --dist \w+)*$', recipes["test"], re.M)
    assert re.search(r"pytest -q -m slurm$", recipes["test-slurm"], flags=re.MULTILINE)


def test_the_library_imports_without_the_pipeline_side():
    """`import gloro` loads neither gloro.bench nor what only the pipeline needs (pandas, matplotlib,
    snakemake): a user of the library alone does not pay for them."""
    code = (
        "import sys, gloro, gloro.certify, gloro.methods, gloro.layer_rules; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'snakemake', 'gloro.bench') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_public_api_is_a_few_names_none_hiding_a_submodule():
    """`gloro.__all__` stays within 25 names; none is also the name of a submodule of gloro, so that
    `gloro.training`, `gloro.evaluation`, `gloro.methods`, ... always reach the modules."""
    import pkgutil

    import gloro

    submodules = {module.name for module in pkgutil.iter_modules(gloro.__path__)}
    assert len(gloro.__all__) <= 25 and len(set(gloro.__all__)) == len(gloro.__all__)
    assert not set(gloro.__all__) & submodules
    assert all(hasattr(gloro, name) for name in gloro.__all__)
