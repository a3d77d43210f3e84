"""Shared fixtures: a migrated SQLite file for real servers, a running gunicorn, Redis, PostgreSQL.

Tests that use the test database (pytest-django's ``django_db`` mark or ``db`` fixtures, or
a Django ``TestCase``) are marked ``db_both``: ``make test`` runs them a second time on a
real PostgreSQL (``-m db_both`` under ``python -m tests.postgres_server``).

Tests that start a :class:`~tests.redis_server.RedisServer` (themselves, or through a fixture
such as ``redis_server``, or as the ``broker`` fixture's ``redis`` run) are marked ``redis``:
``make test`` runs them again with it standing for a Sentinel group (``-p tests.sentinel_plugin
-m redis``), then for a Redis Cluster (``-p tests.cluster_plugin -m redis``).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from types import CodeType

import pytest

from tests.servers import ROOT, Server, gunicorn

#: Creates user "alice" and a logged-in session for her; prints the session key.
MAKE_SESSION = """
import django
django.setup()
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
user, _ = get_user_model().objects.get_or_create(username="alice")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.save()
print(session.session_key)
"""


def manage(*args: str, env: dict[str, str]) -> str:
    """Run ``test_project/manage.py ARGS`` with ``tests.settings`` and *env*; return its stdout."""
    return subprocess.run(
        [sys.executable, str(ROOT / "test_project" / "manage.py"), *args],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        cwd=ROOT,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture(scope="session")
def server_db(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated SQLite file for server processes: ``{"path": ..., "session": <alice's session key>}``."""
    path = tmp_path_factory.mktemp("db") / "server.sqlite3"
    manage("migrate", "--noinput", "-v", "0", env={"DJANGO_DB_PATH": str(path)})
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_DB_PATH": str(path)}
    session = subprocess.run(
        [sys.executable, "-c", MAKE_SESSION],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"path": str(path), "session": session}


@pytest.fixture(scope="module")
def server(server_db: dict[str, str]) -> Iterator[Server]:
    """gunicorn with our worker serving ``test_project.wsgi:websocket`` (tests' URLconf)."""
    with gunicorn(env={"DJANGO_DB_PATH": server_db["path"]}) as running:
        yield running


@pytest.fixture(scope="module")
def redis_server():
    """A real ``redis-server`` on 127.0.0.1 and a free port (see ``tests/redis_server.py``)."""
    from tests.redis_server import RedisServer

    with RedisServer() as running:
        yield running


@pytest.fixture(scope="module")
def fanout_server(redis_server, server_db: dict[str, str]) -> Iterator[Server]:
    """gunicorn with two workers sharing ``redis_server`` (through the ``REDIS_URL`` fallback)."""
    env = {"REDIS_URL": redis_server.url, "DJANGO_DB_PATH": server_db["path"]}
    with gunicorn(workers=2, env=env) as running:
        yield running


@pytest.fixture(scope="session")
def alice_pk(server_db: dict[str, str]) -> int:
    """The primary key of "alice" in ``server_db``."""
    import sqlite3

    with sqlite3.connect(server_db["path"]) as db:
        return db.execute("SELECT id FROM auth_user WHERE username = 'alice'").fetchone()[0]


@pytest.fixture(scope="session")
def editors_group(server_db: dict[str, str], alice_pk: int) -> str:
    """An auth group "editors" in ``server_db`` with alice in it; returns its name."""
    import sqlite3

    with sqlite3.connect(server_db["path"]) as db:
        db.execute("INSERT OR IGNORE INTO auth_group (name) VALUES ('editors')")
        (group_id,) = db.execute("SELECT id FROM auth_group WHERE name = 'editors'").fetchone()
        db.execute(
            "INSERT OR IGNORE INTO auth_user_groups (user_id, group_id) VALUES (?, ?)", (alice_pk, group_id)
        )
    return "editors"


@pytest.fixture(scope="module")
def redis_cluster():
    """A real six-node Redis Cluster on 127.0.0.1 (see ``tests/redis_cluster.py``)."""
    from tests.redis_cluster import RedisClusterGroup

    with RedisClusterGroup() as running:
        yield running


@pytest.fixture(scope="module")
def sentinel_group():
    """A real Sentinel group: primary, replica, three sentinels (see ``tests/redis_sentinel.py``)."""
    from tests.redis_sentinel import SentinelGroup

    with SentinelGroup() as running:
        yield running


#: Parametrize a test using ``broker`` on Sentinel too (a few representative ones: it starts a group).
ALSO_ON_SENTINEL = pytest.mark.parametrize(
    "broker", ["embedded", "redis", "cluster", "sentinel"], indirect=True
)


@pytest.fixture(params=["embedded", "redis", "cluster"])
def broker(request):
    """Run a test on the in-process broker, a real Redis, then a real Redis Cluster.

    Yields ``None``, the ``RedisServer`` or the ``RedisClusterGroup``; ``ALSO_ON_SENTINEL`` adds
    a run on a Sentinel group's primary (the ``SentinelGroup``).
    """
    from django.test import override_settings

    if request.param == "embedded":
        with override_settings(WEBSOCKET_REDIS_URL=None), pytest.MonkeyPatch.context() as patch:
            patch.delenv("REDIS_URL", raising=False)
            yield None
        return
    if request.param == "sentinel":
        group = request.getfixturevalue("sentinel_group")
        with override_settings(WEBSOCKET_REDIS_URL=group.url()):
            yield group
        return
    server = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    with override_settings(WEBSOCKET_REDIS_URL=server.url):
        yield server


# ---------------------------------------------------------------- PostgreSQL

#: Fixtures through which a test reaches pytest-django's test database.
DB_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "db_both: uses the test database; `make test` runs it on SQLite, then on PostgreSQL"
    )
    config.addinivalue_line(
        "markers", "redis: starts a RedisServer; `make test` runs it on Redis, Sentinel and Cluster"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """A failing test's report shows the logs of the servers its fixtures give it.

    Those of every fixture value with a ``log_sections()`` method (``tests.servers.Server``:
    gunicorn's log; ``tests.test_nginx.Nginx``: nginx's logs and those of the gunicorns behind it).
    """
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            log_sections = getattr(value, "log_sections", None)
            if callable(log_sections) and not isinstance(value, type):
                for title, text in log_sections():
                    report.sections.append((f"{name}: {title}", text))
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests ``db_both`` and ``redis`` by what they use (so new ones are never left out)."""
    from django.test import TransactionTestCase

    for item in items:
        if starts_redis(item):
            item.add_marker(pytest.mark.redis)
        cls = getattr(item, "cls", None)
        if (
            item.get_closest_marker("django_db") is not None
            or DB_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or (cls is not None and issubclass(cls, TransactionTestCase))
        ):
            item.add_marker(pytest.mark.db_both)


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL cluster for the session (``tests/postgres_server.py``), max_connections 100.

    Skips when the PostgreSQL binaries are not installed (``make test`` installs them).
    """
    from tests.postgres_server import PostgresServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/<version>/bin): run `make setup`")
    with PostgresServer(max_connections=100) as running:
        yield running


@pytest.fixture(scope="session")
def postgres_db(postgres_server):
    """``postgres_server`` with its database migrated, for gunicorn servers (given ``.env()``)."""
    manage("migrate", "--noinput", "-v", "0", env=postgres_server.env())
    return postgres_server


# ---------------------------------------------------------------- Redis, Sentinel, Cluster


def starts_redis(item: pytest.Item) -> bool:
    """Whether *item* starts a ``RedisServer``: the ``broker`` fixture's ``redis`` run, or a test
    or one of its fixtures (the whole closure: ``fanout_server`` through ``redis_server``) whose
    code names ``RedisServer``."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("broker") == "redis":
        return True
    functions = [getattr(item, "obj", None)]
    # pytest has no public map from a test's fixture names to their functions.
    fixtureinfo = getattr(item, "_fixtureinfo", None)
    if fixtureinfo is not None:
        for definitions in fixtureinfo.name2fixturedefs.values():
            functions += [definition.func for definition in definitions]
    return any(_names(function, "RedisServer") for function in functions)


def _names(function: object, name: str) -> bool:
    """Whether *function*'s code (or a function or lambda inside it) uses the global or imported *name*."""
    code = getattr(inspect.unwrap(getattr(function, "__func__", function)), "__code__", None)
    return code is not None and _code_names(code, name)


def _code_names(code: CodeType, name: str) -> bool:
    return name in code.co_names or any(
        _code_names(const, name) for const in code.co_consts if isinstance(const, CodeType)
    )
