# The two commands: `make dev` runs the whole system locally, `make test` runs every test.
# Both set up what they need on a fresh machine (system packages, a virtualenv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: dev test lint install deps web-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,trainer,ray]'
	touch $(STAMP)

## install: the Python virtualenv with the pinned dependencies, the trainer's (torch on the CPU)
## and a local Ray head's included
install: $(STAMP)

## deps: system packages (PostgreSQL, pgTAP, pg_prove, Chromium), installed only when missing
deps:
	bash infra/local/install-system-deps.sh

# The monitor page's npm packages (uPlot), again whenever the lockfile changes.
WEB_STAMP := web/node_modules/.installed
$(WEB_STAMP): web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(WEB_STAMP)

## web-deps: the monitor page's npm packages, from web/package-lock.json
web-deps: $(WEB_STAMP)

## dev: the whole system locally, and a URL of the monitor on a demo job (Ctrl-C stops it);
## CLUSTER=ray runs the real trainer on a local Ray head instead of the simulator
CLUSTER ?= simulator
dev: deps install web-deps
	CLUSTER=$(CLUSTER) $(PY) -m infra.local.dev

## test: every test, against a throwaway PostgreSQL unless DATABASE_URL is given
test: deps install web-deps
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
