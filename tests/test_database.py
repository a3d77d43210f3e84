"""Unit tests of django_websocket.database: which connections a waiting view gives back.

Django's connections are replaced by stand-ins recording ``close()``: the module's only
job is deciding which to close, and when. ``tests/test_database_integration.py`` proves
the behaviour on a real PostgreSQL, with and without Django's pool.
"""

from __future__ import annotations

import logging

import gevent
import pytest
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError
from django.db.backends.signals import connection_created

from django_websocket import database


class StandIn:
    """What ``release_connections()`` reads of a ``DatabaseWrapper``, and its ``close()``."""

    def __init__(self, alias: str = "default", fail: bool = False) -> None:
        self.alias = alias
        self.connection: object | None = object()
        self.in_atomic_block = False
        self.autocommit = True
        self.closes = 0
        self.fail = fail

    def close(self) -> None:
        self.closes += 1
        self.connection = None
        if self.fail:
            raise OperationalError("server closed the connection unexpectedly")


class StandInConnections:
    def __init__(self, *wrappers: StandIn) -> None:
        self.wrappers = wrappers
        self.walks = 0

    def all(self, initialized_only: bool = False) -> list[StandIn]:
        self.walks += 1
        return list(self.wrappers)


@pytest.fixture
def use(monkeypatch):
    """Install stand-in connections, opened by the current greenlet; return the installer."""

    def install(*wrappers: StandIn) -> StandInConnections:
        handler = StandInConnections(*wrappers)
        monkeypatch.setattr(database, "connections", handler)
        database.connection_opened()
        return handler

    return install


def test_a_greenlet_that_never_connected_costs_no_walk(monkeypatch):
    """A view that never touched the database: release is one set lookup, no walk over DATABASES."""
    handler = StandInConnections(StandIn())
    monkeypatch.setattr(database, "connections", handler)
    gevent.spawn(database.release_connections).join()
    assert handler.walks == 0


def test_release_closes_connections_outside_transactions(use):
    """An idle autocommit connection is closed (returned to the pool); the greenlet is forgotten."""
    conn = StandIn()
    handler = use(conn)
    database.release_connections()
    assert conn.closes == 1
    database.release_connections()
    assert handler.walks == 1  # nothing held any more: the second wait walks nothing


def test_release_keeps_a_connection_inside_atomic(use):
    """Inside transaction.atomic() the connection stays; once the block ends the next wait gives it back."""
    conn = StandIn()
    use(conn)
    conn.in_atomic_block = True
    database.release_connections()
    assert conn.closes == 0
    conn.in_atomic_block = False
    database.release_connections()
    assert conn.closes == 1


def test_release_keeps_a_connection_with_autocommit_off(use):
    """set_autocommit(False) means a transaction in progress: it is not cut short."""
    conn = StandIn()
    use(conn)
    conn.autocommit = False
    database.release_connections()
    assert conn.closes == 0


def test_release_handles_each_database_on_its_own(use):
    """Of two databases, the one in a transaction is kept and the other released."""
    busy, idle = StandIn("default"), StandIn("other")
    use(busy, idle)
    busy.in_atomic_block = True
    database.release_connections()
    assert (busy.closes, idle.closes) == (0, 1)


def test_close_connections_closes_everything(use):
    """When the view ends its connections close, even one left inside atomic()."""
    conn = StandIn()
    use(conn)
    conn.in_atomic_block = True
    database.close_connections()
    assert conn.closes == 1


def test_close_connections_in_a_greenlet_that_never_connected_costs_no_walk(monkeypatch):
    """A view that never touched the database ends without a walk over DATABASES."""
    handler = StandInConnections(StandIn())
    monkeypatch.setattr(database, "connections", handler)
    gevent.spawn(database.close_connections).join()
    assert handler.walks == 0


def test_a_failing_close_is_logged_not_raised(use, caplog):
    """A connection the server already dropped must not turn a wait into an error."""
    use(StandIn(fail=True))
    with caplog.at_level(logging.INFO, logger="django_websocket"):
        database.release_connections()
    assert "closing database connection 'default' failed" in caplog.text


def test_connection_created_marks_the_greenlet(monkeypatch):
    """Django's connection_created signal is what marks a greenlet as holding a connection."""
    database.track_connections()
    conn = StandIn()
    handler = StandInConnections(conn)
    monkeypatch.setattr(database, "connections", handler)

    def view() -> None:
        connection_created.send(sender=StandIn, connection=conn)
        database.release_connections()

    gevent.spawn(view).join()
    assert conn.closes == 1


@pytest.mark.parametrize(
    "error, code",
    [
        (OperationalError("couldn't get a connection after 10.00 sec"), 1013),
        (InterfaceError("connection already closed"), 1013),
        (IntegrityError("duplicate key"), 1011),
        (DatabaseError("other"), 1011),
        (ValueError("a bug"), 1011),
    ],
)
def test_close_codes_for_failures(error, code):
    """An unavailable database is 1013 "try again later"; anything else 1011; no internals in the reason."""
    got, reason = database.close_code_for(error)
    assert got == code
    assert str(error) not in reason
