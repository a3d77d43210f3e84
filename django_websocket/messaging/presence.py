"""Presence: who is connected to a channel, as member dicts, and their join and leave events.

A socket that subscribes with ``presence`` joins the channel as a *member* (a JSON dict
with ``conn``, its connection id, ``user`` and ``name``, plus what the view adds) until it
unsubscribes or its view returns. Joins and leaves reach the channel's members as
:class:`~django_websocket.events.Join` and :class:`~django_websocket.events.Leave` events
(``{"ws": "join"|"leave", "channel", "member"}`` on the wire). Where members are kept and
how a stopped worker's members expire is the broker's business
(:meth:`~django_websocket.messaging.brokers.base.Broker.join`).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from typing import Any

from ..events import Join, Leave, PresenceChange, compact_json

_counter = itertools.count(1)


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


def change(kind: str, channel: str, member: dict) -> PresenceChange:
    """The :class:`Join` (*kind* ``"join"``) or :class:`Leave` event of *member* in *channel*."""
    raw = compact_json({"ws": kind, "channel": channel, "member": member}).encode()
    return (Join if kind == "join" else Leave)(channel, member, raw)


def summarize(connections: list[dict]) -> list[dict]:
    """``[{"user", "name", "connections"}, ...]`` sorted by name: one entry per distinct (user, name)."""
    counts: dict[tuple, int] = {}
    for member in connections:
        key = (member.get("user"), member.get("name"))
        counts[key] = counts.get(key, 0) + 1
    members = [{"user": user, "name": name, "connections": n} for (user, name), n in counts.items()]
    return sorted(members, key=lambda member: (str(member["name"]), str(member["user"])))
