"""The chat demo's rules, shared by its websocket view and its HTTP views.

A room ``<name>`` is channel ``chat:<name>``. Everything published there is a JSON
object with a ``type``; the room page renders ``"message"`` and ``"announcement"``:

- ``{"type": "message", "id", "handle", "message", "color", "timestamp"}`` — stored;
- ``{"type": "announcement", "message", "timestamp"}`` — not stored;

and the websocket view sends its own client ``{"type": "error", "error"}`` (bad input)
and ``{"type": "resync"}`` (messages were lost that cannot be replayed: reload
``messages.json``). The hub forwards the channel in the frames of ``docs/topics/history.md``
(``{"ws": "message", "id", "data": <one of the objects above>}``, ``gap``, presence),
with which the page resumes where it left off.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from django_websocket import publish
from django_websocket.publishing import PublishedId

from .models import HANDLE_MAX_LENGTH, MESSAGE_MAX_LENGTH, Message, Room

COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")


class InvalidMessage(ValueError):
    """What the client sent is not a chat message; ``str(error)`` is safe to send back."""


def channel(room_name: str) -> str:
    """The channel of room *room_name*."""
    return f"chat:{room_name}"


def parse_message(data: str | bytes) -> dict[str, str]:
    """Validate a client's message: JSON ``{"handle", "message", "color"}``.

    Returns the three fields (``message`` as sent; ``handle`` stripped); raises
    :class:`InvalidMessage` naming the first problem.
    """
    if not isinstance(data, str):
        raise InvalidMessage("send JSON text, not binary")
    try:
        obj = json.loads(data)
    except ValueError:
        raise InvalidMessage("not JSON") from None
    if not isinstance(obj, dict):
        raise InvalidMessage("send a JSON object")
    fields = {}
    for name in ("handle", "message", "color"):
        if not isinstance(obj.get(name), str):
            raise InvalidMessage(f"{name!r} must be a string")
        fields[name] = obj[name]
    fields["handle"] = parse_handle(fields["handle"])
    _check_length("message", fields["message"], MESSAGE_MAX_LENGTH)
    if not COLOR_RE.fullmatch(fields["color"]):
        raise InvalidMessage("'color' must look like #rrggbb")
    return fields


def parse_handle(handle: str) -> str:
    """*handle* stripped; raises :class:`InvalidMessage` unless it is 1 to 50 characters then."""
    handle = handle.strip()
    _check_length("handle", handle, HANDLE_MAX_LENGTH)
    return handle


def _check_length(name: str, value: str, maximum: int) -> None:
    if not 1 <= len(value) <= maximum:
        raise InvalidMessage(f"{name!r} must be 1 to {maximum} characters")


def post_message(room: Room, handle: str, message: str, color: str, client_id: str | None = None) -> Message:
    """Store a (validated) message and, with it, publish it to the room; return it.

    ``durable=True``: the message goes to the outbox in the same transaction as its row, so
    the room hears of it only once the row is committed (a page that reloads
    ``messages.json`` on what it hears always finds it; a rolled-back message is never
    announced), and exactly once even when the broker is away: then it is published as
    soon as the broker is back (``django_websocket.outbox``).

    *client_id*: the page's id of an acknowledged message. Stored in the row under a unique
    constraint, so posting the same id again (a resend whose ack was lost, even on another
    worker at the same moment) stores and publishes nothing and returns the row stored the
    first time: the mark and the effect are one transaction, exactly once with no window.
    """
    if client_id is not None:
        existing = Message.objects.filter(client_id=client_id).first()
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            stored = Message.objects.create(
                room=room, handle=handle, message=message, color=color, client_id=client_id
            )
            publish(channel(room.name), stored.as_event(), durable=True)
    except IntegrityError:
        if client_id is None:
            raise
        return Message.objects.get(client_id=client_id)  # a concurrent resend stored it first
    return stored


def announce(room_name: str, message: str) -> PublishedId:
    """Publish an announcement (not stored) to the room; return ``publish()``'s id.

    The id (``""`` when the channel keeps no history) has ``.receivers``: how many got it.
    """
    event: dict[str, Any] = {
        "type": "announcement",
        "message": message,
        "timestamp": timezone.now().isoformat(),
    }
    return publish(channel(room_name), event)
