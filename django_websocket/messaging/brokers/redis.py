"""The Redis broker: every process and host that shares one Redis server.

``publish`` is one Redis ``PUBLISH`` (or, for a channel with history, one Lua script that
appends to the channel's Stream and publishes, so stream order and delivery order agree);
each worker's hub reads every channel it serves over one subscriber connection
(:mod:`~django_websocket.messaging.redis_pubsub`). The history of channel ``room`` is the
Stream ``<prefix>room~history`` and a message's id its entry id (``XADD ... MAXLEN ~
size``, trimmed by age, expiring after the TTL).

Presence: a channel's members are a sorted set of connection ids scored by their expiry
time, plus a hash of their member dicts. Each process refreshes its own connections every
``presence_ttl / 3`` seconds; those of a worker that stopped (SIGKILL, lost host) expire
after ``presence_ttl`` and are removed, with their ``leave`` published exactly once by
whichever process sweeps first (every heartbeat, and every read of the members).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import gevent
import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from ...events import Data, compact_json
from ...exceptions import PublishError
from ..history import Entry, Reading
from ..options import Options
from ..redis_pubsub import RedisSubscriber
from ..wire import PRESENCE
from .base import ONCE_TTL, Broker

logger = logging.getLogger("django_websocket")

#: Connections per process for publishing and reading (the hub's subscriber has its own).
REDIS_CONNECTIONS = 16
HISTORY_SUFFIX = "~history"
ONCE_SUFFIX = "~once:"
#: Suffix of ``remember()``'s markers: ``<key(scope)>~seen:<token>``.
SEEN_SUFFIX = "~seen:"
PRESENCE_SUFFIX = "~presence"
MEMBERS_SUFFIX = "~members"

#: KEYS: stream, broker channel[, once marker]. ARGV: kind, data, size, ttl (0: none)[, marker ttl].
#: Returns {id, receivers}, or {'', -1} when the marker was set already (published before).
#: XADD and PUBLISH together: ids and delivery order agree.
PUBLISH_SCRIPT = """
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then return {'', -1} end
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

#: KEYS: broker channel, once marker. ARGV: payload, marker ttl. A PUBLISH the first time only.
PUBLISH_ONCE_SCRIPT = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return -1 end
return redis.call('PUBLISH', KEYS[1], ARGV[1])
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

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

#: KEYS: set, hash, channel. ARGV: conn, member, ttl ms, join event.
JOIN_SCRIPT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[3]))
redis.call('PUBLISH', KEYS[3], ARGV[4])
"""
)

_LEAVE = """
local function leave(conn, channel)
  if redis.call('ZREM', KEYS[1], conn) == 1 then
    local member = redis.call('HGET', KEYS[2], conn)
    redis.call('HDEL', KEYS[2], conn)
    if member then
      redis.call('PUBLISH', KEYS[3], 'p{"ws":"leave","channel":' .. channel .. ',"member":' .. member .. '}')
    end
  end
end
"""

#: KEYS: set, hash, channel. ARGV: conn, channel as JSON.
LEAVE_SCRIPT = _LEAVE + "leave(ARGV[1], ARGV[2])\n"

#: KEYS: set, hash, channel. ARGV: channel as JSON. Sweeps the expired, returns the live members.
MEMBERS_SCRIPT = (
    _NOW
    + _LEAVE
    + """
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do leave(conn, ARGV[1]) end
local conns = redis.call('ZRANGE', KEYS[1], 0, -1)
local members = {}
-- HMGET in chunks: unpack() of more than about 8,000 values overflows Lua's stack
for i = 1, #conns, 1000 do
  local chunk = {}
  for j = i, math.min(i + 999, #conns) do chunk[#chunk + 1] = conns[j] end
  for _, member in ipairs(redis.call('HMGET', KEYS[2], unpack(chunk))) do members[#members + 1] = member end
end
return members
"""
)

#: KEYS: set, hash, channel. ARGV: ttl ms, conn and member pairs, channel as JSON. Refreshes this
#: process's connections (re-adding, with a join, any that was swept while it stalled),
#: then sweeps the expired.
HEARTBEAT_SCRIPT = (
    _NOW
    + _LEAVE
    + """
local ttl = tonumber(ARGV[1])
local channel = ARGV[#ARGV]
for i = 2, #ARGV - 1, 2 do
  if redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    local member = ARGV[i + 1]
    redis.call('PUBLISH', KEYS[3], 'p{"ws":"join","channel":' .. channel .. ',"member":' .. member .. '}')
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do leave(conn, channel) end
"""
)


def safe_url(url: str) -> str:
    """*url* without its password, for messages and logs."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class RedisBroker(Broker):
    """The Redis at *url* (``redis://``, ``rediss://`` or ``unix://``), shared by every process."""

    @classmethod
    def validate_url(cls, url: str) -> None:
        """Raise ``ValueError`` saying what is wrong with *url* (without its password); connect to nothing."""
        params = parse_url(url)  # the scheme, the port and every option's value
        path = url.partition("?")[0].partition("://")[2].partition("/")[2]
        if "path" not in params and path and not path.isdigit():
            raise ValueError(
                f"the path of a redis:// URL is a database number, not /{path} "
                "(a Sentinel service name goes in a redis+sentinel:// URL)"
            )

    def __init__(self, url: str, options: Options) -> None:
        super().__init__(options)
        self.url = url
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: This process's connections in presence (channel -> conn -> member): what the heartbeat refreshes.
        self._members: dict[str, dict[str, dict]] = {}
        self._heartbeat: gevent.Greenlet | None = None

    #: What the client raises when the server does not answer (or refuses): a ``PublishError``.
    ERRORS: tuple[type[Exception], ...] = (redis.RedisError,)

    @property
    def client(self) -> Any:
        """The redis-py client, made at first use (no connection at start-up or import)."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def make_client(self) -> Any:
        """A redis-py client with explicit timeouts and no retries (subclasses find the server otherwise)."""
        timeout = self.options.timeout
        # At most REDIS_CONNECTIONS: a thousand sockets resuming at once (after a deploy)
        # queue for a connection instead of opening a thousand.
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # A publish either reaches Redis within the timeout or fails loudly.
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            health_check_interval=0,
        )
        return redis.Redis(connection_pool=pool)

    def describe(self) -> str:
        return f"Redis ({safe_url(self.url)})"

    def subscriber(self) -> RedisSubscriber:
        return RedisSubscriber(self.url, self.options.timeout)

    def probe(self) -> str | None:
        """``PING`` Redis once: ``None``, or ``PublishError`` when it does not answer."""
        self._call(self.client.ping, "reach")
        return None

    def disconnect(self) -> None:
        """Drop the pooled connections (they reconnect when next used)."""
        self.client.connection_pool.disconnect()

    def publish_payload(self, key: str, payload: bytes) -> int:
        """``PUBLISH`` *payload* on *key*; return how many subscriber connections received it."""
        return self._call(lambda: self.client.publish(key, payload), "publish to")

    def adapt(self, source: str) -> str:
        """A Lua script as this deployment runs it (a cluster publishes to shard channels)."""
        return source

    # Publish and history

    def publish(
        self, channel: str, key: str, kind: bytes, data: Data, once: str | None = None
    ) -> tuple[str, int]:
        raw = data.encode() if isinstance(data, str) else data
        rule = self.options.policy(channel)
        marker = [] if once is None else [self.key(channel) + ONCE_SUFFIX + once]
        if not rule.enabled and not marker:
            return "", self.publish_payload(key, kind + raw)
        if not rule.enabled:
            once_script = self._script(PUBLISH_ONCE_SCRIPT)
            keys, args = [key, *marker], [kind + raw, ONCE_TTL]
            return "", int(self._call(lambda: once_script(keys=keys, args=args), "publish to"))
        ttl = 0 if rule.ttl is None else rule.ttl
        script = self._script(PUBLISH_SCRIPT)
        keys = [self.stream_key(channel), key, *marker]
        args = [kind, raw, rule.size, ttl, *([ONCE_TTL] if marker else [])]
        message_id, receivers = self._call(lambda: script(keys=keys, args=args), "publish to")
        return _text(message_id), int(receivers)

    def remember(self, scope: str, token: str, ttl: int) -> bool:
        marker = self.key(scope) + SEEN_SUFFIX + token
        return bool(self._call(lambda: self.client.set(marker, b"1", nx=True, ex=ttl), "write to"))

    def forget(self, scope: str, token: str) -> None:
        marker = self.key(scope) + SEEN_SUFFIX + token
        self._call(lambda: self.client.delete(marker), "write to")

    def read_history(self, channel: str, since: str | None) -> Reading:
        script = self._script(READ_SCRIPT)
        keys = [self.stream_key(channel)]
        gap, position, raw_entries = self._call(lambda: script(keys=keys, args=[since or ""]))
        return Reading([_entry(raw) for raw in raw_entries], position.decode(), bool(gap))

    def entries(self, channel: str) -> list[Entry]:
        raw = self._call(lambda: self.client.xrange(self.stream_key(channel), min="-", max="+"))
        return [_entry(item) for item in raw]

    def stream_key(self, channel: str) -> str:
        """The Redis key of *channel*'s history Stream."""
        return self.key(channel) + HISTORY_SUFFIX

    # Presence

    def join(self, channel: str, member: dict) -> None:
        with self._lock:
            self._members.setdefault(channel, {})[member["conn"]] = member
        self._start_heartbeat()
        event = PRESENCE + compact_json({"ws": "join", "channel": channel, "member": member}).encode()
        try:
            self._run(JOIN_SCRIPT, channel, [member["conn"], json.dumps(member), self._ttl_ms(), event])
        except PublishError as error:
            logger.warning("presence: could not join %s (%s); the heartbeat retries", channel, error)

    def leave(self, channel: str, conn: str) -> None:
        with self._lock:
            members = self._members.get(channel, {})
            members.pop(conn, None)
            if not members:
                self._members.pop(channel, None)
        try:
            self._run(LEAVE_SCRIPT, channel, [conn, json.dumps(channel)])
        except PublishError as error:
            logger.warning("presence: could not leave %s (%s); it expires after the TTL", channel, error)

    def members(self, channel: str) -> list[dict]:
        raw = self._run(MEMBERS_SCRIPT, channel, [json.dumps(channel)])
        return [json.loads(item) for item in raw if item is not None]

    def heartbeat(self, channel: str, members: dict[str, dict]) -> None:
        """Refresh *members* of *channel* in Redis and sweep the expired ones."""
        args: list[Any] = [self._ttl_ms()]
        for conn, member in members.items():
            args += [conn, json.dumps(member)]
        args.append(json.dumps(channel))
        self._run(HEARTBEAT_SCRIPT, channel, args)

    def presence_keys(self, channel: str) -> list[str]:
        """The Redis keys of *channel*'s presence: the sorted set, the hash, the broker channel."""
        base = self.key(channel)
        return [base + PRESENCE_SUFFIX, base + MEMBERS_SUFFIX, base]

    def _ttl_ms(self) -> int:
        return int(self.options.presence_ttl * 1000)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.dead:
            self._heartbeat = gevent.spawn(self._beat_forever)

    def _beat_forever(self) -> None:
        """Refresh this process's connections and sweep expired ones, every TTL / 3, while it has any."""
        while True:
            gevent.sleep(self.options.presence_ttl / 3)
            with self._lock:
                channels = {channel: dict(members) for channel, members in self._members.items()}
            if not channels:
                return
            for channel, members in channels.items():
                try:
                    self.heartbeat(channel, members)
                except PublishError as error:
                    logger.warning("presence heartbeat for %s failed: %s", channel, error)
                    continue
                with self._lock:
                    left = [conn for conn in members if conn not in self._members.get(channel, {})]
                for conn in left:  # left while the heartbeat re-added it: leave again
                    self.leave(channel, conn)

    # Calls

    def _run(self, source: str, channel: str, args: list[Any]) -> Any:
        script = self._script(source)
        return self._call(lambda: script(keys=self.presence_keys(channel), args=args))

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(self.adapt(source))
        return script

    def _call(self, call: Callable[[], Any], doing: str = "read from") -> Any:
        try:
            return call()
        except self.ERRORS as error:
            raise PublishError(f"could not {doing} {self.describe()}: {error}") from error


def _entry(raw: Any) -> Entry:
    message_id, fields = raw
    if isinstance(fields, list):  # a script returns the flat array
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return Entry(_text(message_id), fields[b"k"].decode(), fields[b"c"], fields[b"d"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
