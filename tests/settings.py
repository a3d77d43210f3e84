"""Settings for integration tests: test_project's, plus endpoints that only tests need.

Timing and limit settings can be set from the environment of a server process, so a test
can run gunicorn with, say, a half-second ping interval; so can a PostgreSQL database (with
or without Django's pool) in place of test_project's SQLite file.
"""

import os
import sys

from test_project.settings import *  # noqa: F403

# DJANGO_HIDE_MODULES="psycopg,psycogreen": those modules cannot be imported in this process
# (a None entry in sys.modules makes `import` raise ImportError), so a server can run as on a
# machine without them, e.g. Django on psycopg2 although psycopg 3 is installed. Settings are
# imported before any database backend, so the backend never sees them.
for _module in filter(None, os.environ.get("DJANGO_HIDE_MODULES", "").split(",")):
    sys.modules.setdefault(_module.strip(), None)  # type: ignore[assignment]

WEBSOCKET_URLCONF = "tests.websocket_urls"

# The tests never run collectstatic. Without a STATIC_ROOT, WhiteNoise serves the finders' files
# and does not warn, in every handler built under pytest (where DEBUG is off), that it is missing.
STATIC_ROOT = None

# No ops snapshots (test_project/ops.py) from the tests' servers: they would add a publish a
# second to brokers whose traffic tests count. The ops tests run test_project.settings.
MIDDLEWARE = [name for name in MIDDLEWARE if name != "test_project.ops.OpsPublisherMiddleware"]  # noqa: F405

for _name, _type in (
    ("WEBSOCKET_PING_INTERVAL", float),
    ("WEBSOCKET_PING_TIMEOUT", float),
    ("WEBSOCKET_HANDSHAKE_TIMEOUT", float),
    ("WEBSOCKET_SEND_TIMEOUT", float),
    ("WEBSOCKET_CLOSE_TIMEOUT", float),
    ("WEBSOCKET_MAX_CONNECTIONS", int),
    ("WEBSOCKET_MAX_CONNECTIONS_PER_USER", int),
    ("WEBSOCKET_CHANNEL_QUEUE_SIZE", int),
    ("WEBSOCKET_HISTORY_SIZE", int),
    ("WEBSOCKET_PRESENCE_TTL", float),
    ("WEBSOCKET_BLOCKED_LOOP_THRESHOLD", float),
    ("WEBSOCKET_OUTBOX_RELAY_INTERVAL", float),
):
    if os.environ.get(_name):
        globals()[_name] = _type(os.environ[_name])
# WEBSOCKET_MESSAGE_RATE_LIMIT="count,seconds" or "none" is read by test_project's settings.


def _postgres_database() -> dict | None:
    """``DATABASES["default"]`` on PostgreSQL when ``DJANGO_POSTGRES_HOST`` is set, else None (SQLite).

    Knobs (``tests/postgres_server.py``'s ``env()`` sets them): ``DJANGO_POSTGRES_HOST``, ``_PORT``,
    ``_NAME``, ``_USER``; ``DJANGO_DB_POOL`` the pool's ``max_size`` (absent or 0: no pool),
    ``DJANGO_DB_POOL_TIMEOUT`` seconds a connection request waits for the pool (default 10);
    ``DJANGO_CONN_MAX_AGE`` (default 0; Django refuses a value other than 0 with a pool).
    """
    host = os.environ.get("DJANGO_POSTGRES_HOST")
    if not host:
        return None
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": host,
        "PORT": os.environ.get("DJANGO_POSTGRES_PORT", "5432"),
        "NAME": os.environ.get("DJANGO_POSTGRES_NAME", "django_websocket"),
        "USER": os.environ.get("DJANGO_POSTGRES_USER", "postgres"),
        "CONN_MAX_AGE": int(os.environ.get("DJANGO_CONN_MAX_AGE") or 0),
        "OPTIONS": {},
    }
    pool_size = int(os.environ.get("DJANGO_DB_POOL") or 0)
    if pool_size:
        # min_size 0: an idle worker holds no backend, so a test can count them down to zero.
        database["OPTIONS"]["pool"] = {
            "min_size": 0,
            "max_size": pool_size,
            "timeout": float(os.environ.get("DJANGO_DB_POOL_TIMEOUT") or 10),
        }
    return database


if _postgres := _postgres_database():
    DATABASES = {"default": _postgres}
