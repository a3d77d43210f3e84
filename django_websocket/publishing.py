"""``publish()``: send a message to a channel's sockets from any Django code.

Works from HTTP views, management commands, Celery tasks and the shell. With
``WEBSOCKET_REDIS_URL`` (or ``REDIS_URL``) it is one Redis ``PUBLISH``, reaching
sockets on every worker and host; without, the in-process broker delivers to this
process's sockets only.

Wire format of a payload: one type byte, then the data: ``t`` text (a ``str``),
``j`` JSON text (a JSON-able object), ``b`` binary. Upper case (``T``, ``J``, ``B``)
means the message has an id: ``<type><id> <data>``. ``p`` is a presence change
(JSON, see ``django_websocket.presence``). Channel ``room`` is Redis channel
``<prefix>room``; an audience appends ``@user:<pk>``, ``@group:<name>`` or
``@session:<key>``: a socket subscribed to ``room`` listens on all of the names
that match its request. Every message of a channel with history is also stored
(``django_websocket.history``), audience included.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import transaction

from . import conf
from .exceptions import PublishError

logger = logging.getLogger("django_websocket")

TEXT = b"t"
JSON = b"j"
BINARY = b"b"
PRESENCE = b"p"
#: Separates a channel from its audience in Redis channel names; not allowed in channel names.
AUDIENCE_SEPARATOR = "@"

_redis_clients: dict[tuple[str, float], Any] = {}
#: Connections per process for publishing and reading history (the subscriber has its own).
REDIS_CONNECTIONS = 16

#: "No audience given" (so that an explicit ``user=None`` is an error, not a broadcast).
EVERYONE: Any = object()


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
    """
    key = channel_key(channel, audience(user=user, group=group, session=session))
    kind, data = encode_message(message)
    if not on_commit:
        return _publish_encoded(channel, key, kind, data)
    published: list[PublishedId] = []
    transaction.on_commit(lambda: published.append(_publish_encoded(channel, key, kind, data)), using=using)
    return published[0] if published else None


def _publish_encoded(channel: str, key: str, kind: bytes, data: bytes) -> PublishedId:
    """Publish an encoded message to its Redis channel *key* (or in-process); return its id."""
    from . import history

    rule = history.policy(channel)
    url = conf.redis_url()
    if url is None:
        from .hub import deliver_locally

        if not rule.enabled:
            return PublishedId("", deliver_locally(key, kind + data))
        message_id = history.local_store().append(channel, key, kind, data, rule)
        return PublishedId(message_id, deliver_locally(key, with_id(kind, message_id, data)))
    if not rule.enabled:
        return PublishedId("", _publish_to_redis(url, key, kind + data))
    return PublishedId(*history.publish_to_redis(url, channel, key, kind, data, rule))


def _publish_to_redis(url: str, key: str, payload: bytes) -> int:
    import redis

    try:
        return _redis_client(url).publish(key, payload)
    except redis.RedisError as error:
        raise PublishError(f"could not publish to Redis ({_safe_url(url)}): {error}") from error


def _redis_client(url: str) -> Any:
    """A redis-py client with explicit timeouts and no retries, one per URL and timeout."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    timeout = float(conf.get("WEBSOCKET_REDIS_TIMEOUT"))
    client = _redis_clients.get((url, timeout))
    if client is None:
        # At most REDIS_CONNECTIONS per process: a thousand sockets resuming at once (after a
        # deploy) queue for a connection instead of opening a thousand.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # A publish either reaches Redis within the timeout or fails loudly.
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            health_check_interval=0,
        )
        client = redis.Redis(connection_pool=pool)
        _redis_clients[(url, timeout)] = client
    return client


def _safe_url(url: str) -> str:
    """*url* without its password, for messages and logs."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def encode_message(message: Any) -> tuple[bytes, bytes]:
    """``(type byte, data)`` of *message*: ``t`` + UTF-8 text, ``j`` + JSON text or ``b`` + bytes."""
    if isinstance(message, str):
        return TEXT, message.encode()
    if isinstance(message, bytes | bytearray | memoryview):
        return BINARY, bytes(message)
    from django.core.serializers.json import DjangoJSONEncoder

    return JSON, json.dumps(message, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def encode_payload(message: Any) -> bytes:
    """The wire form of *message* without an id."""
    kind, data = encode_message(message)
    return kind + data


def with_id(kind: bytes, message_id: str, data: bytes) -> bytes:
    """The wire form of a message with an id (what the publish script sends with Redis)."""
    return kind.upper() + message_id.encode() + b" " + data


def decode_payload(payload: bytes) -> str | bytes:
    """The message a (message) payload carries: ``str`` for text, ``bytes`` for binary."""
    kind, _, data = split_payload(payload)
    return data if kind == BINARY else data.decode("utf-8", "replace")


def split_payload(payload: bytes) -> tuple[bytes, str | None, bytes]:
    """``(type byte in lower case, id or None, data)`` of a message payload."""
    kind = payload[:1]
    if kind.isupper():
        space = payload.index(b" ")
        return kind.lower(), payload[1:space].decode(), payload[space + 1 :]
    return kind, None, payload[1:]


def channel_key(channel: str, audience_suffix: str = "") -> str:
    """The broker channel name of *channel* (with an optional audience suffix)."""
    if not isinstance(channel, str) or not channel or AUDIENCE_SEPARATOR in channel:
        raise ValueError(f"channel names are non-empty strings without {AUDIENCE_SEPARATOR!r}: {channel!r}")
    return f"{conf.get('WEBSOCKET_CHANNEL_PREFIX')}{channel}{audience_suffix}"


def channel_name(key: str) -> str:
    """The channel a broker channel name belongs to (prefix and audience removed)."""
    name = key[len(conf.get("WEBSOCKET_CHANNEL_PREFIX")) :]
    return name.split(AUDIENCE_SEPARATOR, 1)[0]


def audience(*, user: Any = EVERYONE, group: Any = EVERYONE, session: Any = EVERYONE) -> str:
    """The audience suffix for at most one of *user*, *group*, *session* ("" for everyone).

    Raises ``ValueError`` for two audiences, or for one given as ``None`` or empty.
    """
    candidates = (("user", user), ("group", group), ("session", session))
    given = [(kind, value) for kind, value in candidates if value is not EVERYONE]
    if len(given) > 1:
        raise ValueError("publish() takes at most one audience: user, group or session")
    if not given:
        return ""
    kind, value = given[0]
    if kind == "user":
        value = getattr(value, "pk", value)
    if value is None or value == "":
        raise ValueError(f"empty {kind} audience: refusing to broadcast a message meant for one {kind}")
    return f"{AUDIENCE_SEPARATOR}{kind}:{value}"


def audience_suffixes(request: Any) -> list[str]:
    """Every audience suffix a socket opened by *request* listens on (besides everyone's)."""
    suffixes = []
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        suffixes.append(audience(user=user))
        groups = getattr(user, "groups", None)
        if groups is not None:
            suffixes += [audience(group=name) for name in groups.values_list("name", flat=True)]
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if session_key:
        suffixes.append(audience(session=session_key))
    return suffixes
