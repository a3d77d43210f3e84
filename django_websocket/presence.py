"""Presence: who is connected to a channel, with join and leave events.

A socket that subscribes with ``presence`` joins the channel as a *member* (a JSON
dict with ``conn``, its connection id, ``user`` and ``name``, plus what the view
adds) until it unsubscribes or its view returns. Joins and leaves are published to
the channel (payload ``p`` + ``{"ws": "join"|"leave", "channel", "member"}``) and
reach the sockets subscribed with presence.

With Redis, a channel's members are a sorted set of connection ids scored by their
expiry time, plus a hash of their member dicts. Each worker process refreshes its
own connections every ``WEBSOCKET_PRESENCE_TTL / 3`` seconds; the connections of a
worker that stopped (SIGKILL, lost host) expire after ``WEBSOCKET_PRESENCE_TTL`` and
are removed — with their ``leave`` published exactly once, by whichever process
sweeps first (every heartbeat, and every :func:`presence` call). Without Redis the
process's own registry is the whole truth.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
from typing import Any

import gevent

from . import conf
from .events import compact_json
from .exceptions import PublishError
from .publishing import PRESENCE, channel_key

logger = logging.getLogger("django_websocket")

PRESENCE_SUFFIX = "~presence"
MEMBERS_SUFFIX = "~members"

_counter = itertools.count(1)
_lock = threading.Lock()
#: This process's connections in presence: channel -> conn -> member dict.
_local: dict[str, dict[str, dict]] = {}
_heartbeat: gevent.Greenlet | None = None


def connection_id() -> str:
    """A new id for a connection, unique across hosts and processes: ``host:pid:n``."""
    return f"{socket.gethostname()}:{os.getpid()}:{next(_counter)}"


def member_for(request: Any, presence: Any, conn: str) -> dict:
    """The member dict a socket joins with: *presence* ``True`` (the request's user) or a dict with ``name``.

    Raises ``ValueError`` for a dict without a string ``name`` or one that is not JSON-able.
    """
    if presence is True:
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            member = {"user": user.pk, "name": user.get_username()}
        else:
            member = {"user": None, "name": "anonymous"}
    elif isinstance(presence, dict):
        if not isinstance(presence.get("name"), str):
            raise ValueError("presence={...} needs a 'name' string")
        member = {"user": None, **presence}
        json.dumps(member)
    else:
        raise ValueError(f"presence is True or a dict with a 'name', not {presence!r}")
    member["conn"] = conn
    return member


def join(channel: str, member: dict) -> None:
    """Add *member* (with its ``conn``) to *channel* and announce it; Redis faults are logged, not raised."""
    with _lock:
        _local.setdefault(channel, {})[member["conn"]] = member
    event = _event("join", channel, member)
    url = conf.redis_url()
    if url is None:
        _deliver(channel, event)
        return
    _start_heartbeat()
    try:
        _run(url, JOIN_SCRIPT, _keys(channel), [member["conn"], json.dumps(member), _ttl_ms(), event])
    except PublishError as error:
        logger.warning("presence: could not join %s (%s); the heartbeat retries", channel, error)


def leave(channel: str, conn: str) -> None:
    """Remove connection *conn* from *channel* and announce it (once)."""
    with _lock:
        members = _local.get(channel, {})
        member = members.pop(conn, None)
        if not members:
            _local.pop(channel, None)
    url = conf.redis_url()
    if url is None:
        if member is not None:
            _deliver(channel, _event("leave", channel, member))
        return
    try:
        _run(url, LEAVE_SCRIPT, _keys(channel), [conn, json.dumps(channel)])
    except PublishError as error:
        logger.warning("presence: could not leave %s (%s); it expires after the TTL", channel, error)


def connections(channel: str) -> list[dict]:
    """Every connection in *channel*: its member dict (with ``conn``), ordered by ``conn``.

    With Redis, expired connections are removed first (and their leaves announced).
    Raises ``PublishError`` when Redis does not answer.
    """
    url = conf.redis_url()
    if url is None:
        with _lock:
            members = list(_local.get(channel, {}).values())
    else:
        raw = _run(url, READ_SCRIPT, _keys(channel), [json.dumps(channel)])
        members = [json.loads(item) for item in raw if item is not None]
    return sorted(members, key=lambda member: member["conn"])


def presence(channel: str) -> list[dict]:
    """Who is connected to *channel*: ``[{"user", "name", "connections"}, ...]`` sorted by name.

    One entry per distinct (user, name) with its number of open connections. Callable
    from any Django code; raises ``PublishError`` when Redis does not answer.
    """
    counts: dict[tuple, int] = {}
    for member in connections(channel):
        key = (member.get("user"), member.get("name"))
        counts[key] = counts.get(key, 0) + 1
    members = [{"user": user, "name": name, "connections": n} for (user, name), n in counts.items()]
    return sorted(members, key=lambda member: (str(member["name"]), str(member["user"])))


def _event(kind: str, channel: str, member: dict) -> bytes:
    body = compact_json({"ws": kind, "channel": channel, "member": member})
    return PRESENCE + body.encode()


def _deliver(channel: str, event: bytes) -> None:
    from .hub import deliver_locally

    deliver_locally(channel_key(channel), event)


# Redis


def _keys(channel: str) -> list[str]:
    base = channel_key(channel)
    return [base + PRESENCE_SUFFIX, base + MEMBERS_SUFFIX, base]


def _ttl_ms() -> int:
    return int(float(conf.get("WEBSOCKET_PRESENCE_TTL")) * 1000)


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
READ_SCRIPT = (
    _NOW
    + _LEAVE
    + """
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do leave(conn, ARGV[1]) end
local conns = redis.call('ZRANGE', KEYS[1], 0, -1)
if #conns == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(conns))
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


def _run(url: str, source: str, keys: list[str], args: list[Any]) -> Any:
    from .history import _call, _script

    script = _script(url, source)
    return _call(url, lambda: script(keys=keys, args=args))


def _start_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is None or _heartbeat.dead:
        _heartbeat = gevent.spawn(_beat_forever)


def _beat_forever() -> None:
    """Refresh this process's connections and sweep expired ones, every TTL / 3, while it has any."""
    while True:
        gevent.sleep(float(conf.get("WEBSOCKET_PRESENCE_TTL")) / 3)
        with _lock:
            channels = {channel: dict(members) for channel, members in _local.items()}
        if not channels:
            return
        url = conf.redis_url()
        if url is None:
            return
        for channel, members in channels.items():
            try:
                heartbeat(url, channel, members)
            except PublishError as error:
                logger.warning("presence heartbeat for %s failed: %s", channel, error)
                continue
            with _lock:
                left = [conn for conn in members if conn not in _local.get(channel, {})]
            for conn in left:  # left while the heartbeat re-added it: leave again
                leave(channel, conn)


def heartbeat(url: str, channel: str, members: dict[str, dict]) -> None:
    """Refresh *members* of *channel* in Redis and sweep the expired ones."""
    args: list[Any] = [_ttl_ms()]
    for conn, member in members.items():
        args += [conn, json.dumps(member)]
    args.append(json.dumps(channel))
    _run(url, HEARTBEAT_SCRIPT, _keys(channel), args)
