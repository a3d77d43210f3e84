"""The Redis Sentinel broker: the Redis broker, following whichever server the sentinels call primary.

Everything the Redis broker does (publish, history, presence) goes through a redis-py
client whose pool asks the sentinels for the primary each time it opens a connection
(``redis.sentinel.SentinelConnectionPool``), still bounded (a blocking pool), with explicit
timeouts and no retries: during an election a publish raises ``PublishError`` instead of
waiting for a new primary behind the caller's back.

The hub follows the primary through :meth:`SentinelBroker.subscriber`: the hub asks for a
new subscriber on every (re)connection, and a :class:`SentinelSubscriber` asks the sentinels
where the primary is when it connects. When the primary dies, the hub's connection drops,
its reconnection attempts fail until the sentinels have promoted a replica, then it
subscribes there and recovers each channel from its history; what asynchronous replication
lost becomes a gap (:mod:`~django_websocket.messaging.hub`), never silence.

A primary can also lose its role without dying. After a manual ``SENTINEL FAILOVER`` the
sentinels reconfigure it and close its pub/sub clients themselves (``CLIENT KILL TYPE
pubsub``), so the hub moves at once. But a primary cut off from the sentinels and not from
a worker (a partition) keeps its subscribers until the sentinels reach it again, and what is
published on the new primary meanwhile would not reach them. So while it reads, a
:class:`SentinelSubscriber` asks the sentinels every ``watch_every`` seconds whether they
still name its server, and when they name another it closes its connection: the hub
reconnects to the new primary and recovers (or signals a gap) as after a crash.

Each question to the sentinels tries them in turn (the one that answered moves to the
front), each within the timeout; the answer counts only from a sentinel that sees the
primary up (not subjectively or objectively down).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from ...exceptions import PublishError
from ..options import Options
from ..redis_pubsub import PubSubEvent, RedisSubscriber
from .redis import REDIS_CONNECTIONS, RedisBroker
from .sentinel_url import SentinelURL, parse_sentinel_url

#: How long a subscriber's connect() keeps asking the sentinels (every ``ELECTION_POLL`` s)
#: while they name no primary (an election): the hub subscribes as soon as the new primary is
#: named, not at its next backoff step (up to 1 s later).
ELECTION_WAIT = 1.0
ELECTION_POLL = 0.05


class SentinelBlockingConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool, bounded: past ``max_connections`` callers wait (up to ``timeout``)."""


class Sentinels(Sentinel):
    """redis-py's ``Sentinel``, its ``discover_master`` errors naming each sentinel by address.

    (redis-py's own name each by the client's repr, hundreds of characters: log lines must stay
    readable.) The same rule: the first sentinel that sees the service's primary up (not
    subjectively or objectively down) answers, and moves to the front of the list.
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        errors: list[str] = []
        for number, sentinel in enumerate(self.sentinels):
            try:
                state = sentinel.sentinel_masters().get(service_name)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                errors.append(f"{address(sentinel)}: {error}")
                continue
            if state and self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
            errors.append(f"{address(sentinel)}: {'down' if state else 'unknown service'}")
        raise MasterNotFoundError(f"no primary for {service_name!r} ({'; '.join(errors)})")


def address(client: redis.Redis) -> str:
    """``host:port`` of a redis-py client."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


class SentinelSubscriber(RedisSubscriber):
    """A subscriber connection to the primary that *locate* names when it connects, and while it reads.

    *locate* returns ``(host, port)`` or raises ``redis.RedisError``; either way
    :meth:`connect` keeps the subscriber contract: it raises ``ConnectionError`` only (after
    asking again for up to ``ELECTION_WAIT`` s while the sentinels name no primary). While
    :meth:`batches` runs, a greenlet calls *locate* every *watch_every* seconds; when it names
    another server, the connection is closed and :meth:`batches` raises ``ConnectionError``
    saying so. When the sentinels cannot answer, it keeps reading.
    """

    def __init__(
        self, locate: Callable[[], tuple[str, int]], timeout: float, watch_every: float = 1.0, **server: Any
    ) -> None:
        super().__init__(None, timeout, **server)
        self.locate = locate
        self.watch_every = watch_every
        self.moved_to: tuple[str, int] | None = None

    def connect(self, channels: Iterable[str] = ()) -> None:
        deadline = time.monotonic() + ELECTION_WAIT
        while True:
            try:
                self.host, self.port = self.locate()
                break
            except MasterNotFoundError as error:
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"no primary from the sentinels: {error}") from error
                gevent.sleep(ELECTION_POLL)
            except redis.RedisError as error:
                raise ConnectionError(f"no primary from the sentinels: {error}") from error
        super().connect()

    def batches(self) -> Iterator[list[PubSubEvent]]:
        watcher = gevent.spawn(self._watch)
        try:
            yield from super().batches()
        except ConnectionError as error:
            if self.moved_to is None:
                raise
            host, port = self.moved_to
            raise ConnectionError(f"the sentinels now name {host}:{port} as the primary") from error
        finally:
            watcher.kill(block=False)

    def _watch(self) -> None:
        """Close the connection once the sentinels name another primary than the one it reads."""
        while self.sock is not None:
            gevent.sleep(self.watch_every)
            try:
                primary = self.locate()
            except redis.RedisError:
                continue  # no answer (an election, a partition): what it reads is all there is
            sock = self.sock
            if primary != (self.host, self.port) and sock is not None:
                self.moved_to = primary
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # its recv() returns: batches() raises
                return


#: No retries behind the caller's back: an answer within the timeout, or a ``PublishError``.
NO_RETRY: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "retry_on_error": []}


def _tls(location: SentinelURL) -> dict[str, Any]:
    """redis-py's TLS options for *location*'s certificates and verification."""
    return {
        "ssl": True,
        "ssl_cert_reqs": "required" if location.verify else "none",
        "ssl_ca_certs": location.ca_certs,
    }


class SentinelBroker(RedisBroker):
    """The primary of the Sentinel service named by *url* (``redis+sentinel://``, ``rediss+sentinel://``)."""

    @classmethod
    def validate_url(cls, url: str) -> None:
        parse_sentinel_url(url)

    def __init__(self, url: str, options: Options) -> None:
        self.location: SentinelURL = parse_sentinel_url(url)
        super().__init__(url, options)
        self.sentinels = self._sentinels()  # clients made, no connection opened

    def _sentinels(self) -> Sentinels:
        timeout = self.options.timeout
        location = self.location
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "username": location.sentinel_username,
            "password": location.sentinel_password,
            **NO_RETRY,
        }
        if location.sentinel_tls:
            sentinel_kwargs.update(_tls(location))
        return Sentinels(location.sentinels, sentinel_kwargs=sentinel_kwargs)

    def make_client(self) -> Any:
        """A redis-py client of the primary, through a Sentinel-managed pool: timeouts, no retries."""
        timeout = self.options.timeout
        location = self.location
        primary_kwargs: dict[str, Any] = _tls(location) if location.tls else {}
        return self.sentinels.master_for(
            location.service,
            connection_pool_class=SentinelBlockingConnectionPool,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            db=location.db,
            username=location.username,
            password=location.password,
            health_check_interval=0,
            **NO_RETRY,
            **primary_kwargs,
        )

    def primary(self) -> tuple[str, int]:
        """``(host, port)`` of the current primary, from the first sentinel that sees it up.

        Raises ``redis.sentinel.MasterNotFoundError`` (a ``redis.ConnectionError``) when none does.
        """
        return self.sentinels.discover_master(self.location.service)

    def subscriber(self) -> RedisSubscriber:
        location = self.location
        return SentinelSubscriber(
            self.primary,
            self.options.timeout,
            username=location.username,
            password=location.password,
            tls=location.tls,
            verify=location.verify,
            ca_certs=location.ca_certs,
        )

    def probe(self) -> str | None:
        """Ask every sentinel once which services it monitors: is ours among them?

        ``None`` when a sentinel knows the service; a line naming the services they do know
        when none does; ``PublishError`` when no sentinel answers.
        """
        known: set[str] = set()
        answered = False
        errors: list[str] = []
        for client in self.sentinels.sentinels:
            try:
                masters = client.sentinel_masters()
            except redis.RedisError as error:
                errors.append(f"{address(client)}: {error}")
                continue
            if self.location.service in masters:
                return None
            answered = True
            known.update(masters)
        if not answered:
            raise PublishError(f"no sentinel of {self.describe()} answered ({'; '.join(errors)})")
        return (
            f"no sentinel of {self.describe()} monitors a service named {self.location.service!r} "
            f"(they monitor: {', '.join(sorted(known)) or 'nothing'})"
        )

    def describe(self) -> str:
        return f"Redis Sentinel ({self.location.describe()})"
