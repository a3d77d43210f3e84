"""The websocket object under the stock ``geventwebsocket`` worker.

``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` sends the 101 before
the application runs, so Django can no longer answer with HTTP: refusals become
close codes 4000 + the HTTP status (4403, 4404…). :class:`StockWebSocket` gives
views the same API as :class:`~django_websocket.connection.WebSocket` over
gevent-websocket's object, and fixes what it gets wrong: ``receive()`` raises
instead of returning ``None``, ``close()`` puts the code on the wire, and sends
are serialised. gevent-websocket has no message size limit; prefer our worker.
"""

from __future__ import annotations

import struct
from typing import Any

import gevent
from gevent.lock import Semaphore
from geventwebsocket.exceptions import WebSocketError as StockError
from geventwebsocket.websocket import WebSocket as GeventWebSocket

from .connection import MessageMixin
from .events import ChannelMessage
from .exceptions import ConnectionClosed, ConnectionClosedError, connection_closed

Message = str | bytes

#: environ key where the peer's close code and reason are kept (gevent-websocket has no slot for them).
CLOSE_RECEIVED = "django_websocket.close_received"


class _ClosingWebSocket(GeventWebSocket):
    """gevent-websocket's WebSocket, answering a close frame with its code (it echoes none)."""

    __slots__ = ()  # same layout, so an instance's class can be swapped to this one

    def handle_close(self, header: Any, payload: bytes) -> None:
        code, reason = 1005, ""
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            reason = payload[2:].decode("utf-8", "replace")
        if self.environ is not None:
            self.environ[CLOSE_RECEIVED] = (code, reason)
        if not self.closed:
            _send_close(self, code if code not in (1005, 1006) else 1000, "")


def _send_close(websocket: GeventWebSocket, code: int, reason: str) -> None:
    """Write a close frame carrying *code* and *reason*; mark the socket closed."""
    try:
        websocket.send_frame(struct.pack("!H", code) + reason.encode(), websocket.OPCODE_CLOSE)
    except StockError:
        pass
    finally:
        websocket.closed = True


class StockWebSocket(MessageMixin):
    """Our websocket API over a ``geventwebsocket.websocket.WebSocket``."""

    def __init__(self, websocket: Any, subprotocol: str | None = None) -> None:
        self._websocket = websocket
        self.subprotocol = subprotocol
        self._write_lock = Semaphore()
        self._close_exc: ConnectionClosed | None = None
        self._environ = websocket.environ
        websocket.__class__ = _ClosingWebSocket

    def receive(self) -> Message:
        """Return the next message; raise ``ConnectionClosed`` once the connection is closed."""
        if self.on_wait is not None:
            self.on_wait()
        if self._close_exc is None:
            try:
                message = self._websocket.receive()
            except StockError:
                message = None
            if message is not None:
                return message if isinstance(message, str) else bytes(message)
            if self._close_exc is None:
                received = self._environ.get(CLOSE_RECEIVED)
                self._close_exc = (
                    connection_closed(*received)
                    if received
                    else ConnectionClosedError(1006, "connection dropped")
                )
        raise type(self._close_exc)(self._close_exc.code, self._close_exc.reason)

    def send(self, message: Message) -> None:
        """Send a text frame for ``str``, a binary frame for bytes; serialised across greenlets."""
        if isinstance(message, ChannelMessage):
            message = message.data
        if not isinstance(message, str | bytes | bytearray | memoryview):
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")
        with self._write_lock:
            if self._close_exc is not None or self._websocket.closed:
                raise self._close_exc or ConnectionClosedError(1006)
            try:
                self._websocket.send(message, binary=not isinstance(message, str))
            except StockError:
                self._close_exc = ConnectionClosedError(1006, "connection dropped")
                raise self._close_exc from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame with *code* and *reason*. Idempotent."""
        with self._write_lock:
            if self._websocket.closed:
                return
            _send_close(self._websocket, code, reason)
            if self._close_exc is None:
                self._close_exc = connection_closed(code, reason)

    def send_frames_nowait(self, frames: bytes) -> bool:
        """gevent-websocket cannot write without possibly waiting: always ``False`` (queue it)."""
        return False

    def terminate(self, code: int, reason: str = "") -> None:
        """Close within a second even if a send is stuck (the socket is then dropped by the server)."""
        with gevent.Timeout(1.0, False):
            self.close(code, reason)
        self._websocket.closed = True

    @property
    def closed(self) -> bool:
        return self._close_exc is not None or self._websocket.closed

    @property
    def close_code(self) -> int | None:
        return self._close_exc.code if self._close_exc is not None else None
