# Train large models on Kubernetes, hands-on. `make help` lists the commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The stamp changes when pyproject.toml does, so `make setup` reinstalls only when the pins move.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help setup course test bench gpu lab lint format notebooks clean

help:  ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml and installed by this same command.
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)  ## create .venv, install the course (torch CPU, helpers, labs, test tools), Prometheus
	@scripts/ensure-prometheus.sh

course: setup  ## execute every notebook on the local backend -> build/course/ (+ summary.md)
	$(PY) -m kubecourse.course --out build/course

# pytest-xdist workers for `make test` (tests/conftest.py gives each its own state and cores);
# `make test TEST_WORKERS=0` runs everything in one process, in file order.
TEST_WORKERS ?= 2

test: setup  ## run all tests (helpers, manifests, labs, every notebook under papermill)
	$(PY) -m pytest -n $(TEST_WORKERS)

bench: setup  ## run benchmarks/ -> build/bench/results.json and results.md
	$(PY) -m benchmarks --out build/bench

gpu:  ## GPU acceptance on one GPU: labs + notebooks 01/06/07 on CUDA -> build/gpu-acceptance/ (CPU: skips)
	benchmarks/gpu/acceptance.sh --out build/gpu-acceptance

lab: setup  ## open JupyterLab on the notebooks (works as root too)
	$(PY) -m pip install --quiet -e ".[lab]"
	$(PY) -m jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

lint: setup  ## ruff lint + format check (Python and notebooks)
	$(VENV)/bin/ruff check helpers labs tests benchmarks notebooks
	$(VENV)/bin/ruff format --check helpers labs tests benchmarks notebooks/*.py

notebooks: setup  ## regenerate notebooks/*.ipynb (no outputs) from their jupytext .py sources
	$(PY) -m kubecourse.course --sync

clean:  ## remove build outputs and local job state (keeps .venv)
	rm -rf build .course
