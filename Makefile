# Quick start:  make run   (install + the whole pipeline against the simulator)
#               make test  (install + the test suite)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-test run test test-all slow soak anyday bench clean

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

# The long drills (whole pipeline under supervisord: kill -9, crash loops, the browser, TLS, faults,
# ten minutes of strict keep-alive) and the soak; CI runs them after the default suite.
slow: install-test
	$(BIN)/pytest -q --runslow -m slow

soak: install-test
	$(BIN)/pytest -q --runslow tests/integration/test_soak.py

# The suite on other days: a Saturday, a CME holiday, the spring DST change (tests/anyday/run,
# libfaketime). The date-sensitive tests: every unit test, and the integration tests that read
# days, sessions, searches and session files (the sim's REST, the keeper, the gateway's EOD, the
# engine, the CLI, feed, replay). The others start from a stated market day as well.
ANYDAY_DAYS := "2027-01-09 12:00 America/New_York" "2026-12-25 12:00 America/New_York" "2027-03-14 01:50 America/New_York"
ANYDAY_TESTS ?= tests/unit $(addprefix tests/integration/test_,sim_api.py sim_brackets.py positions_keeper.py \
	orders_eod.py orders_bracket.py engine_process.py cli.py feed_sim.py inference_replay.py replay.py)
anyday: install-test
	for d in $(ANYDAY_DAYS); do tests/anyday/run "$$d" $(ANYDAY_TESTS) || exit 1; done

# Every benchmark, flat out and at the live cadence (one op per 1 s idle; tests/bench/_kit.py), each
# with its bare floor measured in the same run; JSON under logs/bench/. About 9 minutes on a quiet
# 2-core box (orders_faults: 80 s, a 20 s broker freeze and 2.5 s REST delays). BENCH_BARS (idle
# periods per measured op, default 10) buys better p99s for more time.
BENCHES := bus inference orders orders_faults feed pipeline sim backtest
bench: install-test
	@mkdir -p logs/bench; start=$$(date +%s); for b in $(BENCHES); do echo "== bench_$$b"; \
	  $(BIN)/python -m tests.bench.bench_$$b > logs/bench/$$b.out 2>&1 || { tail -20 logs/bench/$$b.out; exit 1; }; \
	  echo "   $$(( $$(date +%s) - start )) s"; done

clean:
	rm -rf $(VENV) logs/state
	find run logs/supervisor -mindepth 1 ! -name .gitkeep -delete
