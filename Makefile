# Two commands on a fresh machine: `make run` (the main job) and `make test`.
# Each creates .venv/ when missing, from the committed lock (requirements-lock.txt: exact versions of
# every package, transitive ones included) so that every machine installs what the suite passed with.
# torch stays out of the lock and comes first, pinned, so that no other build is pulled in:
# torch==2.13.0 is the CPU wheel on CPU-only machines of this project's kind, and PyPI's default
# (CUDA) build on a Linux GPU machine. Another build: `make setup TORCH_SPEC="torch==X.Y.Z ..."`,
# or install torch into .venv/ yourself first (an installed torch is never replaced).
# uv installs the lock (several times faster than pip); `make lock` regenerates it with pip-tools.
# It also compiles the installed packages to bytecode once (--compile-bytecode): uv does not by
# default, and where PYTHONDONTWRITEBYTECODE is set (it is on this project's CI machines) Python would otherwise compile
# transformers, mlflow, scikit-learn ... from source again in every process it starts.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PIP_TOOLS_SPEC ?= pip-tools==7.6.2
LOCK := requirements-lock.txt
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LATEST_VENV ?= /tmp/pipeline-latest-venv
# pip-tools, kept out of the project's own environment
LOCK_TOOLS := $(VENV)/lock-tools

.PHONY: setup bytecode lock test-latest run test test-fast lint format ui chromium postgresql bench gpu-check docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q "$$(grep "^uv==" $(LOCK))"
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --compile-bytecode -r $(LOCK)
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	$(PY) -m pipeline.env check $(LOCK)
	touch $(STAMP)

# The project's own modules compiled to bytecode, each checked against its source's hash when imported (an
# edited file is never run stale). The installed packages are compiled at install (above); the project is
# installed editable, so where PYTHONDONTWRITEBYTECODE is set every process would compile its modules again:
# 0.16 s of a job's imports against 0.06 s compiled (python -X importtime, AVX-512 machine, BENCHMARKS.md).
bytecode: $(STAMP)
	$(PY) -m compileall -q --invalidation-mode checked-hash pipeline benchmarks

# The lock, from pyproject.toml's ranges, resolved by pip against this machine's indexes (torch at
# TORCH_SPEC, left out of the file). To upgrade a dependency: change its range, `make lock`, `make test`.
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/python -m pip install -q "$(PIP_TOOLS_SPEC)"; }
	echo "$(TORCH_SPEC)" > $(LOCK_TOOLS)/torch-constraint.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile -q --extra test --strip-extras \
		--unsafe-package torch --no-emit-index-url --no-emit-find-links \
		--constraint $(LOCK_TOOLS)/torch-constraint.txt --upgrade -o $(LOCK) pyproject.toml

# `make test-fast` in a throwaway venv of the newest versions pyproject.toml allows: run it before
# `make lock` and after a dependency's release; a failure names the packages that differ from the lock.
test-latest:
	rm -rf $(LATEST_VENV) && $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(LATEST_VENV)/bin/python -m pip install -q -e ".[test]"
	touch $(LATEST_VENV)/.installed
	$(LATEST_VENV)/bin/python -m pipeline.env diff $(LOCK)
	$(MAKE) test-fast VENV=$(LATEST_VENV) || { $(LATEST_VENV)/bin/python -m pipeline.env diff $(LOCK) \
		--failed; exit 1; }

run: bytecode
	$(PY) -m pipeline $(ARGS)

# Two phases: the tests on two workers (pytest-xdist), then the `timed` ones (they time signals, kills
# and deadlines against running jobs), also two at a time but with no training-heavy test beside them:
# a timed test mostly waits on its processes' start-up, so two of them share the cores without starving
# each other. Exit status 5 (nothing selected) is no failure. test-fast has no second phase: every timed
# test is also slow. Each phase ends with its 15 slowest set-ups and tests (DURATIONS), so that where the
# time goes stays visible.
XDIST ?= -n 2 --dist worksteal
TIMED_XDIST ?= -n 2 --dist worksteal
DURATIONS ?= --durations=15
test: bytecode
	$(PY) -m pytest $(XDIST) $(DURATIONS) -m "not timed" $(PYTEST_ARGS) || test $$? -eq 5
	$(PY) -m pytest $(TIMED_XDIST) $(DURATIONS) -m timed $(PYTEST_ARGS) || test $$? -eq 5

test-fast: bytecode
	$(PY) -m pytest $(XDIST) $(DURATIONS) -m "not slow and not realdata and not timed" $(PYTEST_ARGS)

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

bench: bytecode
	$(PY) benchmarks/bench_cpu.py $(ARGS)

# Everything that needs a CUDA GPU (benchmarks/gpu_check.py): the gpu tests, the default recipe on
# hardware=gpu against the plain script in bf16, hardware=multi_gpu with 1 process; under 8 minutes on
# one GPU, results in benchmarks/results/. Without CUDA: one line, exit 0.
gpu-check: bytecode
	@$(PY) benchmarks/gpu_check.py $(ARGS)

# docs/config.md, the config reference, from the declarations (pipeline/stages/settings.py).
docs: $(STAMP)
	$(PY) -m pipeline.schema_docs

clean:
	rm -rf outputs multirun .pytest_cache
