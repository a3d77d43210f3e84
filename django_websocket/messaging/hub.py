"""One hub per worker process: one broker subscriber fanning messages out to sockets.

The hub keeps, for every broker channel name, the set of sockets' mailboxes
subscribed to it. With a remote broker (Redis) it holds one subscriber connection and
one reader greenlet, whatever the number of sockets (``CLIENT LIST`` grows with
workers, not sockets); the in-process broker hands it message objects directly.

Messages of channels with history carry ids; the hub remembers the newest id it saw
per channel (its *position*). After a reconnection it reads each channel's history
from that position and delivers what it missed before anything newer (sockets drop
what they already have, by id), so subscribers lose nothing; only a gap it cannot
fill (history trimmed or lost, or unreadable for :data:`RECOVERY_PATIENCE` seconds after
the reconnection) becomes a :class:`~django_websocket.events.Gap`.

Fan-out never blocks: each mailbox takes a message or, when its socket has stopped
reading and its queue is full, closes that socket (1013). Redis faults are handled
here and only here: the reader reconnects with backoff, resubscribes every channel,
and gives every affected socket a :class:`~django_websocket.events.Resync` event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from ..events import ChannelBatch, ChannelMessage, Gap, Join, PresenceChange, PresenceDiff, Resync
from ..exceptions import PublishError
from .brokers.base import Broker
from .history import ORIGIN, Reading
from .wire import PRESENCE, decode_data, split_payload

logger = logging.getLogger("django_websocket")

#: Backoff between reconnection attempts: doubles from the first value up to the second.
RECONNECT_BACKOFF = (0.05, 1.0)
#: Seconds a channel's joins and leaves are gathered before they go out as one diff per member:
#: 500 members joining over 2 s cost each member about 20 frames instead of 500.
PRESENCE_BATCH = 0.1
#: How long subscribe() waits for Redis to confirm a new subscription.
SUBSCRIBE_TIMEOUT = 5.0
#: Seconds during which a failed history read is tried again (every RECOVERY_RETRY s) before it
#: becomes a gap, after a reconnection and when a client resumes: a server that took the
#: subscription back may refuse reads a moment longer (a re-forming cluster answers CLUSTERDOWN
#: after SSUBSCRIBE works), and sentinels may all call a healthy primary down for a moment.
RECOVERY_PATIENCE = 2.0
RECOVERY_RETRY = 0.1


def read_patiently(
    broker: Broker,
    channel: str,
    position: str | None,
    deadline: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> Reading:
    """``broker.read(channel, position)``, tried again every ``RECOVERY_RETRY`` s while it fails.

    *deadline* (``time.monotonic()``) defaults to ``RECOVERY_PATIENCE`` s from now. Raises
    the last ``PublishError`` when the next try would come after it, or at once when *stop()*
    says the reading is no longer wanted. A Redis that just came back, a cluster re-forming
    (CLUSTERDOWN) or sentinels all calling a healthy primary down for a moment refuse reads
    for a moment: a gap then would make clients reload for nothing.
    """
    if deadline is None:
        deadline = time.monotonic() + RECOVERY_PATIENCE
    while True:
        try:
            return broker.read(channel, position)
        except PublishError:
            if time.monotonic() + RECOVERY_RETRY > deadline or (stop is not None and stop()):
                raise
        gevent.sleep(RECOVERY_RETRY)


class Mailbox(Protocol):
    """What the hub delivers to: a socket's subscriptions."""

    def put_channel_messages(self, batch: ChannelBatch) -> None: ...
    def put_resync(self, event: Resync) -> None: ...
    def put_presence_diff(self, diff: PresenceDiff) -> None: ...


class MirrorLoad:
    """A channel's member list being read: the changes that arrive meanwhile, and who waits."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.changes: list[PresenceChange] = []
        self.ready = Event()


def _apply(mirror: dict[str, dict], change: PresenceChange) -> None:
    if isinstance(change, Join):
        mirror[change.member["conn"]] = change.member
    else:
        mirror.pop(change.member.get("conn"), None)


class Hub:
    """Channel subscriptions of the sockets of one process (one gevent hub), fed by *broker*.

    Counters (plain ints, for metrics): ``deliveries`` (message × socket), ``reconnects``
    (of the subscriber connection), ``overflows`` (slow consumers closed), ``replayed``
    (messages replayed to resuming sockets), ``gaps`` (gaps signalled to sockets).
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.remote = broker.remote
        self.gevent_hub = gevent.get_hub()
        self.mailboxes: dict[str, set[Mailbox]] = {}
        self.deliveries = 0
        self.reconnects = 0
        self.overflows = 0
        self.replayed = 0
        self.gaps = 0
        self._subscriber: Any = None
        self._reader: gevent.Greenlet | None = None
        self._write_lock = Semaphore()
        #: Set when Redis confirmed the subscription, or when the connection was lost before it
        #: did (the key is then in _unconfirmed: a Resync follows the late confirmation).
        self._confirmations: dict[str, Event] = {}
        self._resync_pending: set[str] = set()
        self._unconfirmed: set[str] = set()  # subscribed while Redis was unreachable
        self._connected_before = False
        #: Newest id seen per channel with history (remote brokers): where recovery reads from.
        self.positions: dict[str, str] = {}
        #: Channels being recovered after a reconnection: their live messages wait here.
        self._recovering: dict[str, list[tuple[str, list[ChannelMessage | PresenceChange]]]] = {}
        self.recoveries = 0
        self._tracking: set[str] = set()
        self._channel_keys: dict[str, int] = {}  # broker channel names in use per channel
        #: Joins and leaves waiting for their batch window, per broker channel: conn -> change.
        self._presence: dict[str, dict[str, PresenceChange]] = {}
        #: Presence of channels with members here, kept from their events (remote brokers).
        self._mirrors: dict[str, dict[str, dict]] = {}
        self._loading: dict[str, MirrorLoad] = {}
        self._epoch = 0  # a lost subscriber connection (events may be missed) starts a new one
        broker.attach(self)

    def channel_name(self, key: str) -> str:
        """The channel broker channel name *key* belongs to."""
        return self.broker.channel(key)

    # Subscriptions, called from views' greenlets

    def add(self, key: str, mailbox: Mailbox) -> None:
        """Subscribe *mailbox* to broker channel *key*; return once the broker delivers it.

        With a remote broker, the first subscriber of a channel waits (up to ``SUBSCRIBE_TIMEOUT``)
        for Redis to confirm, so a message published after this returns is received. It does
        not wait while the connection is down or lost, or when Redis refused the subscription
        (a cluster master failing over): the mailbox gets a ``Resync`` after the late confirmation.
        """
        mailboxes = self.mailboxes.setdefault(key, set())
        first = not mailboxes
        mailboxes.add(mailbox)
        if first:
            channel = self.channel_name(key)
            self._channel_keys[channel] = self._channel_keys.get(channel, 0) + 1
        if not self.remote:
            return
        confirmed = self._confirmations.get(key)
        if first and confirmed is None:
            confirmed = self._confirmations[key] = Event()
            self._ensure_reader()
            if not self._send("subscribe", [key]) and self._connected_before:
                # Refused (a cluster master failing over…): the reader reconnects and resubscribes.
                self._unconfirmed.add(key)
        if confirmed is None or confirmed.is_set():
            return
        if key in self._unconfirmed or (self._connected_before and self._subscriber is None):
            # Redis is down: don't hold the view; a Resync follows the late confirmation.
            self._unconfirmed.add(key)
        elif not confirmed.wait(SUBSCRIBE_TIMEOUT):
            logger.warning("Redis has not confirmed the subscription to %s yet", key)
            self._unconfirmed.add(key)

    def discard(self, key: str, mailbox: Mailbox) -> None:
        """Unsubscribe *mailbox* from *key*; the broker subscription ends with its last mailbox."""
        mailboxes = self.mailboxes.get(key)
        if mailboxes is None:
            return
        mailboxes.discard(mailbox)
        if not mailboxes:
            del self.mailboxes[key]
            channel = self.channel_name(key)
            self._channel_keys[channel] -= 1
            if not self._channel_keys[channel]:
                del self._channel_keys[channel]
                self._mirrors.pop(channel, None)  # no socket here hears its joins and leaves any more
                self.positions.pop(channel, None)  # a later subscriber starts afresh
            self._confirmations.pop(key, None)
            self._unconfirmed.discard(key)
            if self.remote:
                self._send("unsubscribe", [key])

    def _send(self, command: str, keys: list[str]) -> bool:
        """Send a (un)subscribe command; return whether it went out.

        A lost connection is the reader's to repair: it subscribes to every current channel
        when it reconnects.
        """
        with self._write_lock:
            if self._subscriber is None:
                return False
            try:
                getattr(self._subscriber, command)(keys)
            except ConnectionError:
                return False
            return True

    # Delivery

    def track(self, channel: str) -> None:
        """Learn *channel*'s position if unknown (remote broker, history on): where recovery starts."""
        if not self.remote or channel in self.positions or channel in self._tracking:
            return  # one read per channel, however many sockets subscribe at once
        if not self.broker.options.policy(channel).enabled:
            return
        self._tracking.add(channel)
        try:
            position = self.broker.read(channel, None).position
        except PublishError as error:
            logger.warning("cannot read the position of %s: %s", channel, error)
            return
        finally:
            self._tracking.discard(channel)
        if channel in self._channel_keys:  # still subscribed after the read
            self.positions.setdefault(channel, position)

    def deliver(self, key: str, *payloads: bytes) -> int:
        """Decode published payloads of *key* (a remote broker's bytes) and :meth:`dispatch` them."""
        if key not in self.mailboxes:
            return 0
        channel = self.channel_name(key)
        items: list[ChannelMessage | PresenceChange] = []
        for payload in payloads:
            if payload[:1] == PRESENCE:
                items.append(PresenceChange.decode(payload[1:]))
            else:
                kind, message_id, data = split_payload(payload)
                items.append(ChannelMessage(channel, decode_data(kind, data), message_id, kind))
        return self.dispatch(key, items, channel)

    def dispatch(
        self, key: str, items: list[ChannelMessage | PresenceChange], channel: str | None = None
    ) -> int:
        """Hand messages and presence changes of *key*, in order, to its every mailbox; return how many.

        *channel*: the channel of *key*, when the caller has it already.
        """
        mailboxes = self.mailboxes.get(key)
        if not mailboxes:
            return 0
        if channel is None:
            channel = self.channel_name(key)
        waiting = self._recovering.get(channel)
        if waiting is not None:
            waiting.append((key, items))
            return len(mailboxes)
        messages: list[ChannelMessage] = []
        for item in items:
            if isinstance(item, PresenceChange):
                self._gather_presence(key, item)
            else:
                messages.append(item)
        self._put_messages(mailboxes, messages)
        if messages and messages[-1].id is not None and self.remote:
            self.positions[channel] = messages[-1].id
        return len(mailboxes)

    def members(self, channel: str) -> list[dict]:
        """*channel*'s presence: read from the broker once per worker, then kept from its events.

        A reconnection storm of N members would otherwise read the N-member list N times
        (N² in all) from Redis. The in-process broker's list is local already. Raises
        ``PublishError`` when the broker does not answer.
        """
        if not self.remote:
            return self.broker.members(channel)
        mirror = self._mirrors.get(channel)
        if mirror is not None:
            return list(mirror.values())
        loading = self._loading.get(channel)
        if loading is not None:  # another socket of this worker is reading it: wait for that
            loading.ready.wait()
            return self.members(channel) if channel in self._mirrors else self.broker.members(channel)
        loading = self._loading[channel] = MirrorLoad(self._epoch)
        try:
            listed = self.broker.members(channel)
            mirror = {member["conn"]: member for member in listed}
            for change in loading.changes:  # what arrived while the list was read, in order
                _apply(mirror, change)
            if loading.epoch == self._epoch and channel in self._channel_keys:
                self._mirrors[channel] = mirror
            return listed if not loading.changes else list(mirror.values())
        finally:
            del self._loading[channel]
            loading.ready.set()

    def _observe(self, channel: str, change: PresenceChange) -> None:
        """Keep the channel's mirror (or the list being read) up to date with *change*."""
        mirror = self._mirrors.get(channel)
        if mirror is not None:
            _apply(mirror, change)
        loading = self._loading.get(channel)
        if loading is not None:
            loading.changes.append(change)

    def _gather_presence(self, key: str, change: PresenceChange) -> None:
        """Keep *change* for *key*'s next diff: the net change per connection within the window."""
        self._observe(change.channel, change)
        pending = self._presence.get(key)
        if pending is None:
            pending = self._presence[key] = {}
            gevent.spawn_later(PRESENCE_BATCH, self._flush_presence, key)
        # The latest change per connection. A join and a leave within one window do not cancel
        # out: a member that read the list in between has the connection, and needs the leave.
        conn = change.member.get("conn")
        pending.pop(conn, None)
        pending[conn] = change

    def _flush_presence(self, key: str) -> None:
        """Hand the window's joins and leaves of *key* to its mailboxes as one diff."""
        pending = self._presence.pop(key, {})
        mailboxes = self.mailboxes.get(key)
        if not pending or not mailboxes:
            return
        joins = tuple(change.member for change in pending.values() if isinstance(change, Join))
        leaves = tuple(change.member for change in pending.values() if not isinstance(change, Join))
        diff = PresenceDiff(self.channel_name(key), joins, leaves)
        for mailbox in tuple(mailboxes):
            mailbox.put_presence_diff(diff)

    def _put_messages(self, mailboxes: set[Mailbox], messages: list[ChannelMessage]) -> None:
        if not messages:
            return
        batch = ChannelBatch(messages)
        for mailbox in tuple(mailboxes):
            mailbox.put_channel_messages(batch)
        self.deliveries += len(mailboxes) * len(messages)

    def resync(self, keys: Iterable[str]) -> None:
        """Tell every mailbox of *keys* that messages may have been missed."""
        by_mailbox: dict[Mailbox, set[str]] = {}
        for key in keys:
            for mailbox in self.mailboxes.get(key, ()):
                by_mailbox.setdefault(mailbox, set()).add(self.channel_name(key))
        for mailbox, channels in by_mailbox.items():
            mailbox.put_resync(Resync(tuple(sorted(channels))))

    # The reader of a remote broker

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.dead:
            self._reader = gevent.spawn(self._read_forever)

    def _read_forever(self) -> None:
        """Read the broker forever: deliver messages, reconnect with backoff, resubscribe, resync."""
        backoff = RECONNECT_BACKOFF[0]
        while True:
            subscriber = self.broker.subscriber()
            try:
                # Without the lock: a cluster's subscriber may wait here for a failover to end,
                # and views subscribing meanwhile must not wait with it.
                subscriber.connect(list(self.mailboxes))
                with self._write_lock:
                    keys = list(self.mailboxes)
                    subscriber.subscribe(keys)
                    self._subscriber = subscriber
                if self._connected_before:
                    self._resync_pending = set(keys)
                    # Live messages wait until what was missed has been delivered before them.
                    channels = {self.channel_name(key) for key in keys}
                    self._recovering = {channel: [] for channel in channels if channel in self.positions}
                    logger.warning("reconnected to Redis; resubscribing %d channels", len(keys))
                self._connected_before = True
                for events in subscriber.batches():
                    backoff = RECONNECT_BACKOFF[0]  # it answered: a failure now is news, not the same one
                    self._handle(events)
            except ConnectionError as error:
                self._mirrors.clear()  # joins and leaves may be lost meanwhile: read them again
                self._epoch += 1
                with self._write_lock:
                    self._subscriber = None
                if self._connected_before:
                    self._stop_waiting_for_confirmations()
                subscriber.close()
                self.reconnects += 1
                state = "lost" if self._connected_before else "cannot open"
                logger.warning(
                    "%s the Redis subscriber connection (%s); retrying in %.2f s", state, error, backoff
                )
                gevent.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF[1])

    def _handle(self, events: list) -> None:
        """Deliver what one read brought: consecutive messages of a channel go out as one batch."""
        run_key: bytes | None = None
        run: list[bytes] = []
        for kind, key, value in events:
            if kind == "message" and key == run_key:
                run.append(value)
                continue
            if run:
                self.deliver(run_key.decode(), *run)  # type: ignore[union-attr]
                run_key, run = None, []
            if kind == "message":
                run_key, run = key, [value]
            elif kind == "subscribe":
                self._confirm(key.decode())
        if run:
            self.deliver(run_key.decode(), *run)  # type: ignore[union-attr]

    def _stop_waiting_for_confirmations(self) -> None:
        """The connection was lost: views waiting in add() go on, as when it was already down.

        A subscription sent just before the loss (to a cluster master that died, say) is
        confirmed after the reconnection at best; its view gets a Resync then.
        """
        for key, confirmed in self._confirmations.items():
            if not confirmed.is_set():
                self._unconfirmed.add(key)
                confirmed.set()

    def _confirm(self, key: str) -> None:
        confirmed = self._confirmations.get(key)
        if confirmed is not None:
            confirmed.set()
        if key in self._unconfirmed:
            self._unconfirmed.discard(key)
            self.resync([key])
        if key in self._resync_pending:
            self._resync_pending.discard(key)
            if not self._resync_pending:
                gevent.spawn(self._recover)

    def _recover(self) -> None:
        """After a reconnection: deliver what each channel missed, or a Gap; Resync those without history."""
        recovering = self._recovering
        unrecoverable = [key for key in self.mailboxes if self.channel_name(key) not in recovering]
        if unrecoverable:
            self.resync(unrecoverable)
        deadline = time.monotonic() + RECOVERY_PATIENCE  # for the whole pass, not per channel
        for channel in list(recovering):
            self._recover_channel(channel, deadline)
            for key, items in recovering.pop(channel, ()):
                self.dispatch(key, items)
        self.recoveries += 1

    def _recover_channel(self, channel: str, deadline: float) -> None:
        position = self.positions.get(channel, ORIGIN)
        reading = self._read_history(channel, position, deadline)
        keys = [key for key in self.mailboxes if self.channel_name(key) == channel]
        if reading.gap:
            logger.warning("messages of %s after %s are no longer in its history: gap", channel, position)
            self.positions[channel] = reading.position
            self._put_gap(keys, Gap((channel,), reading.position))
            return
        # In id order; consecutive entries of one broker channel go out as one batch.
        run: list[ChannelMessage] = []
        run_key = None
        for entry in reading.entries:
            if entry.key != run_key and run:
                self._put_messages(self.mailboxes.get(run_key, set()), run)  # type: ignore[arg-type]
                run = []
            run_key = entry.key
            run.append(ChannelMessage.from_entry(channel, entry))
        if run:
            self._put_messages(self.mailboxes.get(run_key, set()), run)  # type: ignore[arg-type]
        if reading.entries:
            logger.warning("recovered %d messages of %s from its history", len(reading.entries), channel)
        self.positions[channel] = reading.position

    def _read_history(self, channel: str, position: str, deadline: float) -> Reading:
        """What *channel*'s history holds after *position*; a gap when it cannot be read by *deadline*."""
        try:
            return read_patiently(self.broker, channel, position, deadline, lambda: self._subscriber is None)
        except PublishError as error:
            logger.warning("cannot read the history of %s to recover it: %s", channel, error)
            return Reading(position=position, gap=True)

    def _put_gap(self, keys: list[str], gap: Gap) -> None:
        mailboxes = {mailbox for key in keys for mailbox in self.mailboxes.get(key, ())}
        self.gaps += len(mailboxes)
        for mailbox in mailboxes:
            mailbox.put_resync(gap)
