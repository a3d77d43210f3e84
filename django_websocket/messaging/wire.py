"""The payload format on the broker, and the audiences in broker channel names.

A payload is one type byte, then the data: ``t`` text (a ``str``), ``j`` JSON text (a
JSON-able object), ``b`` binary. Upper case (``T``, ``J``, ``B``) means the message has an
id: ``<type><id> <data>``. ``p`` is a presence change (JSON, see
:mod:`django_websocket.messaging.presence`). Channel ``room`` is broker channel
``<prefix>room``; an audience appends ``@user:<pk>``, ``@group:<name>`` or
``@session:<key>``: a socket subscribed to ``room`` listens on all of the names that match
its request. Only brokers that carry bytes (Redis) use payloads; the in-process broker
hands message objects to the hub.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .options import AUDIENCE_SEPARATOR

TEXT = b"t"
JSON = b"j"
BINARY = b"b"
PRESENCE = b"p"

#: "No audience given" (so that an explicit ``user=None`` is an error, not a broadcast).
EVERYONE: Any = object()


def prepare(message: Any) -> tuple[bytes, str | bytes]:
    """``(type byte, data)`` of *message*: ``t`` + the text, ``j`` + JSON text, or ``b`` + bytes.

    Text stays a ``str``: the in-process broker hands it on as it is; only a broker that
    carries bytes encodes it. Raises ``TypeError`` for what ``DjangoJSONEncoder`` cannot encode.
    """
    if isinstance(message, str):
        return TEXT, message
    if isinstance(message, bytes | bytearray | memoryview):
        return BINARY, bytes(message)
    return JSON, dumps(message)


def encode_message(message: Any) -> tuple[bytes, bytes]:
    """``(type byte, data)`` of *message* with the data as bytes (UTF-8 for text and JSON)."""
    kind, data = prepare(message)
    return kind, data.encode() if isinstance(data, str) else data


def dumps(obj: Any) -> str:
    """*obj* as compact JSON text with Django's encoder (dates, decimals, UUIDs)."""
    return json.dumps(obj, cls=DjangoJSONEncoder, separators=(",", ":"))


def encode_payload(message: Any) -> bytes:
    """The wire form of *message* without an id."""
    kind, data = encode_message(message)
    return kind + data


def with_id(kind: bytes, message_id: str, data: bytes) -> bytes:
    """The wire form of a message with an id (what the publish script sends with Redis)."""
    return kind.upper() + message_id.encode() + b" " + data


def split_payload(payload: bytes) -> tuple[bytes, str | None, bytes]:
    """``(type byte in lower case, id or None, data)`` of a message payload."""
    kind = payload[:1]
    if kind.isupper():
        space = payload.index(b" ")
        return kind.lower(), payload[1:space].decode(), payload[space + 1 :]
    return kind, None, payload[1:]


def decode_data(kind: bytes, data: bytes) -> str | bytes:
    """The message *data* of type *kind* carries: ``bytes`` for binary, else ``str``."""
    return data if kind == BINARY else data.decode("utf-8", "replace")


def decode_payload(payload: bytes) -> str | bytes:
    """The message a (message) payload carries: ``str`` for text, ``bytes`` for binary."""
    kind, _, data = split_payload(payload)
    return decode_data(kind, data)


def audience(*, user: Any = EVERYONE, group: Any = EVERYONE, session: Any = EVERYONE) -> str:
    """The audience suffix for at most one of *user*, *group*, *session* ("" for everyone).

    Raises ``ValueError`` for two audiences, or for one given as ``None`` or empty.
    """
    candidates = (("user", user), ("group", group), ("session", session))
    given = [(kind, value) for kind, value in candidates if value is not EVERYONE]
    if len(given) > 1:
        raise ValueError("publish() takes at most one audience: user, group or session")
    if not given:
        return ""
    kind, value = given[0]
    if kind == "user":
        value = getattr(value, "pk", value)
    if value is None or value == "":
        raise ValueError(f"empty {kind} audience: refusing to broadcast a message meant for one {kind}")
    return f"{AUDIENCE_SEPARATOR}{kind}:{value}"


def audience_suffixes(request: Any) -> list[str]:
    """Every audience suffix a socket opened by *request* listens on (besides everyone's)."""
    suffixes = []
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        suffixes.append(audience(user=user))
        groups = getattr(user, "groups", None)
        if groups is not None:
            suffixes += [audience(group=name) for name in groups.values_list("name", flat=True)]
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if session_key:
        suffixes.append(audience(session=session_key))
    return suffixes
