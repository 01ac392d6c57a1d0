# The two commands a new user needs: `make run` (the full pipeline) and `make test`.
# Each bootstraps its own environment from the lock file: uv (installed with pip if absent),
# then .venv synced with --frozen so nothing resolves differently from uv.lock, its bytecode
# compiled once (an environment with PYTHONDONTWRITEBYTECODE would otherwise compile every
# module from source in every process: ~10 s per pipeline run).
SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STAMP := $(VENV)/.synced
DATASET ?= ml-latest-small
PYTEST_ARGS ?=

.PHONY: run test lint setup bench clean browser postgres

$(UV):
	$(PYTHON) -m pip install --user --quiet uv

$(STAMP): pyproject.toml uv.lock | $(UV)
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --all-groups --compile-bytecode
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/movierec pipeline --dataset $(DATASET)

# The 25 slowest tests are listed at the end: where the suite's 15-minute budget goes.
test: lint browser postgres
	$(VENV)/bin/pytest -n 2 --durations=25 $(PYTEST_ARGS)

# Ruff (rules in pyproject.toml): formatting and lint must be clean before any test runs.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The page test drives /usr/bin/chromium; install it when missing and we can (root with apt-get).
# Never fails: without a browser that test skips with the reason.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser test"; \
		{ apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		  { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } || \
		echo "could not install chromium: the browser test will be skipped"; \
	fi; true

# The stack's tests run a real PostgreSQL; install it when missing and we can (root with apt-get).
# Never fails: without PostgreSQL those tests skip with the reason.
postgres:
	@scripts/install-postgresql.sh >/dev/null 2>&1 || echo "PostgreSQL unavailable: the stack tests will be skipped"

bench: $(STAMP)
	$(VENV)/bin/python bench/ingest.py

clean:
	rm -rf $(VENV) .movierec .pytest_cache
