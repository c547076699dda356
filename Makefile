# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
WEB_CONCURRENCY ?= 2
JOB_PROCESSES ?= 2
JOB_THREADS ?= 4

.DEFAULT_GOAL := help
ML_BACKEND_PORT ?= 9090
.PHONY: help install demo serve worker ml-backend test test-sqlite test-postgres lint format bench clean

help:
	@echo "make demo    embedded default (SQLite, in-memory layer, in-process jobs), demo data, serves on :$(PORT)"
	@echo "make serve   migrate, collect static, serve with \$$WEB_CONCURRENCY ASGI processes, each connection to the least busy (environment settings)"
	@echo "make worker  Dramatiq job workers for the environment's broker"
	@echo "make ml-backend  the reference ML backend (a face detector) on :\$$ML_BACKEND_PORT (default 9090)"
	@echo "make test    the whole suite on SQLite, the database-sensitive part again on PostgreSQL"
	@echo "make lint    ruff and mypy"
	@echo "make bench   benchmarks: print a table, write JSON under bench/results/"

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo
	@echo "Serving on http://localhost:$(PORT)/  (API docs: http://localhost:$(PORT)/api/docs/, health: http://localhost:$(PORT)/healthz)"
	PUBLIC_URL=$${PUBLIC_URL:-http://localhost:$(PORT)} \
	$(VENV)/bin/uvicorn crowd.asgi:application --host $(HOST) --port $(PORT) --lifespan off \
		--ws-per-message-deflate false

serve: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m crowd.serve --host $${HOST:-0.0.0.0} --port $(PORT) --workers $(WEB_CONCURRENCY)

worker: install
	$(PY) manage.py rundramatiq --processes $(JOB_PROCESSES) --threads $(JOB_THREADS)

ml-backend: install
	$(PY) -m mlbackend --host $(HOST) --port $(ML_BACKEND_PORT)

# The SQLite pass runs everything not marked `postgres`; the PostgreSQL pass starts a
# throwaway server and runs the tests marked `postgres` or `both_databases`.
test: install test-sqlite test-postgres

test-sqlite: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install
	$(PY) -m pytest --db=postgres $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: install $(VENV)/.installed-bench
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache bench/results
