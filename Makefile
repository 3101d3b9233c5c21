# paycore: `make run` sets up and serves; `make test` runs every check.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
LOCALDB := $(PY) scripts/localdb.py

.PHONY: setup system-deps run start stop migrate test lint sqlfluff squawk ruff pytest pgtap bench clean

## setup: Debian packages (PostgreSQL 15, pgTAP, plpgsql_check) and the venv.
setup: system-deps $(STAMP)

system-deps:
	@scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## run: the main job. Local cluster in .pgdata/ (reused), migrations applied, webhook on HOST:PORT.
run: setup migrate
	DATABASE_URL="$$($(LOCALDB) webhook-url)" exec $(VENV)/bin/gunicorn 'webhook.app:create_app()' \
		--bind $(HOST):$(PORT) --workers 2 --no-control-socket --access-logfile -

start: setup
	@$(LOCALDB) start

migrate: setup
	@$(LOCALDB) migrate

stop:
	@test -x $(PY) && $(LOCALDB) stop || true

## test: every check. Lint, then pgTAP and Python tests against a throwaway cluster.
test: setup lint pytest

lint: sqlfluff squawk ruff

sqlfluff: setup
	$(VENV)/bin/sqlfluff lint --disable-progress-bar schema functions policies tests/helpers.sql tests/pgtap \
		migrations/*.rollback.sql migrations/post-apply.sql

squawk: setup
	$(VENV)/bin/squawk $$(ls migrations/[0-9]*.sql | grep -v '\.rollback\.sql$$')

ruff: setup
	$(VENV)/bin/ruff check webhook tests scripts bench

pytest: setup
	$(VENV)/bin/pytest

## pgtap: the same pgTAP files under pg_prove, on a fresh database in the project cluster.
pgtap: setup
	@$(LOCALDB) testdb paycore_pgtap >/dev/null
	env $$($(LOCALDB) env paycore_pgtap) pg_prove tests/pgtap/*.sql

## bench: adjust_credits against a bare-SQL floor (not a test; prints ratios).
bench: setup
	$(PY) bench/credits.py

clean: stop
	rm -rf .pgdata $(VENV)
