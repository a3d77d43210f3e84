"""Durable publishing: ``publish(..., durable=True)`` survives a broker that is away.

The message is written to the outbox table (:class:`~django_websocket.models.OutboxMessage`)
in the caller's database transaction, so it exists exactly when the caller's data does:
committed together, rolled back together. A *relay* then publishes the outbox in order
(by row id) and deletes what it published:

- right after the commit, in the process that committed (unless the broker failed in this
  process within the last :data:`RETRY_AFTER` seconds: the caller is never held by an outage);
- every ``WEBSOCKET_OUTBOX_RELAY_INTERVAL`` seconds in each worker of our gunicorn worker
  class (:func:`start_relay`), and from ``manage.py websocket_relay`` where there is none.

Each row carries a token the broker remembers for an hour (``Broker.publish(once=...)``),
so a relay that published a row and died before deleting it, or two relays racing over
the same rows, never deliver it twice. Rows are read under ``SELECT ... FOR UPDATE`` where
the database has it, so relays take turns and keep the order (SQLite: see :func:`relay`).
Ids are assigned by the broker on delivery, as for any publish.

A row keeps the broker channel name it was published on, audience included; the relay
names it again for the broker of the moment (:func:`current_key`), so rows that waited
across a change of ``WEBSOCKET_REDIS_URL``'s kind (plain Redis to Cluster, whose names carry
a hash tag) or of ``WEBSOCKET_CHANNEL_PREFIX`` go where the subscribers now listen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import gevent
from django.db import DatabaseError, connections, router, transaction

from .brokers import get_broker
from .database import close_connections
from .exceptions import PublishError
from .messaging.brokers.base import Broker
from .messaging.options import AUDIENCE_SEPARATOR
from .models import OutboxMessage

logger = logging.getLogger("django_websocket")

#: Rows published per transaction of the relay.
BATCH = 100
#: Seconds after a broker failure during which commits leave their rows to the background relay.
RETRY_AFTER = 5.0
#: Longest pause of a worker's relay while the outbox cannot be read.
MAX_PAUSE = 60.0


class RelayState:
    """When this process last failed to reach the broker (``time.monotonic()``, 0: never)."""

    failed_at = 0.0


state = RelayState()


def enqueue(channel: str, key: str, kind: bytes, data: str | bytes, using: str | None) -> OutboxMessage:
    """Write a message to the outbox of database *using*, in its current transaction.

    After the commit (at once outside ``atomic()``) this process tries to relay it.
    Raises ``DatabaseError`` when the row cannot be written (the outbox table is missing:
    run ``manage.py migrate``).
    """
    alias = using or router.db_for_write(OutboxMessage)
    raw = data.encode() if isinstance(data, str) else data
    row = OutboxMessage.objects.using(alias).create(channel=channel, key=key, kind=kind.decode(), data=raw)
    transaction.on_commit(lambda: relay_after_commit(alias), using=alias)
    return row


def broker_unavailable() -> bool:
    """True while this process's last attempt to publish the outbox failed (for the last RETRY_AFTER s)."""
    return time.monotonic() - state.failed_at < RETRY_AFTER


def relay_after_commit(using: str) -> None:
    """Publish *using*'s outbox now, unless the broker just failed here; never raises."""
    if broker_unavailable():
        return
    try:
        relay(using)
    except DatabaseError as error:
        logger.warning("outbox of %r: relaying after the commit failed (%s); the relay retries", using, error)


def relay(using: str = "default", batch: int = BATCH) -> int:
    """Publish the oldest rows of *using*'s outbox, in order, and delete them; return how many.

    Stops at the first message the broker does not take (``PublishError``: logged, the row
    stays for the next relay). Raises ``DatabaseError`` when the outbox cannot be read.

    Where the database locks rows (``SELECT ... FOR UPDATE``), the rows stay locked while
    they are published, so relays take turns. SQLite cannot lock rows, and must hold no lock
    while the broker is waited for: its lock waits sleep in C, blocking the whole worker, so
    a greenlet waiting for a lock held across a publish would keep the holder from ever
    finishing ("database is locked" after the busy timeout, its view held that long). There
    the rows are read, published and deleted in three steps; two relays racing over the same
    rows still publish each once (the tokens), in order.
    """
    broker = get_broker()
    if connections[using].vendor == "sqlite":
        rows = list(OutboxMessage.objects.using(using).order_by("pk")[:batch])
        published = publish_rows(broker, rows, using)
        OutboxMessage.objects.using(using).filter(pk__in=published).delete()
    else:
        with transaction.atomic(using=using):
            rows = OutboxMessage.objects.using(using).select_for_update().order_by("pk")[:batch]
            published = []
            try:
                published = publish_rows(broker, rows, using)
            finally:
                if published:
                    OutboxMessage.objects.using(using).filter(pk__in=published).delete()
    if published:
        state.failed_at = 0.0
    return len(published)


def publish_rows(broker: Broker, rows: Iterable[OutboxMessage], using: str) -> list[int]:
    """Publish *rows* in order until the broker refuses one; return the ids of those done.

    A refusal (``PublishError``) is logged and remembered (:func:`broker_unavailable`); a row
    the broker cannot name (:func:`current_key`) is dropped with an error and counts as done.
    """
    published: list[int] = []
    try:
        for row in rows:
            try:
                key = current_key(broker, row.channel, row.key)
            except ValueError as error:
                # Kept, it would stop every later row for good: the one thing worse than losing it.
                logger.error("outbox of %r: dropped message #%s, unpublishable: %s", using, row.pk, error)
                published.append(row.pk)
                continue
            broker.publish(row.channel, key, row.kind.encode(), _data(row), once=str(row.token))
            published.append(row.pk)
    except PublishError as error:
        state.failed_at = time.monotonic()
        logger.warning("outbox of %r: %d messages wait for the broker: %s", using, _waiting(using), error)
    return published


def current_key(broker: Broker, channel: str, stored: str) -> str:
    """The name *broker* gives the broker channel a row stored as *stored* (of *channel*).

    The audience suffix (``@user:7``) is kept; what comes before it (prefix, hash tag) is
    *broker*'s. The suffix starts at the first ``@`` after the current prefix when *stored*
    starts with it (a prefix may contain ``@``; a channel name may not), else at the first
    ``@``. Raises ``ValueError`` when *broker* cannot name *channel* (braces on a cluster).
    """
    prefix = broker.options.prefix
    start = len(prefix) if stored.startswith(prefix) else 0
    at = stored.find(AUDIENCE_SEPARATOR, start)
    return broker.key(channel, stored[at:] if at >= 0 else "")


def relay_all(batch: int = BATCH) -> int:
    """:func:`relay` every database the outbox lives in, until each is empty or its broker fails."""
    total = 0
    for alias in outbox_databases():
        while True:
            count = relay(alias, batch)
            total += count
            if count < batch:
                break
    return total


def outbox_databases() -> list[str]:
    """The database aliases the outbox table is migrated to (the router decides)."""
    return [alias for alias in connections if router.allow_migrate_model(alias, OutboxMessage)]


def _data(row: OutboxMessage) -> str | bytes:
    data = bytes(row.data)  # a memoryview on PostgreSQL
    return data if row.kind == "b" else data.decode()


def _waiting(using: str) -> int:
    return OutboxMessage.objects.using(using).count()


def start_relay(interval: float) -> gevent.Greenlet:
    """Relay every outbox every *interval* seconds, in a greenlet of this worker process."""
    return gevent.spawn(_relay_forever, interval)


def _relay_forever(interval: float) -> None:
    pause = interval
    while True:
        gevent.sleep(pause)
        try:
            relay_all()
            pause = interval
        except DatabaseError as error:
            # A missing table (not migrated) or a database away: say so, then ask less often.
            pause = min(max(pause * 2, interval), MAX_PAUSE)
            logger.warning(
                "outbox relay: cannot read the outbox (%s); retrying in %.0f s (is migrate done?)",
                error,
                pause,
            )
        finally:
            close_connections()  # an idle worker holds no database connection between rounds
