# The two commands of the README: `make demo` runs the main job (the scenarios on an owned
# embedded server, no Redis needed), `make test` the tests.
# Each creates .venv and installs shunter into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-unit lint typecheck check clean bench bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shunter demo

test: $(STAMP)
	$(BIN)/pytest

# The tests that need no server (decide(), Backoff, the Lua include resolver ...): seconds.
test-unit: $(STAMP)
	$(BIN)/pytest -m "not redis"

# Benchmarks (BENCHMARKS.md): shunter and two peers, pinned, each in its own virtualenv.
PEER := bench/.venv-peer
$(PEER)/.installed-stamp:
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/pip install --quiet "arq==0.28.0" "saq[redis,hiredis]==0.26.4" "typing_extensions>=4.12"
	touch $@

bench: $(STAMP) $(PEER)/.installed-stamp
	$(BIN)/python -m bench.run --runs 3 --uvloop --peers arq,saq --peer-python $(PEER)/bin/python

bench-quick: $(STAMP) $(PEER)/.installed-stamp
	$(BIN)/python -m bench.run --quick --uvloop --peers arq,saq --peer-python $(PEER)/bin/python

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench faults
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The fault suite at full size (minutes): writes docs/reliability-report.md and the
# "Fault suite results" section of docs/reliability.md. `make test` runs the short version.
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python -m faults --full --report docs/reliability-report.md --update-docs
