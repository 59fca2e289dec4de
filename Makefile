# Two commands on a fresh machine: `make run` (the main job) and `make test`.
# Each creates .venv/ when missing. torch comes first, pinned, so that no other build is pulled in:
# torch==2.13.0 is the CPU wheel on CPU-only machines of this project's kind, and PyPI's default
# (CUDA) build on a Linux GPU machine. Another build: `make setup TORCH_SPEC="torch==X.Y.Z ..."`,
# or install torch into .venv/ yourself first (an installed torch is never replaced).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint format ui chromium postgresql bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m pipeline $(ARGS)

# Two phases: the tests on two workers (pytest-xdist), then the `serial` ones alone, since they time
# signals, kills and deadlines against running jobs. Exit status 5 (nothing selected) is no failure.
# test-fast has no second phase: every serial test is also slow.
XDIST ?= -n 2 --dist worksteal
test: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not serial" $(PYTEST_ARGS) || test $$? -eq 5
	$(PY) -m pytest -m serial $(PYTEST_ARGS) || test $$? -eq 5

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not realdata and not serial" $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): lint and format check; `make format` rewrites.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port 5000

# Headless Chromium (Debian's package) for the MLflow UI test; its fixture runs this when missing.
chromium:
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

postgresql:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)

bench: $(STAMP)
	$(PY) benchmarks/bench_cpu.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
