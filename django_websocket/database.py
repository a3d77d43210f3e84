"""A websocket view's database connections: given back while it waits, closed when it ends.

Under the gevent worker ``django.db.connections`` is greenlet-local, so every socket's
view has connections of its own. Django gives a request's connections back when the
request ends; a websocket view may run for hours, so the handler and the socket do it
at the moments a view waits instead:

- :func:`release_connections` runs whenever the view waits for the client or for
  channel events (``receive()``, iteration, ``events()``, ``next_event()``,
  ``subscribe()``): a connection of Django's pool goes back to the pool, any other is
  closed — as between two HTTP requests with ``CONN_MAX_AGE = 0``. A connection inside
  ``transaction.atomic()`` (or with autocommit turned off) is left alone.
- :func:`close_connections` runs when the view ends, unconditionally.

Which greenlets hold an open connection is tracked through Django's
``connection_created`` signal (:func:`track_connections`), so a view that never
touches the database pays one set lookup per wait, not a walk over ``DATABASES``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.signals import connection_created
from greenlet import getcurrent

logger = logging.getLogger("django_websocket")

#: Close code for a view that failed because the database could not serve it now
#: (RFC 6455 §7.4.1 and IANA: 1013 "Try Again Later"); websocket.js reconnects after it.
DATABASE_UNAVAILABLE = 1013
#: Close code for any other failure of the view (RFC 6455: 1011 "Internal Error").
INTERNAL_ERROR = 1011

#: Greenlets that opened a database connection since they last gave theirs back.
_holding: weakref.WeakSet[Any] = weakref.WeakSet()


def connection_opened(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """``connection_created`` receiver: the current greenlet now holds a connection."""
    _holding.add(getcurrent())


def track_connections() -> None:
    """Connect :func:`connection_opened` to ``connection_created``. Idempotent.

    Called by ``AppConfig.ready()`` and by the websocket handler, so the bookkeeping is
    on even in a project that serves websockets without listing the app.
    """
    connection_created.connect(connection_opened, dispatch_uid=__name__)


def release_connections() -> None:
    """Give back the current greenlet's database connections, except those in a transaction.

    A pooled connection returns to Django's pool; any other is closed, and the next
    query opens a new one. Connections inside ``transaction.atomic()`` or with
    autocommit off are kept: their transaction goes on. Never raises: a connection
    that fails to close is dropped (Django forgets it either way) and logged.
    """
    current = getcurrent()
    if current not in _holding:
        return
    kept = False
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.in_atomic_block or not conn.autocommit:
            kept = True
            continue
        _close(conn)
    if not kept:
        _holding.discard(current)


def close_connections() -> None:
    """Close (or return to the pool) every database connection of the current greenlet.

    Called when a websocket view ends, whatever state it left its connections in: an
    unfinished ``atomic()`` block is rolled back by the database when it closes. Never raises.
    A greenlet that opened no connection (or gave them all back) returns at once: every
    connection Django opens is announced by ``connection_created`` (:func:`track_connections`).
    """
    current = getcurrent()
    if current not in _holding:
        return
    _holding.discard(current)
    for conn in connections.all(initialized_only=True):
        _close(conn)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except DatabaseError as error:
        logger.info("closing database connection %r failed: %s", conn.alias, error)


def close_code_for(error: BaseException) -> tuple[int, str]:
    """The close code and reason a websocket view that raised *error* ends with.

    The database being unreachable or saturated — Django's ``OperationalError`` or
    ``InterfaceError``, which include psycopg's pool timeout, "too many clients" and a
    server restart — gives **1013** "try again later": nothing is wrong with what the
    client did, and a reconnect a moment later may well succeed. Anything else gives
    **1011**. The reason never carries the error's text (it stays in the server log).
    """
    if isinstance(error, OperationalError | InterfaceError):
        return DATABASE_UNAVAILABLE, "database unavailable, try again later"
    return INTERNAL_ERROR, ""
