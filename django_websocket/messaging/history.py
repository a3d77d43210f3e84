"""Message ids, stored entries, and what a read after an id finds; the in-memory history.

Every message published to a channel with history gets an id ``"<ms>-<seq>"``, strictly
increasing per channel. With Redis the history is a Stream and the id its entry id
(:mod:`~django_websocket.messaging.brokers.redis`); the in-process broker keeps a
:class:`LocalHistory` that follows the same rules. Entries remember their broker channel
name (audience included), so a replay gives a socket only what it may see.

A read answers the one question resume asks, *what came after id X?*, atomically: the
entries, the channel's position (its newest id), and whether a gap makes the answer
incomplete (X was trimmed or expired, or the history was lost).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .options import Policy

#: The position of a channel that has never had a message.
ORIGIN = "0-0"
ID_RE = re.compile(r"\d{1,20}-\d{1,20}")


def parse_id(message_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a tuple that orders like the ids; ``ValueError`` if malformed."""
    if not isinstance(message_id, str) or not ID_RE.fullmatch(message_id):
        raise ValueError(f"not a message id: {message_id!r}")
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq)


def is_id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class Entry:
    """One stored message: its *id*, broker channel name *key*, payload *kind* (t/j/b) and *data*."""

    id: str
    key: str
    kind: bytes
    data: bytes


@dataclass
class Reading:
    """What a read after an id found.

    *entries*: the messages after it, oldest first (empty with a gap). *position*: the
    channel's newest id when read (``ORIGIN`` if none). *gap*: messages after the id
    may be missing (it was trimmed, expired or lost with the history).
    """

    entries: list[Entry] = field(default_factory=list)
    position: str = ORIGIN
    gap: bool = False


class LocalHistory:
    """Rings of entries per channel, with the Redis stream's rules; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings: dict[str, Ring] = {}

    def append(self, channel: str, key: str, kind: bytes, data: bytes, rule: Policy) -> str:
        """Store a message of *channel* and return its new id."""
        with self._lock:
            ring = self._rings.get(channel)
            if ring is None:
                ring = self._rings[channel] = Ring()
            return ring.append(key, kind, data, rule)

    def read(self, channel: str, since: str | None) -> Reading:
        with self._lock:
            ring = self._rings.get(channel)
            if ring is None:
                return Reading(gap=since not in (None, ORIGIN))
            ring.expire()
            return ring.read(since)

    def entries(self, channel: str) -> list[Entry]:
        with self._lock:
            ring = self._rings.get(channel)
            if ring is None:
                return []
            ring.expire()
            return list(ring.entries)


class Ring:
    """One channel's entries, trimmed by size and age; remembers the newest id deleted."""

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.last = (0, 0)
        self.max_deleted = (0, 0)
        self.ttl: float | None = None

    def append(self, key: str, kind: bytes, data: bytes, rule: Policy) -> str:
        ms = int(time.time() * 1000)
        self.last = (ms, 0) if ms > self.last[0] else (self.last[0], self.last[1] + 1)
        message_id = f"{self.last[0]}-{self.last[1]}"
        self.entries.append(Entry(message_id, key, kind, data))
        self.ttl = rule.ttl
        while len(self.entries) > rule.size:
            self._delete_oldest()
        self.expire()
        return message_id

    def expire(self) -> None:
        if self.ttl is None:
            return
        oldest = (time.time() - self.ttl) * 1000
        while self.entries and parse_id(self.entries[0].id)[0] < oldest:
            self._delete_oldest()

    def _delete_oldest(self) -> None:
        self.max_deleted = parse_id(self.entries.popleft().id)

    def read(self, since: str | None) -> Reading:
        position = f"{self.last[0]}-{self.last[1]}"
        if since is None:
            return Reading(position=position)
        since_key = parse_id(since)
        present = (
            since_key == self.last
            or (since_key == (0, 0) and self.max_deleted == (0, 0))
            or any(entry.id == since for entry in self.entries)
        )
        if not present:
            return Reading(position=position, gap=True)
        return Reading([entry for entry in self.entries if parse_id(entry.id) > since_key], position)
