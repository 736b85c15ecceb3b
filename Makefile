# Everything a newcomer needs: `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test lint format migrate openapi demo check bench bench-quick wrk

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]' \
		-e ./clients/python
	@touch $(STAMP)

install: $(STAMP) ## Create .venv/ and install the package and its client (editable), dev tools

run: install ## Serve on 127.0.0.1:8000 against the embedded SQLite default, migrating first
	$(BIN)/restock-service serve --migrate --host 127.0.0.1 --port 8000

test: install ## Run the whole suite (SQLite and PostgreSQL), the client's tests too
	$(BIN)/pytest

lint: install ## ruff (lint and format check) and mypy, on the server and the client
	$(BIN)/ruff check src tests migrations bench clients
	$(BIN)/ruff format --check src tests migrations bench clients
	$(BIN)/mypy src clients/python/src

format: install ## Rewrite the code in the house format
	$(BIN)/ruff check --fix src tests migrations bench clients
	$(BIN)/ruff format src tests migrations bench clients

migrate: install ## Bring RESTOCK_DATABASE_URL to the current schema
	$(BIN)/restock-service migrate

demo: install ## Run the demo against the embedded default: a mixed Rakuten cancel batch
	$(BIN)/restock-service demo

check: install ## Verify the books of RESTOCK_DATABASE_URL
	$(BIN)/restock-service check

wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

bench: install wrk ## Benchmark against pgbench in one run (a few minutes); see bench/README.md
	$(BIN)/python bench/run.py

bench-quick: install wrk ## The benchmark's quick mode (CI): every phase briefly, all answers 200
	$(BIN)/python bench/run.py --quick

openapi: install ## Rewrite openapi/openapi.json from the app
	$(BIN)/restock-service openapi > openapi/openapi.json
