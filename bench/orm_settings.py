"""Settings of ``bench/orm.py``'s servers (ours and Channels'): test_project's, on PostgreSQL.

test_project's settings, full default middleware, ``DEBUG`` off unless ``DJANGO_DEBUG`` says
otherwise, websockets routed to ``bench/orm_urls.py``, and the database taken from the same
environment variables as ``tests/settings.py`` (``tests/postgres_server.py``'s ``env()`` sets them):

* ``DJANGO_POSTGRES_HOST``, ``_PORT``, ``_NAME``, ``_USER`` — PostgreSQL (psycopg 3); without a
  host, test_project's SQLite database is kept;
* ``DJANGO_DB_POOL`` — Django's pool (``OPTIONS["pool"]``) with this ``max_size``; empty or 0: no pool;
* ``DJANGO_DB_POOL_TIMEOUT`` — seconds a checkout may wait for the pool (psycopg_pool's default, 30);
* ``DJANGO_CONN_MAX_AGE`` — ``CONN_MAX_AGE`` (0 unless set; must be 0 with a pool);
* ``BENCH_DB_APPLICATION_NAME`` — PostgreSQL's ``application_name`` for the connections, so that
  ``pg_stat_activity`` tells which server holds which backends.
"""

import os

from test_project.settings import *  # noqa: F403

DEBUG = os.environ.get("DJANGO_DEBUG", "0").lower() not in ("0", "false", "no", "off", "")
WEBSOCKET_URLCONF = "bench.orm_urls"

if os.environ.get("DJANGO_POSTGRES_HOST"):
    _options = {}
    if int(os.environ.get("DJANGO_DB_POOL") or 0):
        _options["pool"] = {"max_size": int(os.environ["DJANGO_DB_POOL"])}
        if os.environ.get("DJANGO_DB_POOL_TIMEOUT"):
            _options["pool"]["timeout"] = float(os.environ["DJANGO_DB_POOL_TIMEOUT"])
    if os.environ.get("BENCH_DB_APPLICATION_NAME"):
        _options["application_name"] = os.environ["BENCH_DB_APPLICATION_NAME"]
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["DJANGO_POSTGRES_HOST"],
            "PORT": os.environ.get("DJANGO_POSTGRES_PORT", "5432"),
            "NAME": os.environ.get("DJANGO_POSTGRES_NAME", "postgres"),
            "USER": os.environ.get("DJANGO_POSTGRES_USER", "postgres"),
            "CONN_MAX_AGE": int(os.environ.get("DJANGO_CONN_MAX_AGE") or 0),
            "OPTIONS": _options,
        }
    }
