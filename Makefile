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
	@# Every function is its own `main` module, so each is type-checked on its own.
	for f in functions/*/main.py; do $(VENV)/bin/mypy "$$f" || exit 1; done
	@if command -v terraform >/dev/null 2>&1; then \
		terraform fmt -check -recursive infra/terraform; \
	else \
		echo "terraform is not on PATH: skipping terraform fmt -check"; \
	fi

.PHONY: bundle deploy

## bundle: one self-contained zip per cloud function in build/bundles (main.py, shared/, requirements.txt)
bundle: install
	$(PY) -m infra.bundle

## deploy: bundle, then terraform init + apply with TFVARS (default infra/terraform/terraform.tfvars);
## AUTO_APPROVE=1 applies without asking
TFVARS ?= infra/terraform/terraform.tfvars
deploy: install
	$(PY) -m infra.deploy --tfvars $(TFVARS) $(if $(AUTO_APPROVE),--auto-approve)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
