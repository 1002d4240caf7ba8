# infoscope — every target creates the virtual environment it needs (.venv) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
RUNS_DIR ?= runs
PORT ?= 8501

.PHONY: install demo demo-score app test lint bench gpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

## The ray extra (`--executor ray`): the test suite starts a local Ray cluster; the demo never needs it
$(RAY_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -e '.[dev,ray]'
	touch $(RAY_STAMP)

install: $(STAMP)

## The main job: install, score the bundled demo, open the dashboard on http://127.0.0.1:$(PORT)
demo: install
	$(BIN)/infoscope demo --runs-dir $(RUNS_DIR) --port $(PORT)

## Score the demo without starting the dashboard (prints the run path)
demo-score: install
	$(BIN)/infoscope demo --no-app --runs-dir $(RUNS_DIR)

app: install
	$(BIN)/infoscope app --runs-dir $(RUNS_DIR) --port $(PORT)

## The whole test suite (lint, unit, property, AppTest and browser tests); installs Debian chromium if missing
test: install $(RAY_STAMP)
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check core dashboard tests bench
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check core dashboard tests bench

## Benchmarks (slow; each writes bench/results/<name>.md, then bench/RESULTS.md is assembled)
bench: install
	$(BIN)/python -m pip install -e '.[dev,bench,ray]'
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done
	$(BIN)/python bench/collect.py

## Swap faiss-cpu for faiss-gpu (the two ship the same module and must never be installed together)
gpu: install
	$(BIN)/python -m pip uninstall -y faiss-cpu
	$(BIN)/python -m pip install -e '.[gpu]' --no-deps
	$(BIN)/python -m pip install 'faiss-gpu-cu12>=1.8'

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
