# paycore: `make run` sets up and serves; `make test` runs every check; `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
LOCALDB := $(PY) scripts/localdb.py
# stop and clean also work before the venv exists (or after it is gone): the system python3.
LOCALDB_ANY := $$(test -x $(PY) && echo $(PY) || echo python3) scripts/localdb.py

.PHONY: setup system-deps run start stop migrate psql demo test lint sqlfluff squawk ruff pytest pgtap docs bench bench-usage bench-ecosystem bench-marketplace bench-dashboards \
	bench-stripe stripe-replay clean help

## setup: Debian packages (PostgreSQL 15, pgTAP, plpgsql_check, python3-venv) and the venv.
setup: system-deps $(STAMP)

## system-deps: only the Debian packages (scripts/setup-system.sh; installs what is missing).
system-deps:
	@scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## run: the main job. Project cluster (reused), migrations applied, webhook on HOST:PORT.
run: setup migrate
	@echo "serving:    http://$(HOST):$(PORT)/healthz (gunicorn, 2 workers; Ctrl-C stops it, make stop the cluster)"
	DATABASE_URL="$$($(LOCALDB) webhook-url)" exec $(VENV)/bin/gunicorn 'webhook.app:create_app()' \
		--bind $(HOST):$(PORT) --workers 2 --no-control-socket --access-logfile -

## start: start the project cluster (in .pgdata/, or a fallback it prints) without serving.
start: setup
	@$(LOCALDB) start

## migrate: start the cluster, create database paycore if missing, apply new migrations.
migrate: setup
	@$(LOCALDB) migrate

## psql: psql on the project database paycore as postgres (migrated first).
psql: setup
	@$(LOCALDB) psql paycore

## demo: credits and a generation through their lifecycle, step by step, on the project database.
demo: setup
	@$(PY) scripts/demo.py

## stop: stop the project cluster (kept on disk).
stop:
	@if test -x $(PY) || command -v python3 >/dev/null; then $(LOCALDB_ANY) stop; fi

## test: every check. Lint, then pgTAP and Python tests against a throwaway cluster.
test: setup lint pytest

## lint: sqlfluff, squawk and ruff.
lint: sqlfluff squawk ruff

## sqlfluff: SQL style of schema/, functions/, policies/, tests and rollbacks.
sqlfluff: setup
	$(VENV)/bin/sqlfluff lint --disable-progress-bar schema functions policies tests/helpers.sql tests/pgtap tests/supabase \
		migrations/*.rollback.sql migrations/post-apply.sql

## squawk: migration safety lint of the forward migrations.
squawk: setup
	$(VENV)/bin/squawk $$(ls migrations/[0-9]*.sql | grep -v '\.rollback\.sql$$')

## ruff: Python lint of webhook, tests, scripts, bench.
ruff: setup
	$(VENV)/bin/ruff check webhook tests scripts bench

## pytest: pgTAP files and Python tests (a throwaway cluster, or PAYCORE_TEST_DATABASE_URL).
pytest: setup
	$(VENV)/bin/pytest

## pgtap: the same pgTAP files under pg_prove, on a fresh database in the project cluster.
pgtap: setup
	@$(LOCALDB) testdb paycore_pgtap >/dev/null
	env $$($(LOCALDB) env paycore_pgtap) pg_prove tests/pgtap/*.sql

## docs: regenerate docs/api.md and docs/schema.md from a fresh database built from migrations/.
docs: setup
	$(PY) scripts/gen_docs.py

## bench: adjust_credits against a bare-SQL floor (not a test; prints ratios).
bench: setup
	$(PY) bench/credits.py

## bench-usage: check_usage_limit and get_user_app_tier against bare-SQL floors (not a test).
bench-usage: setup
	$(PY) bench/usage.py

## bench-ecosystem: get_ecosystem_stats over 1M events against a bare-SQL floor (not a test).
bench-ecosystem: setup
	$(PY) bench/ecosystem.py

## bench-marketplace: book_voucher against a bare-SQL floor, as a signed-in user (not a test).
bench-marketplace: setup
	$(PY) bench/marketplace.py

## bench-dashboards: the six marketplace dashboard views at 1M rows, with and without their index (not a test).
bench-dashboards: setup
	$(PY) bench/dashboards.py

## bench-stripe: signed Stripe events/s through gunicorn against a no-op route of the same gunicorn (not a test).
bench-stripe: setup
	$(PY) bench/stripe.py

## stripe-replay: apply the Stripe events of the last HOURS (default 72) from the Stripe API; safe to rerun.
stripe-replay: setup
	$(VENV)/bin/paycore-stripe-replay $(if $(HOURS),--hours $(HOURS))

## clean: stop and remove the project cluster (.pgdata/ and any fallback dir) and the venv.
clean:
	@if test -x $(PY) || command -v python3 >/dev/null; then $(LOCALDB_ANY) clean; fi
	rm -rf .pgdata $(VENV)

## help: this list.
help:
	@awk '/^## [a-z-]+: / { sub(/^## /, ""); t = $$0; sub(/:.*/, "", t); sub(/^[^:]*: */, "");\
		printf "  make %-12s %s\n", t, $$0 }' $(MAKEFILE_LIST)
