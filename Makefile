# Entry points. On a fresh machine: `make run` (the service) and `make test` (the suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test test-unit lint fmt bench bench-quick audit clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: start the service on 127.0.0.1:8000 (embedded PostgreSQL unless LEDGER_DATABASE_URL is set)
run: $(STAMP)
	$(BIN)/ledger serve --psp-sandbox

## test: the whole suite against real PostgreSQL (embedded; also LEDGER_TEST_DATABASE_URL if set)
test: $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

## lint: ruff, mypy --strict and the import-linter layer contracts
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain commands projections read_api infrastructure
	$(BIN)/lint-imports

## bench: every performance workload, raw-PostgreSQL ceiling included; writes bench/results.json
bench: $(STAMP)
	$(BIN)/ledger bench

bench-quick: $(STAMP)
	$(BIN)/ledger bench --quick

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

audit: $(STAMP)
	$(BIN)/ledger audit verify

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
