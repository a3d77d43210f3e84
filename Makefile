# django_websocket
#
#   make demo   set everything up, then serve the demo on http://127.0.0.1:8000
#   make test   set everything up, then lint, `manage.py check`, the docs, tsc and the test suite
#
# Both do all their own setup on a fresh Debian machine and are quick when already set up:
#   - system packages redis-server, nginx, chromium, postgresql (scripts/system-deps.sh; installs
#     them as root, otherwise prints the `sudo apt-get install ...` line to run);
#   - a virtualenv in .venv (Python 3.13 or 3.12, found on PATH or in pyenv; see scripts/venv.sh)
#     with `pip install -r requirements.txt -e .`, redone only when requirements.txt or setup.cfg
#     change. That is the newest supported pair, Django 6.1 on Python 3.13.
#   - TypeScript, pinned in package.json and package-lock.json, in node_modules (`npm ci`, redone
#     only when those change; node and npm are Debian's nodejs and npm, from system-deps.sh).
#
#   make test-matrix   the suite on every supported (Python, Django) pair (noxfile.py, .nox/)
#   make test-oldest   the oldest pair only, Django 5.2 on Python 3.10 (CI runs it after make test)
#
# Not advertised, but handy: make lint, make typecheck, make bench, make autobahn, make clean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Inside node_modules, which `npm ci` deletes first: a failed install leaves no stamp.
NODE_STAMP := node_modules/.installed
TSCONFIG := docs/examples/typescript/tsconfig.json
SETTINGS := test_project.settings
MANAGE := $(PY) test_project/manage.py
RUFF_PATHS := django_websocket tests test_project bench docs noxfile.py
HOST := 127.0.0.1
PORT := 8000
PYTEST_ARGS ?=

# Never let anything fetch Playwright's own browsers: the tests use /usr/bin/chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help demo test test-matrix test-oldest setup sysdeps lint check docs typecheck bench autobahn clean

help:
	@echo "make demo   set up, then serve the demo on http://$(HOST):$(PORT) (login demo / demo)"
	@echo "make test   set up, then ruff, manage.py check, the docs, tsc and pytest"

# ---------------------------------------------------------------- setup

sysdeps:
	@bash scripts/system-deps.sh

$(STAMP): requirements.txt setup.cfg | sysdeps
	@bash scripts/venv.sh $(VENV)
	@touch $@

$(NODE_STAMP): package.json package-lock.json | sysdeps
	npm ci --no-audit --no-fund
	@touch $@

setup: sysdeps $(STAMP)

# ---------------------------------------------------------------- test

lint: setup
	$(VENV)/bin/ruff check $(RUFF_PATHS)

check: setup
	DJANGO_SETTINGS_MODULE=$(SETTINGS) $(PY) -m django check

# The documentation site (Sphinx, docs/conf.py) into docs/_build/html; any warning fails it.
docs: setup
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# websocket.js's declarations and the typed example that uses them (docs/examples/typescript),
# with the pinned TypeScript: `npx --no` runs node_modules' tsc, never one it would download.
typecheck: $(NODE_STAMP)
	npx --no -- tsc --noEmit -p $(TSCONFIG)

# pytest four times: the whole suite (SQLite, plus its own PostgreSQL, Redis and nginx servers),
# then the tests that use the test database (marked db_both in tests/conftest.py: a django_db
# mark, a db fixture or a Django TestCase) again on a throwaway PostgreSQL cluster, which
# tests/settings.py switches to when DJANGO_POSTGRES_* are set; then the tests that start a
# Redis (marked redis) again with every such Redis a Sentinel group (tests/sentinel_plugin.py),
# then a six-node Redis Cluster (tests/cluster_plugin.py). Exit status 5 (every test
# deselected, say by PYTEST_ARGS=-k ...) is not a failure of the last three runs.
test: lint check docs typecheck
	$(PY) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS)
	$(PY) -m tests.postgres_server -- $(PY) -m pytest -p no:cacheprovider -ra -m db_both $(PYTEST_ARGS) \
		|| [ $$? -eq 5 ]
	$(PY) -m pytest -p no:cacheprovider -ra -p tests.sentinel_plugin -m redis $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -p no:cacheprovider -ra -p tests.cluster_plugin -m redis $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Each pair in its own virtualenv under .nox/, reused between runs; PYTEST_ARGS reach pytest.
# node_modules too: tests/test_typescript.py runs its tsc.
test-matrix: setup $(NODE_STAMP)
	$(VENV)/bin/nox -- $(PYTEST_ARGS)

test-oldest: setup $(NODE_STAMP)
	$(VENV)/bin/nox -t oldest -- $(PYTEST_ARGS)

# ---------------------------------------------------------------- demo

# The port first: with it taken, gunicorn would print its banner, retry five times and fail.
demo: setup
	@if ! error=$$($(PY) -c 'import socket, sys; s = socket.socket(); \
			s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2])))' \
			'$(HOST)' '$(PORT)' 2>&1 | tail -n 1); then \
		echo "make demo: cannot serve on $(HOST):$(PORT): $${error#*: }." >&2; \
		echo "Is another server using that port? Stop it, or pick another one: make demo PORT=8001" >&2; \
		exit 1; \
	fi
	$(MANAGE) migrate --noinput
	@if $(MANAGE) help demo_user >/dev/null 2>&1; then \
		echo "$(MANAGE) demo_user"; $(MANAGE) demo_user; \
	else \
		echo "note: no demo_user management command yet; skipping the demo login"; \
	fi
	@echo
	@echo "    Demo: http://$(HOST):$(PORT)/    (login: demo / demo; Ctrl-C to stop)"
	@echo
	exec $(VENV)/bin/gunicorn -k django_websocket.workers.GeventWebSocketWorker \
		test_project.wsgi:application -b $(HOST):$(PORT) --access-logfile -

# ---------------------------------------------------------------- extras

bench: setup
	@if [ -f bench/run.py ]; then \
		$(PY) bench/run.py; \
	else \
		echo "no bench/run.py yet"; exit 1; \
	fi

# Autobahn|Testsuite conformance run against the echo endpoint; report in autobahn-report/.
autobahn: setup
	@bash scripts/autobahn.sh

clean:
	rm -rf $(VENV) node_modules .nox build dist *.egg-info .pytest_cache .ruff_cache autobahn-report .run
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
