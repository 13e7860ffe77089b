# Quick start: `make demo` (main job on the built-in default) and `make test` (the test suite).
# Each creates/reuses .venv and installs what it needs (scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test setup setup-dev bench clean

setup:
	@bash scripts/setup_env.sh

setup-dev:
	@bash scripts/setup_env.sh dev

demo: setup
	$(VENV)/bin/geo3d demo

test: setup-dev
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup-dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .pytest_cache
