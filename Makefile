# Quick start:  make run   (install + the whole pipeline against the simulator)
#               make test  (install + the test suite)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-test run test test-all soak bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .
	mkdir -p logs/supervisor run

install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	mkdir -p logs/supervisor run

run: install
	$(BIN)/scalper run

test: install-test
	$(BIN)/pytest -q

test-all: install-test
	$(BIN)/pytest -q --runslow

soak: install-test
	$(BIN)/pytest -q --runslow -m slow

bench: install-test
	for b in tests/bench/bench_*.py; do $(BIN)/python -m tests.bench.$$(basename $$b .py) || exit 1; done

clean:
	rm -rf $(VENV) logs/state
	find run logs/supervisor -mindepth 1 ! -name .gitkeep -delete
