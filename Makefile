# The two commands a new user needs: `make run` (the full pipeline) and `make test`.
# Each bootstraps its own environment from the lock file: uv (installed with pip if absent),
# then .venv synced with --frozen so nothing resolves differently from uv.lock.
SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STAMP := $(VENV)/.synced
DATASET ?= ml-latest-small
PYTEST_ARGS ?=

.PHONY: run test setup bench clean

$(UV):
	$(PYTHON) -m pip install --user --quiet uv

$(STAMP): pyproject.toml uv.lock | $(UV)
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --all-groups
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/movierec pipeline --dataset $(DATASET)

test: $(STAMP)
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/ingest.py

clean:
	rm -rf $(VENV) .movierec .pytest_cache
