"""The in-process broker: one process, no server; the default without ``WEBSOCKET_REDIS_URL``.

``publish()`` hands message objects straight to every hub of the process (hubs of other
threads, as in a live-server test, through their own event loop), with no encoding in
between. History is a :class:`~django_websocket.messaging.history.LocalHistory`, presence a
dict: the process's own registry is the whole truth.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import gevent

from ...events import ChannelMessage, Data, PresenceChange
from ..history import Entry, LocalHistory, Reading
from ..options import Options
from ..presence import change
from .base import ONCE_TTL, REMEMBER_LIMIT, Broker

#: ``publish(once=token)`` remembers ``once:<token>`` under the channel, as ``remember()`` does any
#: marker: one bounded store for both, so durable publishing cannot grow it without limit.
ONCE_PREFIX = "once:"


class LocalBroker(Broker):
    """Publish/subscribe, history and presence inside this process."""

    remote = False

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.history = LocalHistory()
        self.hubs: list[Any] = []
        self._lock = threading.Lock()
        #: channel -> conn -> member dict.
        self._members: dict[str, dict[str, dict]] = {}
        #: ``remember()`` markers, (scope, token) -> expiry, oldest first; at most REMEMBER_LIMIT.
        self._markers: OrderedDict[tuple[str, str], float] = OrderedDict()

    def attach(self, hub: Any) -> None:
        with self._lock:
            self.hubs.append(hub)

    def publish(
        self, channel: str, key: str, kind: bytes, data: Data, once: str | None = None
    ) -> tuple[str, int]:
        if once is not None and not self.remember(channel, ONCE_PREFIX + once, ONCE_TTL):
            return "", -1
        rule = self.options.policy(channel)
        message_id = ""
        if rule.enabled:
            stored = data.encode() if isinstance(data, str) else data
            message_id = self.history.append(channel, key, kind, stored, rule)
        message = ChannelMessage(channel, data, message_id or None, kind)
        return message_id, self.deliver(key, message)

    def remember(self, scope: str, token: str, ttl: int) -> bool:
        """In a bounded dict: past ``REMEMBER_LIMIT`` markers the oldest are forgotten early."""
        self.key(scope)  # the same names as everywhere
        now = time.monotonic()
        marker = (scope, token)
        with self._lock:
            markers = self._markers
            expiry = markers.get(marker)
            if expiry is not None and expiry >= now:
                return False
            while markers and (len(markers) >= REMEMBER_LIMIT or next(iter(markers.values())) < now):
                markers.popitem(last=False)  # expired (mixed ttls: later ones are checked on lookup)
            markers[marker] = now + ttl
            markers.move_to_end(marker)
            return True

    def forget(self, scope: str, token: str) -> None:
        with self._lock:
            self._markers.pop((scope, token), None)

    def deliver(self, key: str, item: ChannelMessage | PresenceChange) -> int:
        """Hand *item* to every hub of the process; return the sockets subscribed to *key*."""
        current = gevent.get_hub()
        delivered = 0
        for hub in list(self.hubs):
            if hub.gevent_hub is current:
                delivered += hub.dispatch(key, [item])
            else:
                delivered += len(hub.mailboxes.get(key, ()))
                hub.gevent_hub.loop.run_callback_threadsafe(hub.dispatch, key, [item])
        return delivered

    def read_history(self, channel: str, since: str | None) -> Reading:
        return self.history.read(channel, since)

    def entries(self, channel: str) -> list[Entry]:
        return self.history.entries(channel)

    def join(self, channel: str, member: dict) -> None:
        with self._lock:
            self._members.setdefault(channel, {})[member["conn"]] = member
        self.deliver(self.key(channel), change("join", channel, member))

    def leave(self, channel: str, conn: str) -> None:
        with self._lock:
            members = self._members.get(channel, {})
            member = members.pop(conn, None)
            if not members:
                self._members.pop(channel, None)
        if member is not None:
            self.deliver(self.key(channel), change("leave", channel, member))

    def members(self, channel: str) -> list[dict]:
        with self._lock:
            return list(self._members.get(channel, {}).values())

    def describe(self) -> str:
        return "in-process broker"
