# `make run`: set up .venv and run the main job. `make test`: set up .venv and run the tests, but for the
# SLURM test, which `make test-slurm` runs (it starts a one-node cluster; .ci/run runs both).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-slurm lint bench clean

$(STAMP): pyproject.toml requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores all

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not slurm" -n auto --maxprocesses 4 --dist worksteal

test-slurm: $(STAMP)
	$(PY) -m pytest -q -m slurm

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/epochs.py
	$(PY) benchmarks/versus_official.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
