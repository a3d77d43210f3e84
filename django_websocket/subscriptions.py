"""A socket's channel subscriptions and its single stream of events.

``websocket.events()`` merges the client's messages and the channels' messages into
one queue, in arrival order, so a view never waits on one source while the other
has something (the original ``select()`` over the socket and a buffered Redis
reader lost such wake-ups). A pump greenlet reads the client; the hub puts channel
messages. Channel messages are bounded per socket (``WEBSOCKET_CHANNEL_QUEUE_SIZE``):
a socket that falls that far behind is closed with 1013, so it never slows the hub
or anyone else. Client messages are bounded too, by pausing the pump (TCP then
pushes back on the client).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from gevent.queue import Empty, Queue

from . import conf
from .events import ChannelBatch, ChannelMessage, ClientMessage, Event, Resync
from .exceptions import ConnectionClosed, ConnectionClosedOK
from .publishing import audience_suffixes, channel_key

logger = logging.getLogger("django_websocket")

#: Client messages read ahead of the view before the pump pauses.
CLIENT_READ_AHEAD = 64
#: Close code for a socket that stopped reading (RFC 6455 §7.4.1: try again later).
SLOW_CONSUMER = 1013


class Subscriptions:
    """The channel side of one websocket: subscribe, unsubscribe, events."""

    def __init__(self, websocket: Any, request: Any = None) -> None:
        from .hub import get_hub

        self.websocket = websocket
        self.request = request
        self.hub = get_hub()
        self.limit = int(conf.get("WEBSOCKET_CHANNEL_QUEUE_SIZE"))
        self.keys: dict[str, list[str]] = {}
        self.inbox: Queue = Queue()
        self.pending = 0  # channel messages in the inbox
        self.overflowed = False
        self._client_slots = BoundedSemaphore(CLIENT_READ_AHEAD)
        self._pump: gevent.Greenlet | None = None
        self.forwarded: set[str] = set()
        self.outbox: deque[ChannelMessage] = deque()  # forwarded messages waiting for the socket
        self._writer: gevent.Greenlet | None = None

    def subscribe(self, channel: str, forward: bool = False) -> None:
        """Receive *channel*'s messages, including those addressed to this socket's user, groups, session.

        With *forward* they are written to the client directly instead of queued for ``events()``.
        """
        if forward:
            self.forwarded.add(channel)
        if channel in self.keys:
            return
        suffixes = [""] + audience_suffixes(self.request)
        keys = self.keys[channel] = [channel_key(channel, suffix) for suffix in suffixes]
        for key in keys:
            self.hub.add(key, self)

    def unsubscribe(self, channel: str) -> None:
        self.forwarded.discard(channel)
        for key in self.keys.pop(channel, ()):
            self.hub.discard(key, self)

    def close(self) -> None:
        """End every subscription and stop reading the client. Idempotent."""
        for channel in list(self.keys):
            self.unsubscribe(channel)
        for greenlet in (self._pump, self._writer):
            if greenlet is not None:
                greenlet.kill(block=False)
        self.outbox.clear()

    # Called by the hub: never block.

    def put_channel_messages(self, batch: ChannelBatch) -> None:
        if self.overflowed:
            return
        if batch.messages[0].channel in self.forwarded:
            self._forward(batch)
            return
        if self.pending + len(batch.messages) > self.limit:
            self._overflow()
            return
        self.pending += len(batch.messages)
        for message in batch.messages:
            self.inbox.put(message)

    def _forward(self, batch: ChannelBatch) -> None:
        # Straight onto the wire when the socket can take it now (one system call for the
        # whole batch); otherwise in order, behind what already waits, written by one greenlet.
        if not self.outbox and self.websocket.send_frames_nowait(batch.frames):
            return
        if len(self.outbox) + len(batch.messages) > self.limit:
            self._overflow()
            return
        self.outbox.extend(batch.messages)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_outbox)

    def _write_outbox(self) -> None:
        try:
            while self.outbox:
                self.websocket.send(self.outbox[0])
                self.outbox.popleft()
        except ConnectionClosed:
            self.outbox.clear()
        finally:
            self._writer = None

    def put_resync(self, event: Resync) -> None:
        self.inbox.put(event)

    def _overflow(self) -> None:
        self.overflowed = True
        self.hub.overflows += 1
        path = getattr(self.request, "path", "?")
        logger.warning(
            "websocket %s is a slow consumer (%d channel messages waiting): closing it with %d",
            path, self.pending + len(self.outbox), SLOW_CONSUMER,
        )  # fmt: skip
        gevent.spawn(self.websocket.terminate, SLOW_CONSUMER, "slow consumer")

    # The view's side

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` after *timeout* seconds; raises ``ConnectionClosed`` at the end."""
        if self._pump is None:
            self._pump = gevent.spawn(self._read_client)
        try:
            event = self.inbox.get(timeout=timeout)
        except Empty:
            return None
        if isinstance(event, ChannelMessage):
            self.pending -= 1
        elif isinstance(event, ClientMessage):
            self._client_slots.release()
        elif isinstance(event, ConnectionClosed):
            self.inbox.put(event)  # every later call ends the same way
            raise type(event)(event.code, event.reason)
        return event

    def events(self) -> Iterator[Event]:
        """Yield events until the client closes; a normal closure ends the iteration."""
        while True:
            try:
                yield self.next_event()  # type: ignore[misc]
            except ConnectionClosedOK:
                return

    def _read_client(self) -> None:
        while True:
            self._client_slots.acquire()
            try:
                data = self.websocket.receive()
            except ConnectionClosed as closed:
                self.inbox.put(closed)
                return
            self.inbox.put(ClientMessage(data))
