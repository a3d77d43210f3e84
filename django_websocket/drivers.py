"""The database layer made safe for greenlets, once per worker, after gevent patched.

Under the gevent worker one blocking call stops every socket of the process: a database
driver that waits for the server in C, without yielding to gevent's loop, turns a 1 s
query into a 1 s freeze of the whole worker, and a query longer than ``--timeout`` into a
worker killed by gunicorn. :func:`prepare_for_gevent` (called by the worker when the
application is loaded, before it serves) makes each driver cooperate or refuses to start:

- **psycopg 3** (≥ 3.1.14) cooperates when it is imported after gevent patched. Imported
  before (``gunicorn --preload``: the application is loaded in the master), it chose its
  blocking C wait function and bound the unpatched ``threading``, ``time.sleep`` and
  ``selectors`` names (psycopg_pool too): they are switched to what psycopg would have
  picked after the patch.
- **psycopg2** blocks unless a wait callback is installed: psycogreen's is installed when
  psycogreen is importable, otherwise the worker refuses to boot.
- **mysqlclient** (``MySQLdb``) blocks, with no hook to make it cooperate: refused.
  PyMySQL (installed as ``MySQLdb`` or not) is pure Python and cooperates.
- **Django's connection handler** created before the patch (``--preload`` again) keeps its
  connections in a real thread-local, one slot shared by every greenlet, and Django
  refuses to use one connection from two greenlets; it is given a fresh, greenlet-local
  store. The cache handler needs nothing: its store is context-local, and every greenlet
  has its own context whether or not the patch came first.

:func:`blocking_driver` says which configured database would still block the worker; the
system check ``django_websocket.W004`` reports it in ``manage.py check``.

Nothing happens at import time, and this module imports no Django at its top: gunicorn's
master imports the worker (so this module) before gevent patched, and importing
``django.db`` there would create the very thread-local connection handler described above.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import gevent
from gevent import monkey

from .exceptions import WebSocketError

#: The first psycopg 3 release that notices gevent's patch and avoids its blocking wait (psycopg#527).
PSYCOPG_COOPERATIVE = (3, 1, 14)

#: Modules whose import-time bindings of patched names are rebound (see _rebind_patched_names).
PSYCOPG_PACKAGES = ("psycopg", "psycopg_pool")

#: Objects that belonged to gunicorn's master (Django connection stores, connection pools):
#: kept referenced for the worker's life and never touched. Collecting them would run their
#: finalisers, and libpq's PQfinish says goodbye on a socket the master still uses.
_inherited: list[Any] = []


class BlockingDriverError(WebSocketError):
    """A configured database's driver would block the whole worker and cannot be made to cooperate.

    Raised by :func:`prepare_for_gevent`, so gunicorn reports that the worker failed to boot
    with this message (what blocks, why it matters, how to fix it).
    """


def prepare_for_gevent(databases: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Make the database layer safe for greenlets; call once per worker, after gevent patched.

    *databases* is ``settings.DATABASES`` (the default; none when Django is not configured).
    Returns one sentence per change made, saying what and why, for the worker to log; an
    empty list when there was nothing to do (the usual case without ``--preload``). Calling
    it again changes nothing more.

    Raises :class:`BlockingDriverError` when a database's driver would block the worker
    (psycopg2 without psycogreen, mysqlclient, a psycopg 3 that cannot wait cooperatively),
    and ``RuntimeError`` when gevent has not patched the process.
    """
    if not monkey.is_module_patched("select") or not monkey.is_module_patched("threading"):
        raise RuntimeError("prepare_for_gevent() must run after gevent's monkey.patch_all()")
    if databases is None:
        databases = _configured_databases()
    notes = _reset_handlers()
    notes += _make_psycopg_cooperative()
    for alias, settings_dict in databases.items():
        driver = _driver(settings_dict)
        if driver is None:
            continue
        if driver.__name__ == "psycopg2" and _psycopg2_callback() is None and _install_psycogreen():
            notes.append(
                f"Installed psycogreen's gevent wait callback for psycopg2 (database {alias!r}): "
                "without it every query would block every socket of this worker."
            )
        problem = blocking_driver(settings_dict)
        if problem:
            raise BlockingDriverError(f"The database {alias!r} {problem}")
    return notes


def blocking_driver(settings_dict: Mapping[str, Any]) -> str | None:
    """Why this database's driver would block the gevent worker even after :func:`prepare_for_gevent`.

    *settings_dict* is one entry of ``DATABASES``. Returns a sentence starting with a verb
    ("uses mysqlclient, which ...: fix"), or ``None`` when the driver cooperates or is not a
    network driver (SQLite), or when the backend or its driver cannot be imported (Django
    itself reports that on first use). Imports the backend's module, never connects.
    """
    driver = _driver(settings_dict)
    name = getattr(driver, "__name__", None)
    if name == "psycopg2" and _psycopg2_callback() is None and not _importable("psycogreen.gevent"):
        return (
            "uses psycopg2 without a gevent wait callback, and psycogreen is not installed: every "
            "query would block every socket of the worker until the database answers. "
            "Install psycogreen (pip install psycogreen: the worker installs its wait callback at "
            "start-up) or use psycopg 3 (pip install 'psycopg[binary,pool]')."
        )
    if name == "MySQLdb":
        return (
            "uses mysqlclient (MySQLdb), which waits for the server in C without yielding to gevent: "
            "every query would block every socket of the worker. Use PyMySQL instead: "
            "pip install PyMySQL, and call pymysql.install_as_MySQLdb() at the top of settings.py."
        )
    version = str(getattr(driver, "__version__", ""))
    if name == "psycopg" and _version(version) < PSYCOPG_COOPERATIVE:
        return (
            f"uses psycopg {version}, which waits for the server without yielding to gevent: "
            "every query would block every socket of the worker. "
            "Upgrade: pip install 'psycopg[binary,pool]>=3.1.14'."
        )
    return None


def database_vendor(settings_dict: Mapping[str, Any]) -> str | None:
    """The ``vendor`` of this database's Django backend ("postgresql", "mysql", "sqlite"…).

    ``None`` when the backend or its driver cannot be imported (Django reports that itself).
    """
    backend = _backend(settings_dict)
    return getattr(getattr(backend, "DatabaseWrapper", None), "vendor", None)


# ---------------------------------------------------------------- which driver


def _configured_databases() -> Mapping[str, Mapping[str, Any]]:
    from django.conf import settings

    return settings.DATABASES if settings.configured else {}


def _backend(settings_dict: Mapping[str, Any]) -> ModuleType | None:
    from django.core.exceptions import ImproperlyConfigured
    from django.db.utils import load_backend

    engine = settings_dict.get("ENGINE")
    if not engine:
        return None
    try:
        return load_backend(engine)
    except (ImportError, ImproperlyConfigured):
        return None  # a missing driver: Django's own error on first use says so


def _driver(settings_dict: Mapping[str, Any]) -> ModuleType | None:
    """The DB-API module the backend talks through (PyMySQL's when installed as ``MySQLdb``)."""
    return getattr(_backend(settings_dict), "Database", None)


def _version(version: str) -> tuple[int, ...]:
    """``"3.1.14"`` → ``(3, 1, 14)``; an unparsable version → ``()`` (older than any)."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(number) for number in match.groups()) if match else ()


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- psycopg2


def _psycopg2_callback() -> Any:
    return importlib.import_module("psycopg2.extensions").get_wait_callback()


def _install_psycogreen() -> bool:
    """Install psycogreen's wait callback; False without psycogreen (blocking_driver() then refuses)."""
    try:
        psycogreen = importlib.import_module("psycogreen.gevent")
    except ImportError:
        return False
    psycogreen.patch_psycopg()
    return True


# ---------------------------------------------------------------- psycopg 3


def _make_psycopg_cooperative() -> list[str]:
    """Undo what importing psycopg 3 (and psycopg_pool) before gevent's patch chose.

    psycopg picks its wait function at import: the C ``wait_c``, which blocks the worker,
    unless gevent has patched ``select`` by then. Reloading ``psycopg.waiting`` makes psycopg
    choose again, now seeing the patch; the connection module looks ``waiting.wait`` and
    ``waiting.wait_conn`` up at every call, so the new choice applies at once.
    """
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is None:
        return []  # not imported yet: it will see the patch and choose well itself
    changes = []
    blocking_wait = getattr(waiting, "wait_c", None)
    if blocking_wait is not None and waiting.wait is blocking_wait:
        importlib.reload(waiting)
        if waiting.wait is waiting.wait_c:
            raise BlockingDriverError(
                "psycopg's wait function is wait_c, which blocks every socket of the worker while a "
                "query runs (PSYCOPG_WAIT_FUNC=wait_c in the environment, or a psycopg older than "
                "3.1.14). Unset PSYCOPG_WAIT_FUNC, or upgrade: pip install 'psycopg[binary,pool]>=3.1.14'."
            )
        changes.append(f"switched psycopg.waiting.wait from the blocking wait_c to {waiting.wait.__name__}")
    rebound = _rebind_patched_names(PSYCOPG_PACKAGES)
    if rebound:
        changes.append(f"rebound {', '.join(rebound)} to gevent's cooperative versions")
    if not changes:
        return []
    return [
        "psycopg was imported before gevent patched the process (gunicorn --preload?), so it would "
        f"block the worker while waiting for the database: {'; '.join(changes)}."
    ]


def _rebind_patched_names(packages: tuple[str, ...]) -> list[str]:
    """In the modules of *packages*, replace every name bound to an object gevent has since
    patched (``Lock = threading.Lock``, ``from selectors import DefaultSelector``,
    ``sleep = time.sleep``…) by the patched object, as an import after the patch would have.

    Returns the ``module.name`` of each rebinding. Blocking originals left in psycopg_pool
    would be ``time.sleep`` in its reconnection loop and real locks shared by greenlets.
    """
    patched_by_original: dict[int, tuple[Any, Any]] = {}
    # gevent.monkey.saved: {module name: {attribute: original object}} for everything patched.
    for module_name, originals in getattr(monkey, "saved", {}).items():
        module = sys.modules.get(module_name)
        if module is None:
            continue  # also skips gevent's own bookkeeping entries, which name no module
        for attribute, original in originals.items():
            patched = getattr(module, attribute, None)
            if callable(original) and patched is not None and patched is not original:
                patched_by_original[id(original)] = (original, patched)
    rebound = []
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.split(".")[0] not in packages:
            continue
        for attribute, value in list(vars(module).items()):
            entry = patched_by_original.get(id(value))
            if entry is not None and entry[0] is value:
                setattr(module, attribute, entry[1])
                rebound.append(f"{module_name}.{attribute}")
    return rebound


# ---------------------------------------------------------------- Django's handlers


def _reset_handlers() -> list[str]:
    """Give Django's connection (and, if ever needed, cache) handler a greenlet-local store
    when the one it has is shared by every greenlet of this thread."""
    notes = []
    db = sys.modules.get("django.db")
    if db is not None and _shared_by_greenlets(db.connections):
        _inherited.append(db.connections._connections)
        db.connections._connections = _fresh_store(db.connections)
        _forget_inherited_pools()
        notes.append(
            "Django's database connections were set up before gevent patched the process (gunicorn "
            "--preload?) in a store shared by every greenlet: gave this worker a greenlet-local one. "
            "Connections opened in the master are left untouched."
        )
    cache = sys.modules.get("django.core.cache")
    if cache is not None and _shared_by_greenlets(cache.caches):
        _inherited.append(cache.caches._connections)
        cache.caches._connections = _fresh_store(cache.caches)
        notes.append(
            "Django's cache handler was set up before gevent patched the process in a store shared "
            "by every greenlet: gave this worker a greenlet-local one."
        )
    return notes


def _shared_by_greenlets(handler: Any) -> bool:
    """Whether another greenlet sees what this one stores in *handler*'s per-thread store.

    Tested by behaviour rather than by the store's type, which is asgiref's business.
    """
    store = handler._connections
    probe = "django_websocket_probe"
    setattr(store, probe, True)
    try:
        return bool(gevent.spawn(hasattr, store, probe).get())
    finally:
        delattr(store, probe)


def _fresh_store(handler: Any) -> Any:
    from asgiref.local import Local

    # What BaseConnectionHandler.__init__ does, now that threading.local is gevent's.
    return Local(handler.thread_critical)


def _forget_inherited_pools() -> None:
    """Drop the psycopg pools created in the master: their worker threads did not survive the
    fork and their connections belong to the master. Django creates this worker's own."""
    postgresql = sys.modules.get("django.db.backends.postgresql.base")
    pools = getattr(getattr(postgresql, "DatabaseWrapper", None), "_connection_pools", None)
    if pools:
        _inherited.append(dict(pools))
        pools.clear()
