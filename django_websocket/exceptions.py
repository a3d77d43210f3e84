"""Exceptions raised by django_websocket.

Two families, kept apart as h11 and wsproto do:

- :class:`HandshakeError` — the peer sent a handshake we refuse; it carries the HTTP
  status (and headers) to answer with *before* any upgrade.
- :class:`ConnectionClosed` — the socket is closed; it carries the close code and
  reason. :class:`ConnectionClosedOK` for a normal closure (1000, 1001, 1005),
  :class:`ConnectionClosedError` otherwise.

None of them subclasses ``OSError``: a closed websocket is not a socket error.
"""

from __future__ import annotations


class WebSocketError(Exception):
    """Base class of every exception django_websocket raises."""


class HandshakeError(WebSocketError):
    """The opening handshake is refused with HTTP *status* (400, 403, 426…).

    *message* is safe to show the client: it names what was wrong, never internals.
    *headers* are extra response headers (``Sec-WebSocket-Version`` for a version error).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ConnectionClosed(WebSocketError):
    """The connection is closed; *code* and *reason* are the peer's (or ours, if we closed first).

    ``code`` is 1006 when the TCP connection dropped without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (close code 1000, 1001 or 1005)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed abnormally: a protocol error, a size limit, or a dropped TCP connection."""


#: RFC 6455 §7.4.1: codes that mean the endpoint went away or finished normally.
OK_CLOSE_CODES = frozenset({1000, 1001, 1005})


def connection_closed(code: int, reason: str = "") -> ConnectionClosed:
    """Return :class:`ConnectionClosedOK` or :class:`ConnectionClosedError` for *code*."""
    cls = ConnectionClosedOK if code in OK_CLOSE_CODES else ConnectionClosedError
    return cls(code, reason)


class PublishError(WebSocketError):
    """A message could not be handed to the broker (Redis unreachable or timed out)."""
