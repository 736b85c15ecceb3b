# Everything a newcomer needs: `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install lock run test test-fast lint format migrate sql openapi demo check bench bench-quick wrk

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Two steps: the lock, every file checked against its hash; then the two packages, editable,
# built by the lock's hatchling (pip's hash-checking mode refuses editable requirements).
$(STAMP): pyproject.toml clients/python/pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e ./clients/python
	@touch $(STAMP)

install: $(STAMP) ## Create .venv/: requirements/dev.txt, then the package and its client (editable)

# pip-compile runs against PyPI alone, whatever pip configuration this machine has.
PIP_TOOLS := pip-tools==7.6.2
LOCK_VENV := .venv-lock
COMPILE := env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null \
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

lock: ## Rewrite requirements/*.txt from the pyproject.toml files (LOCK_ARGS=--upgrade: newest)
	test -x $(LOCK_VENV)/bin/pip-compile || \
		{ $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet $(PIP_TOOLS); }
	$(COMPILE) -o requirements/runtime.txt pyproject.toml
	$(COMPILE) --only-build-deps --build-deps-for wheel -o requirements/build.txt pyproject.toml
	$(COMPILE) -c requirements/runtime.txt -c requirements/build.txt --extra dev --extra bench \
		--all-build-deps -o requirements/dev.txt pyproject.toml clients/python/pyproject.toml

run: install ## Serve on 127.0.0.1:8000 against the embedded SQLite default, migrating first
	$(BIN)/restock-service serve --migrate --host 127.0.0.1 --port 8000

test: install ## Run the whole suite (SQLite and PostgreSQL), the client's tests too (about 7 min)
	$(BIN)/pytest

test-fast: install ## The rules and the in-process API on SQLite: no processes, browser, PgBouncer or installs (about 1 min)
	RESTOCK_TEST_BACKENDS=sqlite $(BIN)/pytest -q -m "not (processes or browser or pgbouncer or install)"

lint: install ## ruff (lint and format check) and mypy, on the server and the client
	$(BIN)/ruff check src tests migrations bench clients
	$(BIN)/ruff format --check src tests migrations bench clients
	$(BIN)/mypy src clients/python/src

format: install ## Rewrite the code in the house format
	$(BIN)/ruff check --fix src tests migrations bench clients
	$(BIN)/ruff format src tests migrations bench clients

migrate: install ## Bring RESTOCK_DATABASE_URL to the current schema
	$(BIN)/restock-service migrate

demo: install ## Run the demo on ./restock-demo.db: a mixed Rakuten cancel batch; it prints how to serve it
	$(BIN)/restock-service demo

check: install ## Verify the books of RESTOCK_DATABASE_URL
	$(BIN)/restock-service check

wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

bench: install wrk ## Benchmark against pgbench in one run (a few minutes); see bench/README.md
	$(BIN)/python bench/run.py

bench-quick: install wrk ## The benchmark's quick mode (CI): every phase briefly, all answers 200
	$(BIN)/python bench/run.py --quick

sql: install ## Rewrite src/restock_service/store/sent/: each PostgreSQL statement as it is sent, keyed or not
	$(BIN)/python -m restock_service.store.statements

openapi: install ## Rewrite openapi/openapi.json from the app
	$(BIN)/restock-service openapi > openapi/openapi.json
