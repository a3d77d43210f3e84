"""Step 5 of a connection: the websocket object handed to views, after the 101.

Frames are parsed and built by the ``websockets`` library's sans-I/O
:class:`~websockets.protocol.Protocol` (strict RFC 6455, C-accelerated unmasking,
size limits checked from the frame header before the payload is read); this
module only moves bytes between it and a gevent socket.

Invariants:

- one greenlet reads at a time; ``send()`` may be called from any number of
  greenlets: each frame is written whole under a lock, so frames never interleave;
- messages that arrived before the peer's close frame are delivered before
  :class:`ConnectionClosed` is raised;
- once closed, every ``receive()`` and ``send()`` raises the same
  :class:`ConnectionClosed`, and the TCP connection is closed.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from websockets.exceptions import ProtocolError
from websockets.extensions import Extension
from websockets.frames import Opcode
from websockets.protocol import CLOSED, OPEN, SEND_EOF, Protocol, Side
from websockets.streams import StreamReader

from .acks import ack_frame, acknowledging, nack_frame
from .compression import allows_plain_frames, plain_frame_limit
from .counters import counters, messages_in
from .events import ChannelMessage
from .exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, connection_closed
from .frames import frame_header
from .messaging.hub import Hub
from .messaging.subscriptions import Subscriptions

logger = logging.getLogger("django_websocket")


class _ProtocolLogger(logging.LoggerAdapter):
    """The protocol's logger: its per-connection INFO lines ("connection closed") go to DEBUG."""

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        self.debug(msg, *args, **kwargs)  # type: ignore[arg-type]


protocol_logger = _ProtocolLogger(logging.getLogger("django_websocket.protocol"))


class ServerProtocol(Protocol):
    """The server side of ``websockets``' sans-I/O protocol, already OPEN (we did the handshake)."""

    #: Attributes ``Protocol.__init__`` gives each connection an object of its own (or that
    #: depend on the moment): never copied from a template (see :meth:`opened`).
    OWN = frozenset({"_id", "debug", "extensions", "reader", "events", "writes", "parser"})
    #: ``Protocol.__init__``'s other attributes per *max_size*: the same for every connection.
    _templates: dict[Any, dict[str, Any]] = {}

    @classmethod
    def opened(
        cls, max_size: int | None, logger: Any, extensions: Sequence[Extension] = ()
    ) -> ServerProtocol:
        """Return a new server protocol, OPEN, as ``cls(Side.SERVER, state=OPEN, ...)`` would,
        with the agreed *extensions*.

        Without ``Protocol.__init__``: its immutable attributes come from a template made once
        per *max_size* and *logger*, and only what each connection owns is made here. This
        skips the ``uuid4()`` (a ``getrandom`` system call) the identifier for its logs costs.
        """
        template = cls._templates.get((max_size, logger))
        if template is None:
            made = cls(Side.SERVER, state=OPEN, max_size=max_size, logger=logger)
            template = {name: value for name, value in vars(made).items() if name not in cls.OWN}
            cls._templates[max_size, logger] = template
        protocol = cls.__new__(cls)
        protocol.__dict__.update(template)
        protocol.debug = logger.isEnabledFor(logging.DEBUG)
        protocol.extensions = list(extensions)
        protocol.reader = StreamReader()
        protocol.events = []
        protocol.writes = []
        protocol.parser = protocol.parse()
        next(protocol.parser)  # start the coroutine, as Protocol.__init__ does
        return protocol

    @property
    def id(self) -> uuid.UUID:  # type: ignore[override]
        """The connection's identifier in ``websockets``' own log lines, made when first read."""
        identifier = self.__dict__.get("_id")
        if identifier is None:
            identifier = self.__dict__["_id"] = uuid.uuid4()
        return identifier

    @id.setter
    def id(self, value: uuid.UUID) -> None:
        self.__dict__["_id"] = value

    def recv_frame(self, frame: Any) -> None:
        # RFC 6455 §5.4: control frames may come between fragments, a close frame
        # included; it ends the connection normally and the partial message is dropped.
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


#: How much to read from the socket at once.
READ_SIZE = 65536

#: How long the event loop may go without running before a view's read lets it run first
#: (see take_turn()): a read that finds data waiting does not go back to the loop.
TURN_SLICE = 0.005
#: That turn's wait: a timer due at once, so that the loop runs a whole iteration (polls the
#: sockets, fires the timers). ``sleep(0)`` would only run the pending callbacks.
TURN_PAUSE = 1e-6


class _LoopClock:
    """The event loop's clock as the views' reads last saw it, and when (``time.monotonic()``)."""

    seen: float | None = None
    since = 0.0


loop_clock = _LoopClock()


def take_turn() -> None:
    """Before a view's read: let the event loop run if it has not for ``TURN_SLICE`` seconds.

    A client that keeps its socket full (a flood, or a fast client with the rate limit off)
    always has data waiting, so its view would read and answer on and on while every other
    connection of the worker waited: about a second at the 99th percentile in
    ``bench/run.py``'s 100-connection echo. The loop's clock moves only when the loop runs.
    """
    now = gevent.get_hub().loop.now()
    if now != loop_clock.seen:
        loop_clock.seen, loop_clock.since = now, time.monotonic()
    elif time.monotonic() - loop_clock.since >= TURN_SLICE:
        gevent.sleep(TURN_PAUSE)


Message = str | bytes

#: Every open connection of this process, for a graceful shutdown (see ``workers.py``).
open_connections: weakref.WeakSet = weakref.WeakSet()

#: Frames up to this size are written with one copy and one system call.
SMALL_FRAME = 16384

#: The close reason sent with 1008 when a client exceeds ``WEBSOCKET_MESSAGE_RATE_LIMIT``.
RATE_LIMIT_REASON = "rate limit exceeded"
#: After that close, what is still read (and dropped) before the TCP connection is closed.
LINGER_BYTES = 4 * 2**20
LINGER_SECONDS = 2.0

#: A server ping frame's header with a 4-byte payload (unmasked: RFC 6455 §5.1).
PING_HEADER = frame_header(0x89, 4)
#: Past a pong's deadline, how long a round reads the socket for a pong the view left unread.
LATE_PONG_SECONDS = 0.1


class _RateLimitCounters:
    """Process-wide count of the connections closed for their message rate (a hook for metrics)."""

    closes = 0


rate_limit_counters = _RateLimitCounters()


class MessageMixin:
    """JSON helpers, iteration and channels, for any class with ``receive()`` and ``send()``."""

    #: The request that opened the connection (set by the handler); subscriptions use its
    #: user, groups and session to listen to messages addressed to them.
    request: Any = None
    _subscriptions: Any = None
    #: Called, in the view's greenlet, whenever a method of the public API is about to wait
    #: for the client or for channel messages; the handler sets it to give the view's
    #: database connections back (``django_websocket.database.release_connections``).
    on_wait: Callable[[], None] | None = None
    #: The pk of the request's user when the handler knew it at the accept (for log lines).
    user_id: Any = None
    #: The process's hub of the configured broker (set by the handler): where subscriptions go.
    hub: Hub | None = None

    def receive(self) -> Message:
        raise NotImplementedError

    def send(self, message: Message) -> None:
        raise NotImplementedError

    def receive_json(self) -> Any:
        """Return the next message decoded as JSON; raise ``ValueError`` if it is not JSON."""
        return json.loads(self.receive())

    def send_json(self, obj: Any) -> None:
        """Send *obj* as a JSON text message (Django's encoder: dates, decimals, UUIDs)."""
        from django.core.serializers.json import DjangoJSONEncoder

        self.send(json.dumps(obj, cls=DjangoJSONEncoder, separators=(",", ":")))

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until the connection closes; a normal closure ends the iteration."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosedOK:
                return

    # Channels (see django_websocket.messaging.subscriptions)

    @property
    def subscriptions(self) -> Subscriptions:
        """This socket's channels; raises ``RuntimeError`` on a socket no handler gave a hub."""
        if self._subscriptions is None:
            if self.hub is None:
                raise RuntimeError("this websocket has no hub: channels need a socket opened by the handler")
            self._subscriptions = Subscriptions(self, self.request, self.hub)
        return self._subscriptions

    def subscribe(
        self,
        channel: str,
        *,
        forward: bool = False,
        since: str | None = None,
        resume: bool = False,
        presence: bool | dict | None = None,
    ) -> None:
        """Receive messages published to *channel* (and to it for this user, groups, session).

        Returns once the broker delivers the channel's messages to this process. With
        *forward*, the channel's messages go straight to the client, unchanged, without
        passing through ``events()`` — the fastest way to relay a broadcast.

        *since*: an id; the messages published after it are delivered first, exactly
        once and in order, then live ones (or a ``Gap`` if it is no longer in the
        history). *resume*: *since* comes from the client's ``since`` query parameter,
        and forwarded messages use the resume protocol's frames, with their ids
        (``docs/topics/history.md``; ``websocket.js`` speaks it). *presence*: join the
        channel's presence, as the request's user (``True``) or as the given member
        dict (with a ``"name"``); members then receive ``Presence``, ``Join`` and ``Leave``.
        Raises ``ValueError`` for a bad *presence*.
        """
        self.subscriptions.subscribe(channel, forward=forward, since=since, resume=resume, presence=presence)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving *channel*'s messages."""
        self.subscriptions.unsubscribe(channel)

    def events(self) -> Iterator[Any]:
        """Yield client and channel events in arrival order until the client closes normally.

        ``ClientMessage``, ``ChannelMessage`` and ``Resync`` (see ``django_websocket.events``).
        Raises ``ConnectionClosedError`` on an abnormal closure. While iterating events,
        do not call ``receive()``: the client's messages come through here.
        """
        return self.subscriptions.events()

    def next_event(self, timeout: float | None = None) -> Any:
        """The next event, or ``None`` if none arrives within *timeout* seconds."""
        return self.subscriptions.next_event(timeout)

    # Acknowledged client messages (see django_websocket.acks)

    def ack(self, message: Any) -> None:
        """Tell the client *message* (a ``ClientMessage`` with an ``id``) is processed; no-op without id."""
        if message.id is not None:
            self.send(ack_frame(message.id))

    def nack(self, message: Any, error: str) -> None:
        """Tell the client *message* is refused for good (it will not resend it); no-op without id."""
        if message.id is not None:
            self.send(nack_frame(message.id, error))

    def acknowledging(self, message: Any, **options: Any) -> Any:
        """``with websocket.acknowledging(message) as fresh:`` process once per id, then ack.

        See :func:`django_websocket.acks.acknowledging` (options *scope*, *ttl*, *broker*).
        """
        return acknowledging(self, message, **options)

    def close_subscriptions(self) -> None:
        """End every subscription (the handler calls this when the view returns)."""
        if self._subscriptions is not None:
            self._subscriptions.close()


class WebSocket(MessageMixin):
    """An accepted websocket connection, as a view sees it.

    ``receive()`` returns ``str`` for a text message and ``bytes`` for a binary one;
    ``send()`` sends a text frame for ``str`` and a binary frame for bytes.
    Both raise :class:`~django_websocket.exceptions.ConnectionClosed` once the
    connection is closed; ``for message in websocket`` ends on a normal closure.
    """

    #: Set once the client went over ``message_rate_limit`` (a class default: no cost per socket).
    _rate_limited = False

    def __init__(
        self,
        sock: socket.socket,
        read: Callable[[int], bytes],
        *,
        subprotocol: str | None = None,
        max_message_size: int | None = 2**20,
        close_timeout: float = 5.0,
        ping_interval: float | None = None,
        ping_timeout: float = 20.0,
        send_timeout: float | None = None,
        extensions: Sequence[Extension] = (),
        message_rate_limit: tuple[int, float] | None = None,
    ) -> None:
        """Wrap an upgraded connection.

        *sock* is the connection's socket (used to write and to close); *read(n)*
        returns up to *n* bytes, ``b""`` at end of stream (it may serve bytes the
        HTTP parser already buffered). Messages above *max_message_size* bytes
        close the connection with 1009 before their payload is read. With
        *ping_interval*, a ping goes out that often and a pong must come back within
        *ping_timeout* or the connection is closed (1011). A send that waits more than
        *send_timeout* seconds on a client that stopped reading drops the connection.
        *extensions* are the agreed extensions (``compression.negotiate()``): the size
        limit then applies to decompressed messages, and what ``send()`` sends is
        compressed from the threshold up, while channel messages keep their shared frame.
        *message_rate_limit* ``(count, seconds)``: a token bucket of *count* messages refilled
        at *count* / *seconds* per second; a client that sends data messages faster is closed
        with 1008 "rate limit exceeded" (see :meth:`_over_rate_limit`).
        """
        self.socket = sock
        self._read = read
        self.subprotocol = subprotocol
        self.close_timeout = close_timeout
        self.protocol = ServerProtocol.opened(max_message_size, protocol_logger, extensions)
        # Messages under this size go out as plain frames, on the fast paths below; bigger
        # ones through the protocol, which compresses them (math.inf without extensions).
        self._plain_below = plain_frame_limit(self.protocol.extensions)
        # Whether channel messages' shared frames may go out as they are (see _forward()).
        self._plain_frames = allows_plain_frames(self.protocol.extensions)
        # A deque only from the first message (_deliver()): its first block is 0.6 KiB, and
        # many sockets (notifications, dashboards) never get a message from their client.
        self._messages: deque[Message] | tuple[()] = ()
        self._fragments: list[Any] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        self._read_lock = Semaphore()
        self._write_lock = Semaphore()
        self._closed = Event()
        self._close_exc: ConnectionClosed | None = None
        self._raw = getattr(sock, "_sock", sock)  # gevent's non-blocking socket underneath
        self.send_timeout = send_timeout
        self.ping_timeout = ping_timeout
        # Set by the pong to the ping in flight, when a greenlet runs the round (_ping_round());
        # an Event only then. The payload is b"" when no ping is in flight.
        self._pong: Event | None = None
        self._ping_payload = b""
        self._ping_interval = ping_interval
        # A timer of the event loop (bytes), not a greenlet waiting for the next ping (a saved
        # stack of kilobytes per idle socket): until the next ping, then until the pong's
        # deadline while one is in flight (see _ping_due()).
        self._ping_timer: Any = None
        # The token bucket: the setting's own tuple (shared by every connection), the tokens
        # left and when they were counted. Two floats per socket, no timer: O(1) per message.
        self._rate_limit = message_rate_limit
        self._tokens = float(message_rate_limit[0]) if message_rate_limit else 0.0
        self._tokens_at = time.monotonic()
        open_connections.add(self)
        self._schedule_ping()

    # Receiving

    def receive(self) -> Message:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Raises ``ConnectionClosedOK`` after a normal closure (1000, 1001, 1005) and
        ``ConnectionClosedError`` otherwise (1002 protocol error, 1007 invalid UTF-8,
        1009 too big, 1006 dropped connection…), with the code and reason.
        """
        if not self._messages:
            if self.on_wait is not None:
                self.on_wait()
            # _receive_more()'s read, written out: while a greenlet waits, greenlet keeps a frame
            # object for every Python frame on its stack (about 0.2 KiB each, per idle socket).
            while not self._messages:
                take_turn()
                with self._read_lock:
                    if self._may_read():
                        try:
                            data = self._read(READ_SIZE)
                        except OSError:
                            data = b""
                        self._received(data)
        counters.messages_received += 1  # metrics: a plain int, see django_websocket.counters
        return self._messages.popleft()

    def _receive_more(self, *, behind_queued: bool = False) -> None:
        """Read from the socket once and queue what it completes; raise when closed.

        Returns without reading when messages are queued (another greenlet read them),
        unless *behind_queued*: a keepalive round reads on behind the messages a busy view
        has not taken yet (it waits for a pong, not for a message).
        """
        with self._read_lock:
            if behind_queued and self._close_exc is not None:
                raise self._closed_error()
            if not behind_queued and not self._may_read():
                return
            try:
                data = self._read(READ_SIZE)
            except OSError:
                data = b""
            self._received(data)

    def _may_read(self) -> bool:
        """Under the read lock: ``False`` if another greenlet read messages meanwhile; raise when closed."""
        if self._messages:
            return False
        if self._close_exc is not None:
            raise self._closed_error()
        return True

    def _received(self, data: bytes) -> None:
        """Under the read lock: feed *data* (``b""``: end of stream) to the protocol, queue the messages."""
        if data:
            counters.bytes_received += len(data)
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._queue_messages(self.protocol.events_received())
        with self._write_lock:
            self._flush()
        if self.protocol.state is not OPEN:
            self._finish()
            if self._close_exc is not None and not self._messages:
                raise self._closed_error()

    def _queue_messages(self, frames: list) -> None:
        """Assemble data frames into messages; fail with 1007 on invalid UTF-8, 1008 over the rate limit."""
        for frame in frames:
            opcode = frame.opcode
            if (
                self._rate_limit is not None
                and (opcode is Opcode.TEXT or opcode is Opcode.BINARY)
                and self._over_rate_limit()
            ):
                # A message counts once, at its first frame: continuation frames and control
                # frames are free. What came before is still delivered, nothing after it.
                self._rate_limited = True
                self.protocol.fail(1008, RATE_LIMIT_REASON)
                return
            try:
                if opcode is Opcode.TEXT:
                    if frame.fin:
                        self._deliver(bytes(frame.data).decode())
                    else:
                        self._decoder = codecs.getincrementaldecoder("utf-8")()
                        self._fragments = [self._decoder.decode(frame.data)]
                elif opcode is Opcode.BINARY:
                    if frame.fin:
                        self._deliver(bytes(frame.data))
                    else:
                        self._decoder = None
                        self._fragments = [bytes(frame.data)]
                elif opcode is Opcode.CONT:
                    self._continue_message(frame.data, frame.fin)
                elif opcode is Opcode.PONG and self._ping_payload and bytes(frame.data) == self._ping_payload:
                    self._pong_received()
            except UnicodeDecodeError:
                # RFC 6455 §8.1: fail as soon as invalid UTF-8 is seen, even mid-message.
                self.protocol.fail(1007, "invalid UTF-8 in text message")
                return

    def _deliver(self, message: Message) -> None:
        """Queue a complete message for ``receive()``."""
        if type(self._messages) is not deque:  # the first one (see __init__)
            self._messages = deque()
        self._messages.append(message)  # type: ignore[union-attr]

    def _over_rate_limit(self) -> bool:
        """Take a token for one incoming message; ``True`` (and a warning) when none is left.

        The bucket holds up to *count* tokens and refills continuously at *count* / *seconds*
        per second, computed from the time since the last message: no timer, no greenlet.
        Messages are counted as they are read from the socket.
        """
        count, seconds = self._rate_limit  # type: ignore[misc]
        now = time.monotonic()
        tokens = self._tokens + (now - self._tokens_at) * (count / seconds)
        self._tokens_at = now
        if tokens > count:
            tokens = count
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return False
        self._tokens = tokens
        rate_limit_counters.closes += 1
        logger.warning(
            "websocket rate limit exceeded: %s sent more than %s messages in %s s; closing with 1008",
            self.describe_client(), count, seconds,
        )  # fmt: skip
        return True

    def describe_client(self) -> str:
        """The path, user and peer address of this connection, as far as known, for log lines.

        The user is the one the handler recorded in ``user_id`` (never a session key: those
        are credentials); the peer is ``REMOTE_ADDR``, a proxy's address unless the project
        sets it from ``X-Forwarded-For``.
        """
        request = self.request
        path = getattr(request, "path", "?")
        meta = getattr(request, "META", None) or {}
        peer = meta.get("REMOTE_ADDR")
        if peer is None:
            try:
                peer = self.socket.getpeername()[0]
            except (OSError, IndexError, TypeError):
                peer = "?"
        user = f"user {self.user_id}" if self.user_id is not None else "anonymous or unknown user"
        return f"{path} ({user}, peer {peer})"

    def _continue_message(self, data: bytes, fin: bool) -> None:
        if self._decoder is not None:
            self._fragments.append(self._decoder.decode(data, final=fin))
        else:
            self._fragments.append(bytes(data))
        if fin:
            joiner = "" if self._decoder is not None else b""
            self._deliver(joiner.join(self._fragments))
            self._fragments = []
            self._decoder = None

    # Sending

    def send(self, message: Message) -> None:
        """Send *message*: a text frame for ``str``, a binary frame for bytes-like.

        Safe to call from several greenlets at once. Raises ``ConnectionClosed``
        when the connection is closed or closing, ``TypeError`` for other types.
        """
        if isinstance(message, str):
            data = message.encode()
            text = True
        elif isinstance(message, bytes | bytearray | memoryview):
            data = message
            text = False
        elif isinstance(message, ChannelMessage):
            self._forward(message)
            return
        else:
            raise TypeError(f"send() takes str, bytes or a ChannelMessage, not {type(message).__name__}")
        with self._write_lock:
            protocol = self.protocol
            if protocol.state is not OPEN:
                raise self._closed_error()
            if protocol.expect_continuation_frame or len(data) >= self._plain_below:
                if text:
                    protocol.send_text(data)
                else:
                    protocol.send_binary(data)
                self._flush()
            else:
                # Hot path: a server frame is unmasked and, without extensions, only a header
                # and the payload — the same bytes Frame.serialize() builds, without its overhead.
                self._write(frame_header(0x81 if text else 0x82, len(data)), data)
            counters.messages_sent += 1

    def _forward(self, message: ChannelMessage) -> None:
        """Send a channel message with the frame it shares with every other recipient.

        Uncompressed even with permessage-deflate (RFC 7692 lets any message go
        uncompressed, and context takeover stays in sync): compressing it would cost
        every recipient its own zlib pass — 31 µs per socket for 1 KiB of JSON, against
        3.6 µs for writing the shared frame.
        """
        with self._write_lock:
            protocol = self.protocol
            if protocol.state is not OPEN:
                raise self._closed_error()
            if not self._plain_frames or protocol.expect_continuation_frame:
                data = message.data
                if isinstance(data, str):
                    protocol.send_text(data.encode())
                else:
                    protocol.send_binary(data)
                self._flush()
            else:
                try:
                    self._send_bytes(message.frame)
                except OSError:
                    self._abort()
                    raise self._closed_error() from None
            counters.messages_sent += 1

    def send_frames_nowait(self, frames: bytes) -> bool:
        """Write complete server *frames* only if that needs no waiting; used by the hub's fan-out.

        Returns ``True`` when they are written (or, after a partial write, their rest is
        being written by a helper greenlet that holds the write lock, so nothing can
        interleave), ``False`` when nothing was written and the caller must queue them.
        """
        protocol = self.protocol
        raw = self._raw
        if self._write_lock.locked() or raw is self.socket or protocol.state is not OPEN:
            return False  # a write in progress, not a gevent socket (could block), or closing
        if not self._plain_frames or protocol.expect_continuation_frame:
            return False  # frames need encoding, or a fragmented message is being sent
        # No lock taken: the hub's greenlet does not yield until the frames are handed over.
        try:
            sent = raw.send(frames)
        except BlockingIOError:
            return False
        except OSError:
            self._abort()
            return True  # the connection is gone: nothing left to deliver to
        counters.messages_sent += messages_in(frames)  # parsed once per batch, not per socket
        counters.bytes_sent += len(frames)  # the rest of a partial write included
        if sent < len(frames):
            self._write_lock.acquire()  # free (checked above) and released by the helper
            gevent.spawn(self._finish_write, memoryview(frames)[sent:])
        return True

    def _finish_write(self, rest: memoryview) -> None:
        """Write the rest of a partially sent frame, then release the write lock taken for it."""
        try:
            self._send_waiting(rest)
        except OSError:
            self._abort()
        finally:
            self._write_lock.release()

    def _write(self, header: bytes, data: bytes | bytearray | memoryview) -> None:
        """Write one frame. Caller holds the write lock."""
        try:
            if len(data) <= SMALL_FRAME:
                self._send_bytes(header + data)
            else:  # no copy of a big payload just to prepend a header
                self._send_bytes(header)
                self._send_bytes(data)
        except OSError:
            # The peer is gone; the reader sees EOF and ends the connection (1006).
            self._abort()
            raise self._closed_error() from None

    def _send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        # A non-blocking send completes at once for most frames and costs a third of
        # gevent's sendall(); only what the kernel did not take waits, for a bounded time.
        counters.bytes_sent += len(data)
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._send_waiting(memoryview(data)[sent:])

    def _send_waiting(self, rest: memoryview) -> None:
        """Send *rest*, waiting at most ``send_timeout``; past it the connection is dropped."""
        timer = gevent.Timeout.start_new(self.send_timeout) if self.send_timeout else None
        try:
            self.socket.sendall(rest)
        except gevent.Timeout as timeout:
            if timeout is not timer:
                raise
            logger.warning(
                "websocket client stopped reading: dropped after a %.1f s send timeout", self.send_timeout
            )
            if self._close_exc is None:
                self._close_exc = ConnectionClosedError(1013, "send timeout")
            raise OSError("send timeout") from None
        finally:
            if timer is not None:
                timer.close()

    def _flush(self) -> None:
        """Write what the protocol produced. Caller holds the write lock."""
        for chunk in self.protocol.data_to_send():
            try:
                if chunk is SEND_EOF or not chunk:
                    self.socket.shutdown(socket.SHUT_WR)
                else:
                    self._send_bytes(chunk)
            except OSError:
                # The peer is gone; the next read sees EOF and ends the connection (1006).
                self._abort()
                return

    # Closing

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with *code* and *reason* (RFC 6455 §7.4).

        Sends a close frame carrying exactly that code and reason, waits up to
        ``close_timeout`` seconds for the peer's close frame, then closes the TCP
        connection. Messages arriving meanwhile are discarded. Idempotent.
        Raises ``ValueError`` for a code that may not be sent (1005, 1006, <1000…).
        """
        with self._write_lock:
            if self.protocol.state is OPEN:
                try:
                    self.protocol.send_close(code, reason)
                except ProtocolError as exc:
                    raise ValueError(f"cannot close with code {code}: {exc}") from None
                self._flush()
        self._wait_closed()

    def terminate(self, code: int, reason: str = "") -> None:
        """Close now, even if a send is stuck on a client that stopped reading.

        Writes a close frame with *code* and *reason* if that takes less than a second,
        then drops the TCP connection without waiting for the peer's close frame.
        """
        if self._close_exc is None:
            self._close_exc = connection_closed(code, reason)
        with gevent.Timeout(1.0, False):
            with self._write_lock:
                if self.protocol.state is OPEN:
                    self.protocol.send_close(code, reason)
                    self._flush()
        self._abort()

    def shutdown(self, code: int = 1001, reason: str = "", timeout: float = 1.0) -> None:
        """Close for a server shutdown or restart: like ``close()``, but within about *timeout*."""
        self.close_timeout = min(self.close_timeout, timeout)
        with gevent.Timeout(timeout + 1.0, False):
            try:
                self.close(code, reason)
            except (ConnectionClosed, OSError):
                pass
        self._abort()

    def start_shutdown(self, code: int = 1001, reason: str = "") -> None:
        """Start closing for a server shutdown, without waiting: a drain's step per socket.

        When a greenlet is reading the socket (the view's, as in ``for message in websocket``)
        and no send is in progress, the close frame is written here, non-blocking (the rest of a
        partial write by a helper holding the write lock); the reader then gets the peer's close
        and ends the connection. Otherwise a greenlet runs :meth:`shutdown`. The caller ends
        whatever is still open after its own grace period (:meth:`terminate`). Never blocks.
        """
        if self._closed.is_set() or self.protocol.state is not OPEN:
            return
        if not self._read_lock.locked() or self._write_lock.locked() or self._raw is self.socket:
            gevent.spawn(self.shutdown, code, reason)
            return
        self.protocol.send_close(code, reason)
        self._write_nowait(b"".join(self.protocol.data_to_send()))

    def _write_nowait(self, frame: bytes) -> bool:
        """Write *frame* without waiting; the caller checked that the write lock is free.

        What the kernel does not take is written by a helper greenlet holding the write lock
        (nothing can interleave). Returns ``False`` when the peer is gone (the connection is
        then aborted). Safe in the event loop's own callbacks: never blocks.
        """
        try:
            sent = self._raw.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._abort()  # the peer is gone
            return False
        counters.bytes_sent += len(frame)
        if sent < len(frame):
            self._write_lock.acquire()  # free (checked by the caller) and released by the helper
            gevent.spawn(self._finish_write, memoryview(frame)[sent:])
        return True

    def _schedule_ping(self) -> None:
        """Start the next keepalive round ``ping_interval`` s from now (no-op without pings, or closed)."""
        if self._ping_interval is None or self._closed.is_set():
            return
        self._ping_timer = gevent.get_hub().loop.timer(self._ping_interval)
        self._ping_timer.start(self._ping_due)

    def _ping_due(self) -> None:
        """The interval timer's callback, in the event loop (nothing may block): start a round.

        The common round runs without a greenlet (creating and finishing one costs more than
        the whole round otherwise: its data stack is mmap'ed and munmap'ed): when the view is
        reading (it will see the pong) and no write is in progress, the ping is sent here,
        non-blocking, and ``_ping_timer`` becomes the pong's deadline; the pong cancels it and
        schedules the next round (:meth:`_pong_received`). Otherwise a greenlet runs the
        round (:meth:`_ping_round`), reading the socket itself for the pong.
        """
        if self._closed.is_set() or self.protocol.state is not OPEN:
            return
        if not self._read_lock.locked() or self._write_lock.locked() or self._raw is self.socket:
            gevent.spawn(self._ping_round)
            return
        self._ping_payload = payload = os.urandom(4)
        # RFC 7692 §6: control frames are never compressed, whatever the extensions.
        if not self._write_nowait(PING_HEADER + payload):
            return
        self._ping_timer = gevent.get_hub().loop.timer(self.ping_timeout)
        self._ping_timer.start(self._pong_overdue, payload)

    def _pong_received(self) -> None:
        """Under the read lock: the pong to the ping in flight came back."""
        if self._pong is not None:
            self._pong.set()  # a round's greenlet waits for it
            return
        self._ping_payload = b""
        self._ping_timer.close()  # the pong's deadline
        self._schedule_ping()

    def _pong_overdue(self, payload: bytes) -> None:
        """The deadline timer's callback, in the event loop: no pong to *payload* yet (rare)."""
        if self._ping_payload is payload and not self._closed.is_set():
            gevent.spawn(self._ping_late, payload)

    def _ping_late(self, payload: bytes) -> None:
        """No pong by the deadline: close 1011, unless it waits unread (the view stopped reading)."""
        if self._ping_payload is not payload or self._closed.is_set():
            return  # answered or closed since the deadline fired
        self._pong = pong = Event()
        try:
            # A view reading the socket would have seen the pong; otherwise it may be in the
            # socket's buffer, read here without waiting for more.
            answered = not self._read_lock.locked() and self._await_pong(pong, LATE_PONG_SECONDS)
        finally:
            self._pong = None
            self._ping_payload = b""
        self._end_round(answered)

    def _ping_round(self) -> None:
        """A round in a greenlet, when the view is not reading or a write is in progress.

        Pings once; while waiting for the pong it reads the socket itself if the view is
        not reading (messages are kept for ``receive()``), so a busy view does not fail the
        check and the client's own pings get answered meanwhile.
        """
        if self._closed.is_set():
            return
        self._pong = pong = Event()
        self._ping_payload = os.urandom(4)
        try:
            with self._write_lock:
                if self.protocol.state is not OPEN:
                    return
                self.protocol.send_ping(self._ping_payload)
                try:
                    self._flush()
                except OSError:
                    return
            answered = self._await_pong(pong, self.ping_timeout)
        finally:
            # Until the next round: idle sockets keep no Event and no payload for it.
            self._pong = None
            self._ping_payload = b""
        self._end_round(answered)

    def _end_round(self, answered: bool) -> None:
        """Schedule the next round, or close 1011 when the pong did not come back in time."""
        if not answered:
            logger.info("websocket closed: no pong within %.1f s", self.ping_timeout)
            self.terminate(1011, "keepalive ping timeout")
            return
        self._schedule_ping()

    def _await_pong(self, pong: Event, timeout: float) -> bool:
        """Wait until *pong* (the last ping's) is set; ``False`` when *timeout* passed without it."""
        deadline = time.monotonic() + timeout
        while not pong.is_set() and not self._closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._read_lock.locked():
                pong.wait(min(remaining, 0.5))  # the view is reading: it will see the pong
                continue
            with gevent.Timeout(remaining, False):
                try:
                    # Behind queued messages too: skipping the read there would spin until the
                    # deadline without yielding, blocking the worker, then fail an answered ping.
                    self._receive_more(behind_queued=True)
                except ConnectionClosed:
                    return True  # closed anyway: nothing left to keep alive
        return True

    def _wait_closed(self) -> None:
        """Wait for the closing handshake to finish, at most ``close_timeout`` seconds."""
        if self._closed.is_set():
            return
        with gevent.Timeout(self.close_timeout, False):
            if self._read_lock.locked():
                # Another greenlet is reading: it will see the peer's close frame.
                self._closed.wait()
            else:
                while True:
                    try:
                        self._receive_more()
                        if self._messages:
                            self._messages.clear()
                    except ConnectionClosed:
                        break
        self._abort()

    def _finish(self) -> None:
        """The protocol left OPEN: once the closing handshake is over, record why and drop TCP."""
        protocol = self.protocol
        if protocol.close_rcvd is None and not protocol.eof_sent and protocol.state is not CLOSED:
            return  # we sent a close frame; the peer's is still to come
        if self._close_exc is None:
            # A failure we detected is reported with the code we sent; otherwise the peer's.
            failed = protocol.parser_exc is not None or protocol.close_rcvd is None
            close = protocol.close_sent if failed else protocol.close_rcvd
            if close is None:
                self._close_exc = ConnectionClosedError(1006, "connection dropped")
            else:
                self._close_exc = connection_closed(close.code, close.reason)
                if failed:
                    logger.info("websocket closed with %s: %s", close.code, close.reason)
        if self._rate_limited and protocol.close_rcvd is None:
            self._drain()
        # The server closes the TCP connection first (RFC 6455 §7.1.1).
        self._abort()

    def _drain(self) -> None:
        """Read and drop, unparsed, what the client still sends after our close frame and FIN.

        Closing a socket with unread data makes the kernel answer with a reset, which can
        destroy our close frame before the client reads it: a flooding client would see
        1006 and not the 1008 that tells it why. At most ``LINGER_BYTES``, for at most
        ``close_timeout`` (``LINGER_SECONDS`` at most), yielding between reads; ends at the
        client's EOF, which a client that read the close frame sends soon.
        """
        total = 0
        with gevent.Timeout(min(self.close_timeout, LINGER_SECONDS), False):
            while total < LINGER_BYTES:
                try:
                    data = self._read(READ_SIZE)
                except OSError:
                    return
                if not data:
                    return
                total += len(data)
                gevent.sleep(0)  # a flood is always readable: let the other sockets run

    def _abort(self) -> None:
        """Close the TCP connection now. Idempotent."""
        if self._close_exc is None:
            self._close_exc = ConnectionClosedError(1006, "connection dropped")
        if not self._closed.is_set():
            self._closed.set()
            open_connections.discard(self)
            counters.count_close(self._close_exc.code)  # once per socket: its final code
            if self._ping_timer is not None:
                # The next ping's timer or, with a ping in flight, the pong's deadline: either
                # holds this connection until it fires.
                self._ping_timer.close()
            self._close_socket()

    def _close_socket(self) -> None:
        """Close the socket, shutting it down first unless the close alone does all a shutdown would.

        A shutdown first, as a rule: it ends the connection even while something else (pywsgi's
        request reader) holds the socket, which close() then leaves open, and it wakes blocked
        greenlets with an end of stream. After our EOF (``protocol.eof_sent``: the closing
        handshake's ``SHUT_WR`` sent our FIN), on a gevent socket that close() really closes
        (``fileno()`` is -1 after it), it would be a system call for nothing, often failing with
        ENOTCONN: ``SHUT_RD`` sends nothing, and gevent's close() itself wakes any greenlet
        waiting on the socket (with an error, which our reads and writes take as the end).
        """
        sock = self.socket
        if self.protocol.eof_sent and self._raw is not sock:
            try:
                sock.close()
            except OSError:
                pass
            if sock.fileno() == -1:
                return
        for step in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
            try:
                step()
            except OSError:
                pass

    def _closed_error(self) -> ConnectionClosed:
        """A fresh exception for the connection's end (re-raising one instance grows its traceback)."""
        if self._close_exc is not None:
            return type(self._close_exc)(self._close_exc.code, self._close_exc.reason)
        sent = self.protocol.close_sent
        return connection_closed(sent.code, sent.reason) if sent else ConnectionClosedError(1006)

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or closing (no more messages can be sent)."""
        return self.protocol.state is not OPEN or self._closed.is_set()

    @property
    def close_code(self) -> int | None:
        """The close code the connection ended with, ``None`` while it is open."""
        return self._close_exc.code if self._close_exc is not None else None

    def __repr__(self) -> str:
        state = "open" if not self.closed else f"closed {self.close_code}"
        return f"<WebSocket {state}>"


# ``CLOSED`` is re-exported for callers that inspect ``websocket.protocol.state``.
__all__ = ["WebSocket", "CLOSED"]
