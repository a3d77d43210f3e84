"""Acknowledged client messages: at-least-once from the client, exactly-once processing per id.

The wire protocol, in the style of the resume protocol (``docs/topics/history.md``),
JSON text frames whose first key is ``"ws"``:

- client → server ``{"ws": "send", "id": "<id>", "data": "<the message text>"}``: a message
  the client keeps in its outbox and sends again, with the same id, after every
  reconnection until it is answered. Ids are unique per client (``websocket.js``: a random
  UUID per page and a counter), so they never collide across tabs or users.
- server → client ``{"ws": "ack", "id"}``: processed (or processed before: a resend whose
  ack was lost is acknowledged again, not processed again); the client forgets it.
- server → client ``{"ws": "nack", "id", "error"}``: refused for good (invalid); the client
  forgets it and does not resend.

``websocket.events()`` unwraps a send frame into a ``ClientMessage`` whose ``data`` is the
message as if sent alone and whose ``id`` is the client's id (``None`` for plain messages).
``receive()`` and ``for message in websocket`` do not unwrap: acknowledged messages are
for views that read ``events()``.

Why resends happen only on reconnection, with no timer: on one TCP connection a frame is
delivered or the connection fails. A message unanswered on a live connection is being
processed, or its view failed, which closes the connection (1011): the client reconnects
and resends. At-least-once delivery plus deduplication by id is exactly-once processing,
provided the "seen" mark and the effect cannot part ways; :func:`acknowledging` and the
chat demo (a unique column) are the two ways documented in ``docs/topics/channels.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .events import ClientMessage, Data, compact_json
from .exceptions import PublishError, WebSocketError

logger = logging.getLogger("django_websocket")

#: Seconds a processed id is remembered by :func:`acknowledging`: longer than a message may
#: wait in a client's outbox (a page offline for a day resends after that and is processed again).
ACK_TTL = 86400
#: The default scope of :func:`acknowledging`'s markers (a channel-like name: see ``Broker.key``).
ACK_SCOPE = "acks"
#: Longest id accepted: anything longer is not a send frame but a plain message.
MAX_ID_LENGTH = 128
#: How a send frame starts (``JSON.stringify`` and ``json.dumps`` both put the first key there).
_SEND_START = '{"ws"'


class Refused(WebSocketError):
    """Raised inside :func:`acknowledging` to refuse the message: the client gets a nack, ``str(error)``."""


def client_message(data: Data) -> ClientMessage:
    """The ``ClientMessage`` of a client frame: a send frame unwrapped (with its id), else as it came.

    A cheap prefix test first: plain messages pay one ``startswith``.
    """
    if not isinstance(data, str) or not data.startswith(_SEND_START):
        return ClientMessage(data)
    try:
        frame = json.loads(data)
    except ValueError:
        return ClientMessage(data)
    if not isinstance(frame, dict) or frame.get("ws") != "send":
        return ClientMessage(data)
    message_id, payload = frame.get("id"), frame.get("data")
    if (
        not isinstance(message_id, str)
        or not 0 < len(message_id) <= MAX_ID_LENGTH
        or not isinstance(payload, str)
    ):
        return ClientMessage(data)
    return ClientMessage(payload, message_id)


def send_frame(message_id: str, data: str) -> str:
    """The client's ``{"ws": "send", "id", "data"}`` (for Python clients and tests)."""
    return compact_json({"ws": "send", "id": message_id, "data": data})


def ack_frame(message_id: str) -> str:
    """The server's ``{"ws": "ack", "id"}``."""
    return compact_json({"ws": "ack", "id": message_id})


def nack_frame(message_id: str, error: str) -> str:
    """The server's ``{"ws": "nack", "id", "error"}``."""
    return compact_json({"ws": "nack", "id": message_id, "error": error})


@contextmanager
def acknowledging(
    websocket: Any, message: ClientMessage, *, scope: str = ACK_SCOPE, ttl: int = ACK_TTL, broker: Any = None
) -> Iterator[bool]:
    """Process *message* at most once per id within *ttl* seconds, across workers; answer the client.

    Yields ``fresh``: ``True`` the first time this id is seen (process it), ``False`` for a
    resend of a message already processed (do nothing). On a normal exit the client gets
    an ack; on :class:`Refused` a nack (the exception is swallowed); on any other exception
    no answer, and the exception propagates (the view fails, the client reconnects and resends).
    A plain message (``id`` ``None``) is always fresh and never answered.

    The mark is the broker's (:meth:`Broker.remember`, ``SET NX EX`` on Redis), taken *before*
    processing, so that two workers handling the same id at once (a resend on a new
    connection while the old one is still busy) never both process it; it is released if
    processing raises, so a resend is processed then. What remains (documented): a process
    killed between the mark and the end of processing leaves the mark without the effect,
    and the resend is acknowledged unprocessed — at most once there; and a Redis that
    restarts without persistence forgets the marks. Views whose effect is a database write
    should make the id part of the write instead (a unique column, as the chat demo does),
    which is exactly-once with no window. Raises ``PublishError`` (before processing) when
    the broker does not answer: nothing is marked, nothing answered. *broker*: the socket's
    hub's unless given (``RuntimeError`` for a socket without a hub and no *broker*).
    """
    if message.id is None:
        yield True
        return
    if broker is None:
        if websocket.hub is None:
            raise RuntimeError("this websocket has no hub: pass the broker that dedupes")
        broker = websocket.hub.broker  # the process's broker, as the handler set it
    fresh = broker.remember(scope, message.id, ttl)
    try:
        yield fresh
    except Refused as refusal:
        if fresh:
            _forget(broker, scope, message.id)
        websocket.nack(message, str(refusal))
        return
    except BaseException:
        if fresh:
            _forget(broker, scope, message.id)
        raise
    websocket.ack(message)


def _forget(broker: Any, scope: str, message_id: str) -> None:
    try:
        broker.forget(scope, message_id)
    except PublishError as error:  # the mark then expires with its ttl: the resend is acked unprocessed
        logger.warning("could not release the mark of client message %s: %s", message_id, error)
