"""Messaging's public API: ``publish()`` from any Django code, and reading history and presence.

Works from HTTP views, management commands, Celery tasks and the shell. With
``WEBSOCKET_REDIS_URL`` (or ``REDIS_URL``) a publish is one Redis ``PUBLISH``, reaching
sockets on every worker and host; without, the in-process broker delivers to this
process's sockets only (:mod:`django_websocket.brokers` picks the broker). The payload
format and audiences are :mod:`django_websocket.messaging.wire`'s.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from .brokers import get_broker
from .events import ChannelMessage
from .messaging.history import parse_id
from .messaging.presence import summarize
from .messaging.wire import EVERYONE, audience, prepare


class PublishedId(str):
    """The id ``publish()`` gave a message (``""`` when its channel keeps no history).

    A ``str``; ``receivers`` is how many worker processes (Redis) or sockets (in-process
    broker) it reached.
    """

    receivers: int

    def __new__(cls, message_id: str, receivers: int) -> PublishedId:
        published = super().__new__(cls, message_id)
        published.receivers = receivers
        return published


def publish(
    channel: str,
    message: Any,
    *,
    user: Any = EVERYONE,
    group: Any = EVERYONE,
    session: Any = EVERYONE,
    on_commit: bool = False,
    durable: bool = False,
    using: str | None = None,
) -> PublishedId | None:
    """Publish *message* to the sockets subscribed to *channel*; return its id.

    *message* is ``str`` (a text frame), ``bytes`` (a binary frame) or anything
    ``DjangoJSONEncoder`` serialises (JSON text). At most one audience: *user* (a user
    or its pk), *group* (a ``Group`` name) or *session* (a session key) narrows the
    delivery to the sockets of that user, group or session.

    Returns the message's id in the channel's history (a :class:`PublishedId`, ``""``
    when the channel keeps no history); its ``receivers`` is, with Redis, the number of
    worker processes that received it (``PUBLISH``'s reply), with the in-process
    broker, the number of sockets it was queued for. Raises ``PublishError`` when Redis
    does not answer within ``WEBSOCKET_REDIS_TIMEOUT`` (no hidden retries), ``ValueError``
    for a bad channel, several audiences, or an empty one (``user=None``, ``session=""``…:
    a message meant for one audience is never broadcast to everyone by mistake).

    With *on_commit*, the message is published when the current transaction of database
    *using* commits (``transaction.on_commit``) and never if it rolls back, so clients are
    never told about rows they cannot read yet; ``None`` is returned then (the id does not
    exist yet). Outside ``transaction.atomic()`` it is published at once, as Django runs
    ``on_commit`` callbacks, and the id returned. Bad arguments still raise at the call;
    a ``PublishError`` at commit time propagates from the commit (the data is committed
    by then), like an exception of any ``on_commit`` callback.

    With *durable*, the message is written to the outbox table of database *using* in the
    current transaction (:mod:`django_websocket.outbox`: the app must be installed and
    migrated) and published after the commit, in order, exactly once, whenever the broker
    is reachable — now, or after an outage; never if the transaction rolls back. ``None``
    is returned (the id is assigned on delivery). Raises ``DatabaseError`` when the row
    cannot be written, never ``PublishError``.
    """
    broker = get_broker()
    key = broker.key(channel, audience(user=user, group=group, session=session))
    kind, data = prepare(message)
    if durable:
        # Here, not at the top: the outbox is a model, and publish() also serves projects
        # that do not install the app (and so have no outbox).
        from .outbox import enqueue

        enqueue(channel, key, kind, data, using)
        return None
    if not on_commit:
        return PublishedId(*broker.publish(channel, key, kind, data))
    published: list[PublishedId] = []
    transaction.on_commit(
        lambda: published.append(PublishedId(*get_broker().publish(channel, key, kind, data))), using=using
    )
    return published[0] if published else None


def last_id(channel: str) -> str:
    """The newest id of *channel* (``"0-0"`` when it has none): a client's starting position.

    A page that renders a channel's state reads this *before* the state, then hands it
    to its socket as ``since``: what is published in between is replayed, not lost.
    Raises ``PublishError`` when Redis does not answer.
    """
    return get_broker().read(channel, None).position


def history(channel: str, since: str | None = None, limit: int | None = None) -> list[ChannelMessage]:
    """The messages of *channel* kept in its history, oldest first, as ``ChannelMessage`` objects.

    *since*: only those after that id (``ValueError`` if it is malformed). *limit*: at
    most that many, the newest. All audiences are included: this is for server code;
    a client's replay goes through the resume protocol, which also tells whether anything
    is missing. Raises ``PublishError`` when Redis does not answer.
    """
    after = None if since is None else parse_id(since)
    entries = get_broker().entries(channel)
    if after is not None:
        entries = [entry for entry in entries if parse_id(entry.id) > after]
    if limit is not None:
        entries = entries[-limit:] if limit > 0 else []
    return [ChannelMessage.from_entry(channel, entry) for entry in entries]


def connections(channel: str) -> list[dict]:
    """Every connection in *channel*'s presence: its member dict (with ``conn``), ordered by ``conn``.

    With Redis, expired connections are removed first (and their leaves announced).
    Raises ``PublishError`` when Redis does not answer.
    """
    return sorted(get_broker().members(channel), key=lambda member: member["conn"])


def presence(channel: str) -> list[dict]:
    """Who is connected to *channel*: ``[{"user", "name", "connections"}, ...]`` sorted by name.

    One entry per distinct (user, name) with its number of open connections. Callable
    from any Django code; raises ``PublishError`` when Redis does not answer.
    """
    return summarize(get_broker().members(channel))
