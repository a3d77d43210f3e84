"""Integration: websocket views on a real PostgreSQL, thousands of sockets' worth of them.

One gunicorn worker (``--worker-connections 2000``) serves the ``db/...`` views of
``tests/websocket_urls.py``, which contain no connection handling at all, on the session's
PostgreSQL cluster (``max_connections = 100``, ``postgres_server`` in ``tests/conftest.py``).
Each server gets its own copy of the migrated database, so counting a database's backends
counts that server's connections only. Clients are ``websockets``' sync client over TCP.

The contract under test (``django_websocket/database.py``): a view's connections are given
back whenever it waits for the client or for channel events, unless it is inside
``transaction.atomic()``, and closed (or returned to the pool) when it ends.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.postgres_server import PostgresServer, postgres_bin
from tests.servers import Server, gunicorn
from tests.test_fanout_integration import raise_fd_limit, wait_for

pytestmark = pytest.mark.skipif(
    postgres_bin() is None,
    reason="PostgreSQL is not installed (/usr/lib/postgresql/<version>/bin); `make test` installs it",
)

SOCKETS = 300
POOL_SIZE = 20
#: Handshakes in flight at once while opening SOCKETS sockets.
OPENERS = 32
#: The worker's own limit: websocket handshakes beyond 90 % of it get 503.
WORKER_CONNECTIONS = 2000

_databases = itertools.count()


@dataclass
class DatabaseServer:
    """A gunicorn serving ``tests.settings`` on its own database of the session's cluster."""

    server: Server
    postgres: PostgresServer
    dbname: str

    def backends(self) -> int:
        """Client backends connected to this server's database."""
        return self.postgres.backends(self.dbname)

    def in_transaction(self) -> int:
        """Backends of this server's database that are idle inside an open transaction."""
        return int(
            self.postgres.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                f"AND datname = '{self.dbname}'"
            )
        )

    def rows(self, text: str) -> int:
        """Committed chat messages whose text is *text*, as another connection sees them."""
        escaped = text.replace("'", "''")
        sql = f"SELECT count(*) FROM test_project_message WHERE message = '{escaped}'"
        return int(self.postgres.psql(sql, self.dbname))


@contextmanager
def database_server(
    postgres_db: PostgresServer, extra_env: dict[str, str] | None = None, **env_options: object
) -> Iterator[DatabaseServer]:
    """gunicorn (one worker) on a fresh copy of the migrated database.

    ``env_options`` (``pool``, ``conn_max_age``) go to ``postgres_db.env()``; *extra_env* is
    added to the server's environment as is.
    """
    dbname = f"server_{next(_databases)}"
    postgres_db.create_database(dbname, template=postgres_db.dbname)
    env = {**postgres_db.env(**env_options), "DJANGO_POSTGRES_NAME": dbname, **(extra_env or {})}
    raise_fd_limit(4 * SOCKETS + 500)  # client and server ends of every socket, plus the threads' own
    with gunicorn(env=env, extra_args=["--worker-connections", str(WORKER_CONNECTIONS)]) as server:
        yield DatabaseServer(server, postgres_db, dbname)


@pytest.fixture(scope="module")
def pooled(postgres_db: PostgresServer) -> Iterator[DatabaseServer]:
    """psycopg 3 with Django's pool, ``max_size`` 20."""
    with database_server(postgres_db, pool=POOL_SIZE) as running:
        yield running


@pytest.fixture(scope="module")
def stock(postgres_db: PostgresServer) -> Iterator[DatabaseServer]:
    """Django's defaults: no pool, ``CONN_MAX_AGE = 0``."""
    with database_server(postgres_db) as running:
        yield running


class Sockets:
    """Websocket clients of one server, opened many at a time; all closed on exit."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stack = ExitStack()

    def open(self, path: str, count: int = 1) -> list[ClientConnection]:
        """Open *count* sockets to *path*, :data:`OPENERS` handshakes at a time."""
        with ThreadPoolExecutor(OPENERS) as openers:
            futures = [openers.submit(self._connect, path) for _ in range(count)]
        opened, errors = [], []
        for future in futures:
            if future.exception() is None:
                opened.append(self.stack.enter_context(future.result()))
            else:
                errors.append(future.exception())
        if errors:
            raise AssertionError(f"{len(errors)} of {count} handshakes failed: {errors[0]!r}") from errors[0]
        return opened

    def _connect(self, path: str) -> ClientConnection:
        return connect(self.server.ws_url(path), open_timeout=20, close_timeout=2)

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stack.close()


def write_each(sockets: list[ClientConnection], timeout: float = 20.0) -> list[int]:
    """Send one message on every socket at once, then return the ids they answered, in order."""
    for index, websocket in enumerate(sockets):
        websocket.send(f"row {index}")
    return [int(websocket.recv(timeout=timeout)) for websocket in sockets]


def write_in_batches(sockets: list[ClientConnection], size: int = 50) -> list[int]:
    """:func:`write_each` on *size* sockets at a time; the ids in order."""
    batches = (sockets[start : start + size] for start in range(0, len(sockets), size))
    return [row for batch in batches for row in write_each(batch)]


def assert_all_open(sockets: list[ClientConnection]) -> None:
    """Every socket answers a ping (a socket the server closed raises ``ConnectionClosed``)."""
    waiters = [websocket.ping() for websocket in sockets]
    assert all(waiter.wait(10) for waiter in waiters)


# ---------------------------------------------------------------- with Django's pool


@pytest.mark.parametrize("path", ["/db/write/", "/db/write-events/"])
def test_pool_idle_writers_hold_at_most_the_pool(pooled, path):
    """300 sockets that each wrote one row and sit idle hold at most the pool's 20 backends."""
    with Sockets(pooled.server) as sockets:
        opened = sockets.open(path, SOCKETS)
        # Had the first writers kept their connection, the later ones would wait for the pool.
        ids = write_in_batches(opened)
        assert len(set(ids)) == SOCKETS
        assert pooled.backends() <= POOL_SIZE
        assert_all_open(opened)


@pytest.mark.parametrize("path", ["/db/write/", "/db/write-events/"])
def test_pool_burst_of_writers_all_answered(pooled, path):
    """300 sockets writing at the same moment queue for the pool: every one gets its id, none is closed."""
    with Sockets(pooled.server) as sockets:
        opened = sockets.open(path, SOCKETS)
        start = time.monotonic()
        ids = write_each(opened)
        print(f"{SOCKETS} writes through a pool of {POOL_SIZE} in {time.monotonic() - start:.2f} s")
        assert len(set(ids)) == SOCKETS
        assert pooled.backends() <= POOL_SIZE
        assert_all_open(opened)


@pytest.mark.parametrize("config", ["pooled", "stock"])
def test_atomic_block_keeps_its_connection_until_it_ends(config, request):
    """A view waiting inside ``atomic()`` keeps its connection; after the commit it is given back."""
    database: DatabaseServer = request.getfixturevalue(config)
    committed = database.rows("in a transaction")
    with Sockets(database.server) as sockets:
        [echo] = sockets.open("/echo/")
        [atomic] = sockets.open("/db/atomic/")
        assert atomic.recv(timeout=10) == "in-transaction"
        # The worker ran another greenlet, so the atomic view is already waiting in receive().
        echo.send("turn")
        assert echo.recv(timeout=10) == "turn"
        assert database.in_transaction() == 1
        if config == "stock":
            # Polled: a psql client of this database that just left may still be counted.
            wait_for(lambda: database.backends() == 1, timeout=5, message="the connection was not held")
        assert database.rows("in a transaction") == committed  # not visible before the commit

        atomic.send("commit")
        assert atomic.recv(timeout=10) == "committed"
        wait_for(lambda: database.in_transaction() == 0, timeout=5, message="still in a transaction")
        assert database.rows("in a transaction") == committed + 1
        if config == "stock":
            wait_for(lambda: database.backends() == 0, timeout=5, message="connection not given back")


# ---------------------------------------------------------------- without a pool


def test_stock_idle_writers_hold_no_backend(stock):
    """Stock settings: 300 sockets that each wrote one row and sit idle hold no backend."""
    with Sockets(stock.server) as sockets:
        opened = sockets.open("/db/write/", SOCKETS)
        # Not all at once: without a pool, 300 simultaneous writers need 300 backends (of 100).
        assert len(set(write_in_batches(opened))) == SOCKETS
        wait_for(lambda: stock.backends() == 0, timeout=10, message=f"{stock.backends()} backends held")
        assert_all_open(opened)


def test_conn_max_age_does_not_leak_across_rounds(postgres_db):
    """CONN_MAX_AGE=60: four rounds of sockets that open, write once and close leave no backend behind."""
    rounds, per_round = 4, 15  # even a full leak (60) stays under max_connections
    with database_server(postgres_db, conn_max_age=60) as database:
        for _ in range(rounds):
            with Sockets(database.server) as sockets:
                write_each(sockets.open("/db/write/", per_round))
            wait_for(
                lambda: database.backends() == 0,
                timeout=10,
                message=f"{database.backends()} backends left after the sockets closed",
            )


# ---------------------------------------------------------------- a slow query blocks no one else

#: Servers on which a slow query must not stall the worker: name -> ``database_server()`` options.
#: (A psycopg2 + psycogreen entry belongs here: the ``extra_env`` that selects that driver.)
COOPERATIVE_DRIVERS = {
    "psycopg3-pool": {"pool": POOL_SIZE},
}
ECHO_SOCKETS = 20
SLOW_QUERY = 1.0


@pytest.fixture(params=list(COOPERATIVE_DRIVERS))
def cooperative(request, postgres_db: PostgresServer) -> Iterator[DatabaseServer]:
    with database_server(postgres_db, **COOPERATIVE_DRIVERS[request.param]) as running:
        yield running


def test_slow_query_leaves_other_sockets_responsive(cooperative):
    """A 1 s pg_sleep in one socket's view: 20 other sockets' echo round trips stay under 100 ms."""
    with Sockets(cooperative.server) as sockets:
        echoes = sockets.open("/echo/", ECHO_SOCKETS)
        [sleeper] = sockets.open("/db/sleep/")
        sleeper.send(str(SLOW_QUERY))
        wait_for(lambda: sleeping(cooperative), timeout=5, message="pg_sleep never started")
        round_trips = []
        while (slept := poll(sleeper)) is None:
            for websocket in echoes:
                start = time.monotonic()
                websocket.send("ping")
                assert websocket.recv(timeout=5) == "ping"
                round_trips.append(time.monotonic() - start)
        assert slept == "slept"
        assert len(round_trips) >= ECHO_SOCKETS
        print(f"{len(round_trips)} round trips during the query, slowest {max(round_trips) * 1000:.1f} ms")
        assert max(round_trips) < 0.1


def sleeping(database: DatabaseServer) -> bool:
    """Whether a ``pg_sleep`` query is running on *database* right now."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        f"AND datname = '{database.dbname}' AND query LIKE 'SELECT pg_sleep%'"
    )
    return database.postgres.psql(sql) != "0"


def poll(websocket: ClientConnection) -> str | bytes | None:
    """The next message if one has arrived, else None (without waiting)."""
    try:
        return websocket.recv(timeout=0)
    except TimeoutError:
        return None
