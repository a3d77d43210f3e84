"""Tests for django_websocket.drivers, the database checks W002-W004, and the worker refusing to boot.

What ``prepare_for_gevent()`` does to a process after gevent's patch is tested in child
processes that really patch (the test process must stay unpatched); which driver blocks is
tested here with fake backends. Real gunicorn on a real PostgreSQL:
``tests/test_drivers_integration.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
from django.core.checks import WARNING
from django.test import override_settings

from django_websocket.checks import check_databases
from django_websocket.drivers import blocking_driver, database_vendor, prepare_for_gevent
from tests.servers import OUR_WORKER, ROOT

#: A PostgreSQL that is never connected to: nothing here opens a connection.
UNREACHABLE_POSTGRES = {"DJANGO_POSTGRES_HOST": "127.0.0.1", "DJANGO_POSTGRES_PORT": "9"}
POOLED = {"pool": {"max_size": 4}}
SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

#: override_settings(DATABASES=...) is what the check tests mean to do; Django warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


def postgresql(**entries) -> dict:
    return {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "127.0.0.1", **entries}


@pytest.fixture
def fake_backend(monkeypatch):
    """``fake_backend(vendor, driver)``: the ENGINE of a Django backend talking through module *driver*."""

    def make(vendor: str, driver: types.ModuleType) -> str:
        engine = f"fake_{vendor}_backend"
        base = types.ModuleType(f"{engine}.base")
        base.Database = driver
        base.DatabaseWrapper = type("DatabaseWrapper", (), {"vendor": vendor})
        monkeypatch.setitem(sys.modules, engine, types.ModuleType(engine))
        monkeypatch.setitem(sys.modules, f"{engine}.base", base)
        return engine

    return make


def module(name: str, **attributes) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


@pytest.fixture
def psycopg2_engine(fake_backend, monkeypatch):
    """A PostgreSQL backend on a fake psycopg2 with no wait callback and no psycogreen."""
    monkeypatch.setitem(
        sys.modules, "psycopg2.extensions", module("psycopg2.extensions", get_wait_callback=lambda: None)
    )
    monkeypatch.setitem(sys.modules, "psycogreen.gevent", None)  # None: `import` raises ImportError
    return fake_backend("postgresql", module("psycopg2"))


# ---------------------------------------------------------------- blocking_driver()


def test_psycopg2_without_psycogreen_blocks(psycopg2_engine):
    """psycopg2 with no wait callback and no psycogreen to install one: named, with both fixes."""
    problem = blocking_driver({"ENGINE": psycopg2_engine})
    assert problem.startswith("uses psycopg2 without a gevent wait callback")
    assert "pip install psycogreen" in problem and "psycopg 3" in problem


def test_psycopg2_with_psycogreen_or_a_callback_cooperates(psycopg2_engine, monkeypatch):
    """psycopg2 is fine when psycogreen can be installed, or a wait callback already is."""
    monkeypatch.setitem(sys.modules, "psycogreen.gevent", module("psycogreen.gevent", patch_psycopg=None))
    assert blocking_driver({"ENGINE": psycopg2_engine}) is None
    monkeypatch.setitem(sys.modules, "psycogreen.gevent", None)
    callback = module("psycopg2.extensions", get_wait_callback=lambda: print)
    monkeypatch.setitem(sys.modules, "psycopg2.extensions", callback)
    assert blocking_driver({"ENGINE": psycopg2_engine}) is None


def test_mysqlclient_blocks_and_pymysql_cooperates(fake_backend):
    """mysqlclient (MySQLdb) blocks, with PyMySQL as the fix; PyMySQL installed as MySQLdb is fine."""
    problem = blocking_driver({"ENGINE": fake_backend("mysql", module("MySQLdb"))})
    assert "mysqlclient" in problem and "pymysql.install_as_MySQLdb()" in problem
    assert blocking_driver({"ENGINE": fake_backend("mysql", module("pymysql"))}) is None


def test_old_psycopg_blocks(fake_backend):
    """psycopg older than 3.1.14 does not notice gevent; newer ones (and pre-releases of them) do."""
    assert "3.1.13" in blocking_driver(
        {"ENGINE": fake_backend("postgresql", module("psycopg", __version__="3.1.13"))}
    )
    for version in ("3.1.14", "3.3.9", "3.4.0b1"):
        engine = fake_backend("postgresql", module("psycopg", __version__=version))
        assert blocking_driver({"ENGINE": engine}) is None, version


def test_real_backends():
    """The installed psycopg 3 cooperates; SQLite and an unimportable backend are never reported."""
    assert blocking_driver(postgresql()) is None
    assert database_vendor(postgresql()) == "postgresql"
    assert blocking_driver(SQLITE) is None
    assert database_vendor(SQLITE) == "sqlite"
    assert blocking_driver({"ENGINE": "no.such.backend"}) is None
    assert database_vendor({"ENGINE": "no.such.backend"}) is None


def test_prepare_refuses_to_run_unpatched():
    """prepare_for_gevent() is for a patched worker: in an unpatched process it raises RuntimeError."""
    with pytest.raises(RuntimeError, match="patch_all"):
        prepare_for_gevent({})


# ---------------------------------------------------------------- prepare_for_gevent(), in patched children

#: After prepare_for_gevent(): how psycopg waits, and whether greenlets share a connection.
INSPECT = """
import selectors, threading, gevent, psycopg.connection, psycopg.waiting, psycopg_pool._acompat
from django.db import connections
report["wait"] = psycopg.waiting.wait.__name__
report["selector_patched"] = psycopg.waiting.DefaultSelector is selectors.DefaultSelector
report["lock_patched"] = psycopg.connection.Lock is threading.Lock
report["pool_sleep_patched"] = psycopg_pool._acompat.sleep is gevent.sleep
greenlets = [gevent.spawn(lambda: connections["default"]) for _ in range(3)]
gevent.joinall(greenlets, raise_error=True)
report["greenlet_connections"] = len({id(greenlet.value) for greenlet in greenlets})
report["again"] = drivers.prepare_for_gevent()
print(json.dumps(report))
"""


def run_child(code: str, env: dict[str, str], then: str = "") -> dict:
    """Run *code* (then *then*) in a child with ``tests.settings`` and *env*; return the JSON its
    last line prints."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + then],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_preloaded_psycopg_and_connections_are_made_greenlet_safe():
    """Loaded before the patch (--preload): psycopg gets a cooperative wait function, selector,
    locks and sleep; each greenlet gets its own connection; the master's is kept, untouched."""
    code = """
    import json, django
    django.setup()
    import psycopg, psycopg_pool
    from django.db import connections
    master_connection = connections["default"]  # created in the "master", before the patch
    master_pool = master_connection.pool  # a psycopg pool, not opened
    from gevent import monkey
    monkey.patch_all()
    from django_websocket import drivers
    report = {"notes": drivers.prepare_for_gevent()}
    report["master_pool_dropped"] = connections["default"].pool is not master_pool
    # The master's objects must stay alive: collecting them would close the master's sockets.
    import gc, weakref
    master_connection_ref = weakref.ref(master_connection)
    del master_connection, master_pool
    gc.collect()
    report["master_connection_kept"] = master_connection_ref() is not None
    """
    report = run_child(code, UNREACHABLE_POSTGRES | {"DJANGO_DB_POOL": "4"}, then=INSPECT)
    assert report["wait"] != "wait_c"
    assert report["selector_patched"] and report["lock_patched"] and report["pool_sleep_patched"]
    assert report["greenlet_connections"] == 3
    assert report["master_connection_kept"] and report["master_pool_dropped"]
    notes = "\n".join(report["notes"])
    assert "Django's database connections were set up before gevent patched" in notes
    assert f"switched psycopg.waiting.wait from the blocking wait_c to {report['wait']}" in notes
    assert report["again"] == []


def test_nothing_to_do_when_loaded_after_the_patch():
    """The usual worker (no --preload): psycopg already cooperates; nothing is changed or logged."""
    code = """
    import json
    from gevent import monkey
    monkey.patch_all()
    import django
    django.setup()
    import psycopg, psycopg_pool
    from django_websocket import drivers
    report = {"notes": drivers.prepare_for_gevent()}
    """
    report = run_child(code, UNREACHABLE_POSTGRES, then=INSPECT)
    assert report["notes"] == []
    assert report["wait"] != "wait_c" and report["greenlet_connections"] == 3


def test_psycogreen_is_installed_for_psycopg2():
    """Django on psycopg2 (psycopg 3 hidden by tests.settings): psycogreen's wait callback is installed."""
    code = """
    import json, django
    django.setup()
    from gevent import monkey
    monkey.patch_all()
    from django_websocket import drivers
    notes = drivers.prepare_for_gevent()
    import psycopg2.extensions, psycogreen.gevent
    from django.db import connection
    print(json.dumps({
        "notes": notes,
        "driver": connection.Database.__name__,
        "callback": psycopg2.extensions.get_wait_callback() is psycogreen.gevent.gevent_wait_callback,
    }))
    """
    report = run_child(code, UNREACHABLE_POSTGRES | {"DJANGO_HIDE_MODULES": "psycopg"})
    assert report["driver"] == "psycopg2"
    assert report["callback"]
    assert (
        "Installed psycogreen's gevent wait callback for psycopg2 (database 'default'): "
        "without it every query would block every socket of this worker."
    ) in report["notes"]


def test_mysqlclient_is_refused():
    """A database on mysqlclient makes prepare_for_gevent() raise BlockingDriverError, naming it."""
    code = """
    import json, sys, types
    from gevent import monkey
    monkey.patch_all()
    import django
    django.setup()
    base = types.ModuleType("fake_mysql.base")
    base.Database = types.ModuleType("MySQLdb")
    sys.modules.update({"fake_mysql": types.ModuleType("fake_mysql"), "fake_mysql.base": base})
    from django_websocket import drivers
    try:
        drivers.prepare_for_gevent({"legacy": {"ENGINE": "fake_mysql"}})
    except drivers.BlockingDriverError as error:
        print(json.dumps({"refused": str(error)}))
    """
    refused = run_child(code, {})["refused"]
    assert refused.startswith("The database 'legacy' uses mysqlclient (MySQLdb)")


def test_psycopg_forced_to_wait_c_is_refused():
    """PSYCOPG_WAIT_FUNC=wait_c (psycopg's testing knob) cannot be undone: BlockingDriverError."""
    code = """
    import json
    from gevent import monkey
    monkey.patch_all()
    import psycopg
    from django_websocket import drivers
    try:
        drivers.prepare_for_gevent({})
    except drivers.BlockingDriverError as error:
        print(json.dumps({"refused": str(error)}))
    """
    refused = run_child(code, {"PSYCOPG_WAIT_FUNC": "wait_c"})["refused"]
    assert "psycopg's wait function is wait_c" in refused and "Unset PSYCOPG_WAIT_FUNC" in refused


# ---------------------------------------------------------------- the worker and manage.py check


def test_worker_refuses_psycopg2_without_psycogreen():
    """gunicorn with our worker, psycopg2 and no psycogreen: the worker fails to boot, saying why and
    how to fix it, and gunicorn exits (status 3, "Worker failed to boot")."""
    env = {
        **os.environ,
        **UNREACHABLE_POSTGRES,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_HIDE_MODULES": "psycopg,psycogreen",
    }
    cmd = [sys.executable, "-m", "gunicorn", "-k", OUR_WORKER, "test_project.wsgi:websocket"]
    result = subprocess.run(
        [*cmd, "-b", "127.0.0.1:0", "--no-control-socket"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 3, log
    assert "BlockingDriverError: The database 'default' uses psycopg2 without a gevent wait callback" in log
    assert "pip install psycogreen" in log
    assert "Worker failed to boot" in log


def test_manage_py_check_warns_about_a_blocking_driver():
    """``manage.py check`` shows W002-W004 for PostgreSQL on psycopg2 without psycogreen, no pool,
    CONN_MAX_AGE 60 — as warnings: the command still succeeds."""
    env = {
        **os.environ,
        **UNREACHABLE_POSTGRES,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_HIDE_MODULES": "psycopg,psycogreen",
        "DJANGO_CONN_MAX_AGE": "60",
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "test_project" / "manage.py"), "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for warning in ("django_websocket.W002", "django_websocket.W003", "django_websocket.W004"):
        assert warning in result.stderr
    assert "uses psycopg2 without a gevent wait callback" in result.stderr


# ---------------------------------------------------------------- check_databases()


def check_ids(databases: dict) -> list[str]:
    with override_settings(DATABASES=databases):
        return [message.id for message in check_databases()]


def test_pooled_postgresql_and_sqlite_get_no_warning():
    """The recommended configurations: PostgreSQL with psycopg 3 and the pool, and SQLite."""
    assert check_ids({"default": postgresql(OPTIONS=POOLED), "local": SQLITE}) == []
    assert check_ids({"default": {**SQLITE, "CONN_MAX_AGE": 60}}) == []  # never warned about SQLite


def test_postgresql_without_pool():
    """W002 names the database and gives the sizing rule and the docs in its hint."""
    with override_settings(DATABASES={"default": postgresql(OPTIONS={})}):
        (warning,) = check_databases()
    assert warning.id == "django_websocket.W002"
    assert "'default'" in warning.msg and "pool" in warning.msg
    assert "workers × max_size" in warning.hint and "max_connections" in warning.hint
    assert "docs/howto/databases.md" in warning.hint


def test_conn_max_age():
    """W003 for CONN_MAX_AGE > 0 or None (persistent), not for 0."""
    for max_age in (60, None):
        assert check_ids({"default": postgresql(OPTIONS=POOLED, CONN_MAX_AGE=max_age)}) == [
            "django_websocket.W003"
        ]
    assert check_ids({"default": postgresql(OPTIONS=POOLED, CONN_MAX_AGE=0)}) == []


def test_blocking_drivers(psycopg2_engine, fake_backend):
    """W004 for psycopg2 without psycogreen and for mysqlclient; not for PyMySQL."""
    assert check_ids({"default": {"ENGINE": psycopg2_engine, "OPTIONS": POOLED}}) == ["django_websocket.W004"]
    assert check_ids({"default": {"ENGINE": fake_backend("mysql", module("MySQLdb"))}}) == [
        "django_websocket.W004"
    ]
    assert check_ids({"default": {"ENGINE": fake_backend("mysql", module("pymysql"))}}) == []


def test_warnings_can_be_silenced():
    """They are warnings (``manage.py check`` still succeeds) that SILENCED_SYSTEM_CHECKS silences."""
    databases = {"default": postgresql(OPTIONS={}, CONN_MAX_AGE=60)}
    silenced = ["django_websocket.W002", "django_websocket.W003"]
    with override_settings(DATABASES=databases):
        messages = check_databases()
        assert [message.level for message in messages] == [WARNING, WARNING]
        assert not any(message.is_silenced() for message in messages)
    with override_settings(DATABASES=databases, SILENCED_SYSTEM_CHECKS=silenced):
        assert all(message.is_silenced() for message in check_databases())
