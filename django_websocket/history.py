"""Message ids and per-channel history: what resume and hub recovery replay.

Every message published to a channel with history gets an id ``"<ms>-<seq>"``,
strictly increasing per channel. With Redis the history of channel ``room`` is the
Stream ``<prefix>room~history`` and the id is its entry id: one Lua script appends
the entry (``XADD ... MAXLEN ~ size``, trimmed by age, expiring after the TTL) and
publishes it, so stream order and live delivery order agree. Without Redis an
in-memory ring per channel follows the same rules. Entries remember their broker
channel name (audience included), so a replay gives a socket only what it may see.

:func:`read` is the one question resume asks: *what came after id X?* It answers
atomically with the entries, the channel's position (its newest id) and whether a
gap makes the answer incomplete: X was trimmed or expired, or the history was lost.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from . import conf

#: The position of a channel that has never had a message.
ORIGIN = "0-0"
ID_RE = re.compile(r"\d{1,20}-\d{1,20}")
HISTORY_SUFFIX = "~history"


def parse_id(message_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a tuple that orders like the ids; ``ValueError`` if malformed."""
    if not isinstance(message_id, str) or not ID_RE.fullmatch(message_id):
        raise ValueError(f"not a message id: {message_id!r}")
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq)


def is_id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class Policy:
    """How much history a channel keeps: *size* messages (0: none), for *ttl* seconds (None: forever)."""

    size: int
    ttl: float | None

    @property
    def enabled(self) -> bool:
        return self.size > 0


def policy(channel: str) -> Policy:
    """*channel*'s history policy: its first ``WEBSOCKET_HISTORY_CHANNELS`` match, else the defaults."""
    size = conf.get("WEBSOCKET_HISTORY_SIZE")
    ttl = conf.get("WEBSOCKET_HISTORY_TTL")
    for pattern, override in (conf.get("WEBSOCKET_HISTORY_CHANNELS") or {}).items():
        if fnmatchcase(channel, pattern):
            size = override.get("size", size)
            ttl = override.get("ttl", ttl)
            break
    return Policy(int(size), None if ttl is None else float(ttl))


@dataclass(frozen=True)
class Entry:
    """One stored message: its *id*, broker channel name *key*, payload *kind* (t/j/b) and *data*."""

    id: str
    key: str
    kind: bytes
    data: bytes


@dataclass
class Reading:
    """What :func:`read` found after an id.

    *entries*: the messages after it, oldest first (empty with a gap). *position*: the
    channel's newest id when read (``ORIGIN`` if none). *gap*: messages after the id
    may be missing (it was trimmed, expired or lost with the history).
    """

    entries: list[Entry] = field(default_factory=list)
    position: str = ORIGIN
    gap: bool = False


def stream_key(channel: str) -> str:
    return f"{conf.get('WEBSOCKET_CHANNEL_PREFIX')}{channel}{HISTORY_SUFFIX}"


def read(channel: str, since: str | None) -> Reading:
    """What was published to *channel* after id *since*; ``since=None``: the position only.

    A malformed *since* is a gap (it cannot be in the history). Raises ``PublishError``
    when Redis does not answer within ``WEBSOCKET_REDIS_TIMEOUT``.
    """
    if since is not None and not is_id(since):
        return Reading(position=last_id(channel), gap=True)
    url = conf.redis_url()
    if url is None:
        return local_store().read(channel, since)
    return _redis_read(url, channel, since)


def last_id(channel: str) -> str:
    """The newest id of *channel* (``"0-0"`` when it has none): a client's starting position.

    A page that renders a channel's state reads this *before* the state, then hands it
    to its socket as ``since``: what is published in between is replayed, not lost.
    """
    return read(channel, None).position


def history(channel: str, since: str | None = None, limit: int | None = None) -> list[Any]:
    """The messages of *channel* kept in its history, oldest first, as ``ChannelMessage`` objects.

    *since*: only those after that id (``ValueError`` if it is malformed). *limit*: at
    most that many, the newest. All audiences are included: this is for server code;
    a client's replay goes through :func:`read`, which also tells whether anything is missing.
    """
    from .events import ChannelMessage

    low = "-" if since is None else f"({'-'.join(map(str, parse_id(since)))}"
    url = conf.redis_url()
    if url is None:
        entries = local_store().entries(channel)
        if since is not None:
            entries = [entry for entry in entries if parse_id(entry.id) > parse_id(since)]
    else:
        client = _client(url)
        raw = _call(url, lambda: client.xrange(stream_key(channel), min=low, max="+"))
        entries = [_entry(item) for item in raw]
    if limit is not None:
        entries = entries[-limit:] if limit > 0 else []
    return [ChannelMessage.from_entry(channel, entry) for entry in entries]


# Redis

#: KEYS: stream, broker channel. ARGV: kind, data, size, ttl (0: none).
#: Returns {id, receivers}. XADD and PUBLISH together: ids and delivery order agree.
PUBLISH_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'k', KEYS[2], 'c', ARGV[1], 'd', ARGV[2])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - ttl * 1000
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', oldest))
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl))
end
local receivers = redis.call('PUBLISH', KEYS[2], string.upper(ARGV[1]) .. id .. ' ' .. ARGV[2])
return {id, receivers}
"""

#: KEYS: stream. ARGV: since ('' for the position only).
#: Returns {gap (0/1), position, entries}. No gap iff nothing after *since* was deleted:
#: since is the newest id, or still stored, or the origin of a stream never trimmed
#: (``entries-added`` equals ``length``: Redis >= 7.0).
READ_SCRIPT = """
local since = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  if since == '' or since == '0-0' then return {0, '0-0', {}} end
  return {1, '0-0', {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, added, length = '0-0', -1, 0
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'entries-added' then added = info[i + 1]
  elseif info[i] == 'length' then length = info[i + 1] end
end
if since == '' then return {0, last, {}} end
local present = since == last
if not present then
  if since == '0-0' then present = added == length
  else present = #redis.call('XRANGE', KEYS[1], since, since) > 0 end
end
if not present then return {1, last, {}} end
return {0, last, redis.call('XRANGE', KEYS[1], '(' .. since, '+')}
"""

_scripts: dict[tuple[str, str], Any] = {}


def publish_to_redis(
    url: str, channel: str, key: str, kind: bytes, data: bytes, rule: Policy
) -> tuple[str, int]:
    """Append to *channel*'s stream and publish on *key*, atomically; return ``(id, receivers)``."""
    script = _script(url, PUBLISH_SCRIPT)
    ttl = 0 if rule.ttl is None else rule.ttl
    message_id, receivers = _call(
        url, lambda: script(keys=[stream_key(channel), key], args=[kind, data, rule.size, ttl]), "publish to"
    )
    return message_id.decode(), int(receivers)


def _redis_read(url: str, channel: str, since: str | None) -> Reading:
    script = _script(url, READ_SCRIPT)
    gap, position, raw_entries = _call(url, lambda: script(keys=[stream_key(channel)], args=[since or ""]))
    return Reading([_entry(raw) for raw in raw_entries], position.decode(), bool(gap))


def _entry(raw: Any) -> Entry:
    message_id, fields = raw
    if isinstance(fields, list):  # a script returns the flat array
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return Entry(_text(message_id), fields[b"k"].decode(), fields[b"c"], fields[b"d"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _client(url: str) -> Any:
    from .publishing import _redis_client

    return _redis_client(url)


def _script(url: str, source: str) -> Any:
    script = _scripts.get((url, source))
    if script is None:
        script = _scripts[(url, source)] = _client(url).register_script(source)
    return script


def _call(url: str, call: Any, doing: str = "read from") -> Any:
    import redis

    from .exceptions import PublishError
    from .publishing import _safe_url

    try:
        return call()
    except redis.RedisError as error:
        raise PublishError(f"could not {doing} Redis ({_safe_url(url)}): {error}") from error


# The in-process broker's history


class LocalStore:
    """Rings of entries per channel, with the Redis stream's rules; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings: dict[str, _Ring] = {}

    def append(self, channel: str, key: str, kind: bytes, data: bytes, rule: Policy) -> str:
        with self._lock:
            ring = self._rings.get(channel)
            if ring is None:
                ring = self._rings[channel] = _Ring()
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


class _Ring:
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


_local_store = LocalStore()


def local_store() -> LocalStore:
    """The in-process broker's history (one per process)."""
    return _local_store
