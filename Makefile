# Train large models on Kubernetes, hands-on. `make help` lists the commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCAN_VENV := .venv-scan
# The stamp changes when pyproject.toml does, so `make setup` reinstalls only when the pins move.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# `make course LANG=zh_CN` runs the Chinese notebooks (only a LANG given on the command line counts).
COURSE_LANG := $(if $(filter command line,$(origin LANG)),$(LANG),en)
COURSE_SUFFIX := $(if $(filter en,$(COURSE_LANG)),,-$(COURSE_LANG))
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help setup course test bench gpu lab lint format notebooks translations clean student

help:  ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml and installed by this same command.
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

# The two environments are independent, so they are built side by side (a fresh clone's setup is
# mostly pip on one core). Checkov is optional here: without it the scan test installs it itself.
setup:  ## create .venv, install the course (torch CPU, helpers, labs, test tools), Checkov, Prometheus, Chromium
	@$(MAKE) --no-print-directory -j2 $(STAMP) scan-env
	@scripts/ensure-prometheus.sh
	@scripts/ensure-chromium.sh

scan-env:
	@$(MAKE) --no-print-directory $(SCAN_VENV)/bin/checkov \
		|| echo "note: Checkov was not installed (tests/manifests/test_checkov.py will try again)"

course: setup  ## execute every notebook on the local backend -> build/course/ (LANG=zh_CN: 中文)
	$(PY) -m kubecourse.course --out build/course$(COURSE_SUFFIX) --lang $(COURSE_LANG)

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

notebooks: setup  ## regenerate notebooks/*.ipynb from the .py sources, and notebooks/zh_CN/ from the catalogs
	$(PY) -m kubecourse.course --sync
	$(PY) -m kubecourse.i18n update
	$(PY) -m kubecourse.i18n build

translations: setup  ## list the stale/untranslated catalog entries per notebook (fails when any)
	$(PY) -m kubecourse.i18n status

student: setup  ## student notebooks -> build/student/ (every solution replaced by a stub, checks kept)
	$(PY) -m kubecourse.student --out build/student

clean:  ## remove build outputs and local job state (keeps .venv)
	rm -rf build .course

# --- issue 10: security scan, lab image, course cluster -----------------------------------------
.PHONY: scan scan-setup scan-env image cluster cluster-down

$(SCAN_VENV)/bin/checkov: scan/requirements.txt
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet -r scan/requirements.txt
	touch $@

scan-setup: $(SCAN_VENV)/bin/checkov  ## create .venv-scan with the pinned Checkov

scan: $(SCAN_VENV)/bin/checkov  ## Checkov over manifests/: fails on a finding not explained in scan/checkov-baseline.yaml
	$(SCAN_VENV)/bin/python scan/checkov_scan.py

image:  ## build the lab image (docker, podman or buildah), load/push it, record its digest (DRY_RUN=1 prints)
	scripts/build-image.sh $(if $(DRY_RUN),--dry-run,)

cluster:  ## kind cluster (or GPU=1 KUBECONFIG=... an existing one) with the pinned operators (DRY_RUN=1 prints)
	scripts/cluster-up.sh $(if $(GPU),--existing --gpu,--kind) $(if $(DRY_RUN),--dry-run,)

cluster-down:  ## remove what `make cluster` installed (DRY_RUN=1 prints)
	scripts/cluster-down.sh $(if $(GPU),--existing,--kind) $(if $(DRY_RUN),--dry-run,)

