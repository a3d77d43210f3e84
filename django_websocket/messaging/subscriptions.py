"""A socket's channel subscriptions and its single stream of events.

``websocket.events()`` merges the client's messages and the channels' messages into
one queue, in arrival order, so a view never waits on one source while the other
has something (the original ``select()`` over the socket and a buffered Redis
reader lost such wake-ups). A pump greenlet reads the client; the hub puts channel
messages. Channel messages are bounded per socket (``WEBSOCKET_CHANNEL_QUEUE_SIZE``):
a socket that falls that far behind is closed with 1013, so it never slows the hub
or anyone else. Client messages are bounded too, by pausing the pump (TCP then
pushes back on the client).

Messages with ids are delivered at most once per socket and in id order: a message
whose id is not newer than the last one delivered on its channel is dropped. That
is what stitches a replay to live delivery: while a resuming subscription reads the
history, live messages are held; then the replay goes out, then the held messages
newer than it. The hub's own recovery after a Redis reconnection relies on it too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from gevent.queue import Empty, Queue

from ..acks import client_message
from ..events import (
    ChannelBatch,
    ChannelMessage,
    ClientMessage,
    Event,
    Gap,
    Presence,
    PresenceChange,
    PresenceDiff,
    Resync,
    compact_json,
)
from ..exceptions import ConnectionClosed, ConnectionClosedOK, PublishError
from ..frames import text_frame
from .history import ORIGIN, Reading, is_id, parse_id
from .hub import Hub, read_patiently
from .presence import connection_id, member_for
from .wire import audience_suffixes

logger = logging.getLogger("django_websocket")

#: Client messages read ahead of the view before the pump pauses.
CLIENT_READ_AHEAD = 64
#: Close code for a socket that stopped reading (RFC 6455 §7.4.1: try again later).
SLOW_CONSUMER = 1013
#: The query parameter a resuming client names its last ids in: ``since=<channel>@<id>``.
SINCE_PARAMETER = "since"


@dataclass
class _Channel:
    """One subscribed channel of a socket."""

    keys: list[str]
    forward: bool = False
    envelope: bool = False  # forwarded in the resume protocol's frames
    last: tuple[int, int] | None = None  # id of the last message delivered
    holding: list[Any] | None = None  # live batches held while the history is read
    member: dict | None = None  # this socket's presence entry
    early_diffs: list[Any] | None = None  # presence diffs that came before the member list


class Subscriptions:
    """The channel side of one websocket (opened by *request*), on the channels of *hub*."""

    def __init__(self, websocket: Any, request: Any, hub: Hub) -> None:
        self.websocket = websocket
        self.request = request
        self.hub = hub
        self.broker = hub.broker
        self.limit = self.broker.options.queue_size
        self.channels: dict[str, _Channel] = {}
        self.inbox: Queue = Queue()
        self.pending = 0  # channel messages in the inbox
        self.overflowed = False
        self._client_slots = BoundedSemaphore(CLIENT_READ_AHEAD)
        self._pump: gevent.Greenlet | None = None
        self.outbox: deque[Any] = deque()  # forwarded messages (or frames' parts) waiting for the socket
        self._writer: gevent.Greenlet | None = None

    def subscribe(self, channel: str, forward=False, since=None, resume=False, presence=None) -> None:
        """Receive *channel*'s messages, including those addressed to this socket's user, groups, session.

        *forward*: write them to the client directly instead of queueing them for
        ``events()``. *since*: first replay what came after that id (or a ``Gap``).
        *resume*: take *since* from the request's ``since`` query parameter and, when
        forwarding, use the resume protocol's frames (docs/topics/history.md). *presence*:
        join the channel's presence (``True`` or a member dict with a ``name``).
        Subscribing to a channel already subscribed changes nothing.
        """
        if channel in self.channels:
            return
        if self.websocket.on_wait is not None:
            self.websocket.on_wait()  # the broker's confirmation and the history are waits too
        if resume and since is None:
            since = self.requested_since().get(channel)
        member = None
        if presence is not None and presence is not False:
            member = member_for(self.request, presence, connection_id())
        keys = [self.broker.key(channel, suffix) for suffix in [""] + audience_suffixes(self.request)]
        state = self.channels[channel] = _Channel(keys, forward, forward and resume)
        rule = self.broker.options.policy(channel)
        replay = rule.enabled and (resume or since is not None)
        if replay:
            state.holding = []
        for key in keys:
            self.hub.add(key, self)
        self.hub.track(channel)
        if replay:
            self._replay(channel, state, since)
        elif since is not None:
            self._put_gap(state, Gap((channel,), ORIGIN))  # this channel keeps no history
        if member is not None:
            self._join(channel, state, member)

    def requested_since(self) -> dict[str, str]:
        """``{channel: id}`` from the request's ``since=<channel>@<id>`` query parameters."""
        query = getattr(self.request, "GET", None)
        if query is None:
            return {}
        since = {}
        for value in query.getlist(SINCE_PARAMETER):
            channel, separator, message_id = value.rpartition("@")
            if separator:
                since[channel] = message_id
        return since

    def _replay(self, channel: str, state: _Channel, since: str | None) -> None:
        """Deliver what came after *since* (or a Gap), then the live messages held meanwhile.

        A history that cannot be read is tried again for up to ``RECOVERY_PATIENCE`` s (the
        view waits; live messages are held meanwhile) before the client gets a Gap at *since*.
        Nothing yields between taking the held messages and delivering them, so no live
        message can overtake the replay.
        """

        def unwanted() -> bool:  # the view unsubscribed, or closed, while the read was retried
            return self.channels.get(channel) is not state

        try:
            reading = read_patiently(self.broker, channel, since, stop=unwanted)
        except PublishError as error:
            logger.warning("cannot read the history of %s to resume: %s", channel, error)
            position = since if is_id(since) else ORIGIN
            reading = Reading(position=position, gap=since is not None)
        held, state.holding = state.holding or [], None
        if reading.gap:
            self._put_gap(state, Gap((channel,), reading.position))
        keys = set(state.keys)
        replayed = [ChannelMessage.from_entry(channel, e) for e in reading.entries if e.key in keys]
        if replayed:
            self.hub.replayed += len(replayed)
            self.put_channel_messages(ChannelBatch(replayed))
        position = parse_id(reading.position)
        if state.last is None or position > state.last:
            state.last = position
        if state.envelope:
            subscribed = {"ws": "subscribed", "channel": channel, "id": reading.position}
            self._forward_text(compact_json({**subscribed, "replayed": len(replayed)}))
        for item in held:
            self.put_channel_messages(item)

    def _join(self, channel: str, state: _Channel, member: dict) -> None:
        """Join, then give the client the member list, then the diffs that came meanwhile.

        A diff can reach this socket while the list is being read; it may hold changes
        the list missed, so it goes out after the list, never before (where the list
        would overwrite it).
        """
        state.member = member
        state.early_diffs = []
        self.broker.join(channel, member)
        try:
            listed = {other["conn"]: other for other in self.hub.members(channel)}
        except PublishError as error:
            logger.warning("cannot read the presence of %s: %s", channel, error)
            listed = {}
        listed.setdefault(member["conn"], member)  # its own join may not have come back yet
        members = tuple(sorted(listed.values(), key=lambda other: other["conn"]))
        self._put_control(state, Presence(channel, members))
        early, state.early_diffs = state.early_diffs, None
        for diff in early:
            self.put_presence_diff(diff)

    def unsubscribe(self, channel: str) -> None:
        state = self.channels.pop(channel, None)
        if state is None:
            return
        for key in state.keys:
            self.hub.discard(key, self)
        if state.member is not None:
            self.broker.leave(channel, state.member["conn"])

    def close(self) -> None:
        """End every subscription and stop reading the client. Idempotent."""
        for channel in list(self.channels):
            self.unsubscribe(channel)
        for greenlet in (self._pump, self._writer):
            if greenlet is not None:
                greenlet.kill(block=False)
        self.outbox.clear()

    # Called by the hub: never block.

    def put_channel_messages(self, batch: ChannelBatch) -> None:
        if self.overflowed:
            return
        state = self.channels.get(batch.messages[0].channel)
        if state is None:
            return
        if state.holding is not None:
            state.holding.append(batch)
            return
        if batch.messages[0].id is not None:
            fresh = self._fresh(state, batch)
            if fresh is None:
                return
            batch = fresh
        if state.forward:
            if state.envelope:
                self._forward_frames(batch.envelopes, [m.envelope_parts for m in batch.messages])
            else:
                self._forward_frames(batch.frames, batch.messages)
            return
        if self.pending + len(batch.messages) > self.limit:
            self._overflow()
            return
        self.pending += len(batch.messages)
        for message in batch.messages:
            self.inbox.put(message)

    @staticmethod
    def _fresh(state: _Channel, batch: ChannelBatch) -> ChannelBatch | None:
        """*batch* without the messages this socket already has (by id); ``None`` if none is new."""
        last = state.last
        if last is not None and batch.messages[0].seq <= last:
            messages = [message for message in batch.messages if message.seq > last]
            if not messages:
                return None
            batch = ChannelBatch(messages)
        state.last = batch.messages[-1].seq
        return batch

    def _put_gap(self, state: _Channel, gap: Gap) -> None:
        self.hub.gaps += 1
        self._put_control(state, gap)

    def _put_control(self, state: _Channel, event: Gap | Presence | PresenceChange) -> None:
        """A Gap or presence event: a frame of the protocol when forwarding, else an event."""
        if state.forward:
            self._forward_text(event.text)
        else:
            self.inbox.put(event)

    def _forward_text(self, text: str) -> None:
        """Forward one text message of the resume protocol, in order with the channel's messages."""
        self._forward_frames(text_frame(text), [[text]])

    def _forward_frames(self, frames: bytes, items: list[Any]) -> None:
        # Straight onto the wire when the socket can take it now (one system call for the
        # whole batch); otherwise in order, behind what already waits, written by one greenlet.
        if not self.outbox and self.websocket.send_frames_nowait(frames):
            return
        if len(self.outbox) + len(items) > self.limit:
            self._overflow()
            return
        self.outbox.extend(items)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_outbox)

    def _write_outbox(self) -> None:
        try:
            while self.outbox:
                item = self.outbox[0]
                if isinstance(item, ChannelMessage):
                    self.websocket.send(item)
                else:  # the parts of protocol frames: str or bytes messages
                    for part in item:
                        self.websocket.send(part)
                self.outbox.popleft()
        except ConnectionClosed:
            self.outbox.clear()
        finally:
            self._writer = None

    def put_resync(self, event: Resync) -> None:
        state = self.channels.get(event.channels[0]) if isinstance(event, Gap) and event.channels else None
        if state is None:
            self.inbox.put(event)
            return
        state.last = None  # after a gap, whatever comes next is new
        self._put_control(state, event)

    def put_presence_diff(self, diff: PresenceDiff) -> None:
        state = self.channels.get(diff.channel)
        if state is None or state.member is None or self.overflowed:
            return  # only members hear joins and leaves
        if state.early_diffs is not None:
            state.early_diffs.append(diff)
            return
        if state.forward:
            self._forward_text(diff.text)
            return
        for change in diff.changes():
            self.inbox.put(change)

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
        if self.inbox.empty() and self.websocket.on_wait is not None:
            self.websocket.on_wait()
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
            self.inbox.put(client_message(data))  # send frames unwrapped, with their id
