"""The hub's Redis connections: a minimal RESP2 pub/sub client over a gevent socket, and a
cluster's shards read as one connection.

Why not redis-py's ``PubSub`` here: on a read error it disconnects, reconnects and
resubscribes inside its retry callback, without telling the caller, and whatever
was published meanwhile is silently lost (``../shared/MEASURED.md``: 43 of 100).
This client does nothing behind the hub's back: any failure raises
``ConnectionError`` and the hub alone decides to reconnect, resubscribe and tell
its sockets (a ``Resync`` event). It also never times out a quiet subscription
(redis-py 8's default 5 s ``socket_timeout`` does); dead peers are found by TCP
keepalive.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import gevent
import gevent.socket
import gevent.ssl as gevent_ssl
from gevent.queue import Queue
from redis.connection import parse_url

#: Received pub/sub events: ("message", channel, payload) or ("subscribe"/"unsubscribe", channel, count).
PubSubEvent = tuple[str, bytes, bytes | int]

READ_SIZE = 262144

#: While a cluster master refuses connections, the slot map is read again every FAILOVER_POLL s,
#: for up to FAILOVER_WAIT s: a replica takes over after the cluster's ``cluster-node-timeout``
#: (15 s by default) and an election, and the hub should subscribe there at once, not up to its
#: backoff's 1 s later. Only ``connect()`` waits (the hub's reader, holding no lock); a view's
#: ``subscribe()`` tries once.
FAILOVER_POLL = 0.05
FAILOVER_WAIT = 5.0


class PubSubConnection(Protocol):
    """What a hub reads: :class:`RedisSubscriber`, or :class:`ShardedSubscriber` for a cluster."""

    def connect(self, channels: Iterable[str] = ()) -> None: ...
    def subscribe(self, channels: Iterable[str]) -> None: ...
    def unsubscribe(self, channels: Iterable[str]) -> None: ...
    def batches(self) -> Iterator[list[PubSubEvent]]: ...
    def close(self) -> None: ...


def encode_command(*parts: str | bytes) -> bytes:
    """A RESP2 command array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisSubscriber:
    """One subscriber connection to the Redis at *url*, or at the server given by keywords.

    ``connect()`` opens and authenticates it (raises ``ConnectionError`` within
    *timeout*); ``subscribe()``/``unsubscribe()`` send commands; ``events()`` yields
    pub/sub events until the connection fails, then raises ``ConnectionError``.
    One greenlet reads; commands may be sent from others (serialise them).

    Without *url*, *host*, *port*, *username*, *password*, *tls*, *verify* and *ca_certs*
    (a CA bundle file; else the system's) name the server (a Sentinel subscriber fills in
    host and port when it connects).
    """

    def __init__(
        self,
        url: str | None = None,
        timeout: float = 1.0,
        *,
        sharded: bool = False,
        host: str = "localhost",
        port: int = 6379,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        verify: bool = True,
        ca_certs: str | None = None,
    ) -> None:
        params = parse_url(url) if url is not None else {}
        #: SSUBSCRIBE/SUNSUBSCRIBE (Redis Cluster's shard channels) instead of SUBSCRIBE/UNSUBSCRIBE.
        self.sharded = sharded
        self.path = params.get("path")  # unix:// sockets
        self.host = params.get("host", host)
        self.port = int(params.get("port", port))
        self.username = params.get("username", username)
        self.password = params.get("password", password)
        self.tls = url.startswith("rediss://") if url is not None else tls
        cert_reqs = params.get("ssl_cert_reqs")
        self.verify = verify if cert_reqs is None else cert_reqs not in ("none", "optional")
        self.ca_certs = params.get("ssl_ca_certs", ca_certs)
        self.timeout = timeout
        self.sock: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"

    def connect(self, channels: Iterable[str] = ()) -> None:
        """Open the connection (*channels*: what the cluster's subscriber opens shards for; unused)."""
        try:
            sock = self._open()
        except OSError as error:
            raise ConnectionError(f"cannot reach Redis at {self.address}: {error}") from error
        self.sock = sock
        if self.password:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            sock.sendall(encode_command(*auth))
            reply = sock.recv(1024)
            if not reply.startswith(b"+OK"):
                self.close()
                raise ConnectionError(f"Redis refused AUTH: {reply[:100]!r}")
        sock.settimeout(None)  # a quiet subscription is not an error

    def _open(self) -> socket.socket:
        if self.path:
            sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            return sock
        sock = gevent.socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _enable_keepalive(sock)
        if self.tls:
            context = gevent_ssl.create_default_context(cafile=self.ca_certs)
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = gevent_ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=self.host)
        return sock

    def subscribe(self, channels: Iterable[str]) -> None:
        self._send("SSUBSCRIBE" if self.sharded else "SUBSCRIBE", channels)

    def unsubscribe(self, channels: Iterable[str]) -> None:
        self._send("SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE", channels)

    def _send(self, command: str, channels: Iterable[str]) -> None:
        channels = list(channels)
        if not channels:
            return
        if self.sock is None:
            raise ConnectionError("not connected to Redis")
        try:
            self.sock.sendall(encode_command(command, *channels))
        except OSError as error:
            raise ConnectionError(f"lost Redis while sending {command}: {error}") from error

    def batches(self) -> Iterator[list[PubSubEvent]]:
        """Yield the pub/sub events of each read; raise ``ConnectionError`` when the connection ends."""
        if self.sock is None:
            raise ConnectionError("not connected to Redis")
        parser = RespParser()
        while True:
            try:
                data = self.sock.recv(READ_SIZE)
            except OSError as error:
                raise ConnectionError(f"lost Redis: {error}") from error
            if not data:
                raise ConnectionError("Redis closed the connection")
            events = parser.feed(data)
            if events:
                yield events

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def _enable_keepalive(sock: socket.socket) -> None:
    """Find a Redis that vanished without FIN in about 30 s (idle 15 s, then 3 probes 5 s apart)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class RespParser:
    """Incremental parser of the RESP2 arrays a subscribed connection receives."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[PubSubEvent]:
        """Add *data*; return every complete event in it. Raises ``ConnectionError`` on an error reply."""
        buffer = self.buffer
        buffer += data
        events: list[PubSubEvent] = []
        position = 0
        while True:
            parsed = self._parse_array(buffer, position)
            if parsed is None:
                break
            event, position = parsed
            events.append(event)
        del buffer[:position]
        return events

    def _parse_array(self, buffer: bytearray, position: int) -> tuple[PubSubEvent, int] | None:
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        marker = buffer[position : position + 1]
        if marker == b"-":
            raise ConnectionError(
                f"Redis error: {bytes(buffer[position + 1 : end]).decode(errors='replace')}"
            )
        if marker != b"*":
            raise ConnectionError(f"unexpected reply from Redis: {bytes(buffer[position:end])[:100]!r}")
        count = int(buffer[position + 1 : end])
        position = end + 2
        items: list[bytes | int] = []
        for _ in range(count):
            item = self._parse_item(buffer, position)
            if item is None:
                return None
            value, position = item
            items.append(value)
        kind = items[0].decode() if isinstance(items[0], bytes) else str(items[0])
        return (kind, items[1], items[2]), position  # type: ignore[return-value]

    @staticmethod
    def _parse_item(buffer: bytearray, position: int) -> tuple[bytes | int, int] | None:
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        marker = buffer[position : position + 1]
        if marker == b":":
            return int(buffer[position + 1 : end]), end + 2
        if marker == b"$":
            length = int(buffer[position + 1 : end])
            start = end + 2
            if len(buffer) < start + length + 2:
                return None
            return bytes(buffer[start : start + length]), start + length + 2
        raise ConnectionError(f"unexpected item from Redis: {bytes(buffer[position:end])[:100]!r}")


class ShardedSubscriber:
    """A Redis Cluster's shard channels, read as one connection: one :class:`RedisSubscriber` per shard.

    *refresh* reloads the cluster's slot map; *node_of* gives the URL of the master serving
    a channel's slot now, and the slot. ``subscribe()`` sends ``SSUBSCRIBE`` to that master,
    one command per slot (Redis refuses channels of several slots in one), opening the
    master's connection the first time; ``batches()`` yields what every shard reads, as
    ``message``/``subscribe`` events like a plain connection. Any shard's failure (the master
    died, a ``MOVED`` reply) and a server-initiated ``sunsubscribe`` (the slot moved) end
    ``batches()`` with ``ConnectionError``: the hub then reconnects every shard from a fresh
    slot map, resubscribes and recovers, as after any reconnection.

    When the master named for a slot refuses a connection (it died and the cluster has not
    promoted its replica yet), ``connect(channels)`` — the hub's reader, before it takes the
    hub's lock to resubscribe — reads the slot map again every ``FAILOVER_POLL`` s, for up to
    ``FAILOVER_WAIT`` s, until a master serving each channel's slot accepts: the hub
    resubscribes as soon as the cluster's election ends, not at its next backoff step (up to
    1 s later). Past the wait, or when no node answers for the slot map, it raises
    ``ConnectionError``. ``subscribe()`` (a view's first subscription to a channel) tries once:
    a refused master raises ``ConnectionError`` at once and ends ``batches()`` too, so that the
    hub reconnects (and waits) in its reader while the view goes on, unconfirmed.
    """

    def __init__(
        self, refresh: Callable[[], None], node_of: Callable[[str], tuple[str, int]], timeout: float
    ) -> None:
        self.refresh = refresh
        self.node_of = node_of
        self.timeout = timeout
        self.shards: dict[str, RedisSubscriber] = {}
        self.node_by_channel: dict[str, tuple[str, int]] = {}
        self.leaving: set[str] = set()  # channels we unsubscribed: their sunsubscribe is expected
        self.events: Queue = Queue()
        self.readers: list[gevent.Greenlet] = []

    def connect(self, channels: Iterable[str] = ()) -> None:
        """Read the slot map, and open a connection to the master serving each of *channels*.

        Waits out a failover (see the class): raises ``ConnectionError`` when no node answers
        for the slot map, or a master still refuses after ``FAILOVER_WAIT`` s.
        """
        self._read_slot_map()
        pending = list(channels)
        deadline = time.monotonic() + FAILOVER_WAIT
        while True:
            by_node: dict[str, list[str]] = {}
            for channel in pending:
                by_node.setdefault(self.node_of(channel)[0], []).append(channel)
            pending = [
                name for node, names in by_node.items() if not self._open_shard(node) for name in names
            ]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"the master serving {pending[0]} (and {len(pending) - 1} more channels) "
                    f"refused connections for {FAILOVER_WAIT} s"
                )
            gevent.sleep(FAILOVER_POLL)
            self._read_slot_map()  # has a replica taken over?

    def _read_slot_map(self) -> None:
        try:
            self.refresh()
        except Exception as error:  # redis-py raises several types for an unreachable cluster
            raise ConnectionError(f"cannot load the Redis Cluster's slot map: {error}") from error

    def _open_shard(self, node: str) -> bool:
        """Open *node*'s shard connection unless it is open; ``False`` if the node refused it."""
        try:
            self._shard(node)
        except ConnectionError:
            return False
        return True

    def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe *channels* on the masters serving their slots, without waiting for a failover.

        Raises ``ConnectionError`` (and ends ``batches()`` with it) when a master refuses or a
        shard connection fails: the hub's reader then reconnects every shard.
        """
        by_slot: dict[tuple[str, int], list[str]] = {}
        for channel in channels:
            node, slot = self.node_of(channel)
            self.node_by_channel[channel] = (node, slot)
            self.leaving.discard(channel)
            by_slot.setdefault((node, slot), []).append(channel)
        try:
            for (node, _), names in by_slot.items():
                self._shard(node).subscribe(names)
        except ConnectionError as error:
            self.events.put(error)  # the reader reconnects every shard, this one included
            raise

    def unsubscribe(self, channels: Iterable[str]) -> None:
        by_slot: dict[tuple[str, int], list[str]] = {}
        for channel in channels:
            where = self.node_by_channel.pop(channel, None)
            if where is not None:
                self.leaving.add(channel)
                by_slot.setdefault(where, []).append(channel)
        for (node, _), names in by_slot.items():
            self.shards[node].unsubscribe(names)

    def _shard(self, node: str) -> RedisSubscriber:
        shard = self.shards.get(node)
        if shard is None:
            shard = RedisSubscriber(node, self.timeout, sharded=True)
            shard.connect()
            self.shards[node] = shard
            self.readers.append(gevent.spawn(self._read, shard))
        return shard

    def _read(self, shard: RedisSubscriber) -> None:
        try:
            for events in shard.batches():
                self.events.put(events)
        except ConnectionError as error:
            self.events.put(ConnectionError(f"{shard.address}: {error}"))

    def batches(self) -> Iterator[list[PubSubEvent]]:
        while True:
            item = self.events.get()
            if isinstance(item, ConnectionError):
                raise item
            yield self._as_plain(item)

    def _as_plain(self, events: list[PubSubEvent]) -> list[PubSubEvent]:
        """Shard events under the names of plain pub/sub; an unexpected ``sunsubscribe`` raises."""
        plain: list[PubSubEvent] = []
        for kind, channel, value in events:
            if kind == "smessage":
                plain.append(("message", channel, value))
            elif kind == "ssubscribe":
                plain.append(("subscribe", channel, value))
            elif kind == "sunsubscribe":
                name = channel.decode()
                if name not in self.leaving:
                    raise ConnectionError(f"Redis Cluster moved the slot of {name}")
                self.leaving.discard(name)
        return plain

    def close(self) -> None:
        for reader in self.readers:
            reader.kill(block=False)
        for shard in self.shards.values():
            shard.close()
        self.shards.clear()
