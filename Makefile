# The two commands: `make dev` runs the whole system locally, `make test` runs every test.
# Both set up what they need on a fresh machine (system packages, a virtualenv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: dev test lint install deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## install: the Python virtualenv with the pinned dependencies
install: $(STAMP)

## deps: system packages (PostgreSQL, pgTAP, pg_prove), installed only when missing
deps:
	bash infra/local/install-system-deps.sh

## dev: a local PostgreSQL with bootstrap, migrations and seed (Ctrl-C stops it)
dev: deps install
	$(PY) -m infra.local.dev

## test: every test, against a throwaway PostgreSQL unless DATABASE_URL is given
test: deps install
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff (lint + format check) and mypy --strict
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
