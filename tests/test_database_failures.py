"""Integration: a database that cannot serve a websocket view closes that socket, clearly, and only it.

A real gunicorn on the session's PostgreSQL, with Django's pool cut down to one connection
and a one-second pool timeout: a view waiting inside ``atomic()`` holds the only connection,
so the next view that queries times out on the pool.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosedError

from tests.postgres_server import PostgresServer, postgres_bin
from tests.servers import gunicorn
from tests.test_database_integration import DatabaseServer, Sockets

pytestmark = pytest.mark.skipif(
    postgres_bin() is None,
    reason="PostgreSQL is not installed (/usr/lib/postgresql/<version>/bin); `make test` installs it",
)


@pytest.fixture(scope="module")
def starved(postgres_db: PostgresServer) -> Iterator[DatabaseServer]:
    """psycopg 3 with a pool of one connection that a view waits at most one second for."""
    dbname = "starved"
    postgres_db.create_database(dbname, template=postgres_db.dbname)
    env = {**postgres_db.env(pool=1), "DJANGO_POSTGRES_NAME": dbname, "DJANGO_DB_POOL_TIMEOUT": "1"}
    with gunicorn(env=env) as server:
        yield DatabaseServer(server, postgres_db, dbname)


def test_pool_timeout_closes_with_1013_and_spares_the_others(starved):
    """The pool's timeout closes the waiting socket with 1013 and a log line; the holder and an echo go on."""
    with Sockets(starved.server) as sockets:
        [holder] = sockets.open("/db/atomic/")
        assert holder.recv(timeout=10) == "in-transaction"  # it holds the pool's only connection
        [echo, writer] = sockets.open("/echo/") + sockets.open("/db/write/")

        writer.send("no connection for me")
        with pytest.raises(ConnectionClosedError) as closed:
            writer.recv(timeout=10)
        assert closed.value.rcvd.code == 1013
        assert closed.value.rcvd.reason == "database unavailable, try again later"
        starved.server.wait_for_log(
            r"websocket view /db/write/: database unavailable, try again later "
            r"\(OperationalError: [^)]*\); closing with 1013"
        )

        echo.send("still here")
        assert echo.recv(timeout=5) == "still here"
        holder.send("commit")
        assert holder.recv(timeout=10) == "committed"


def test_after_the_timeout_the_pool_serves_again(starved):
    """Once the holder committed, a new socket writes through the pool at once: nothing was left broken."""
    with Sockets(starved.server) as sockets:
        [writer] = sockets.open("/db/write/")
        writer.send("a row")
        assert int(writer.recv(timeout=10)) > 0
