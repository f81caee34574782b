# Reaper developer tasks. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint format typecheck check bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Reaper with its development tools

demo: $(STAMP) ## run the demo: one reap mission over the simulated lab (python main.py)
	$(BIN)/python main.py

test: $(STAMP) ## run the whole test suite (what CI runs)
	$(BIN)/pytest

test-fast: $(STAMP) ## unit and contract tests only
	$(BIN)/pytest tests/unit tests/contract -q

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy --strict over the packages
	$(BIN)/mypy

check: lint typecheck test ## everything CI checks

bench: $(STAMP) ## scan/rules vs psutil and ps (idle, 20 busy loops), readers, start-up, fleet throughput on Redis; ~5 min (docs/benchmarks.md)
	$(BIN)/python bench/bench_scan.py --procs 1000 --busy 20 --reps 7
	$(BIN)/python bench/bench_readers.py --extra 1000 --reps 7
	$(BIN)/python bench/bench_startup.py --runs 11
	$(BIN)/python bench/bench_fleet.py --hosts 50,1000 --reps 5 --big-reps 3 --tasks 2000 --jobs 200

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
