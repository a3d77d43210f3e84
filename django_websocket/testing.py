"""Testing helpers for projects that use django_websocket.

Two ways to reach a websocket view from a test, both returning a
:class:`WebSocketTestConnection` (or raising :class:`HandshakeRejected`):

- :class:`WebSocketClient` — in-process, no network server: the WSGI application
  runs in a greenlet on one end of a socket pair, in the test's own thread, so it
  sees the test's database transaction (works inside ``django.test.TestCase``)::

      client = WebSocketClient()
      client.force_login(user)
      with client.connect("/chat/lobby/") as ws:
          ws.send("hi")
          assert ws.receive() == "hi"

- :class:`WebSocketLiveServerTestCase` — a ``LiveServerTestCase`` whose server is a
  real gevent WSGI server (HTTP and websockets on one port) on a free port;
  ``self.connect(path)`` opens a connection over TCP, and ``self.ws_url(path)`` gives
  the URL for any other client (a browser, ``websockets``…).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any

import gevent
import gevent.socket
from django.test import LiveServerTestCase
from django.test.testcases import LiveServerThread
from gevent import pywsgi
from websockets.client import ClientProtocol
from websockets.exceptions import ProtocolError
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN, State
from websockets.uri import parse_uri

from .exceptions import ConnectionClosed, connection_closed
from .handler import KEEP_DB_CONNECTIONS
from .server import UpgradeHandler

__all__ = [
    "HandshakeRejected",
    "WebSocketClient",
    "WebSocketLiveServerTestCase",
    "WebSocketTestConnection",
    "open_connection",
]


class HandshakeRejected(Exception):
    """The server answered the handshake with HTTP *status* instead of 101."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"handshake rejected with HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


class WebSocketTestConnection:
    """The client end of an accepted websocket, for tests.

    ``receive()`` returns ``str`` or ``bytes`` and raises ``ConnectionClosed`` (with the
    server's close code and reason) once the server closed; it raises ``TimeoutError``
    when nothing arrives within *timeout* seconds.
    """

    def __init__(self, sock: Any, protocol: ClientProtocol, response: Response) -> None:
        self.socket = sock
        self.protocol = protocol
        self.response = response
        self.subprotocol: str | None = response.headers.get("Sec-WebSocket-Protocol")
        self._messages: list[str | bytes] = []
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None

    def send(self, message: str | bytes) -> None:
        """Send a text frame for ``str``, a binary frame for ``bytes``."""
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        self._flush()

    def send_json(self, obj: Any) -> None:
        import json

        self.send(json.dumps(obj))

    def receive(self, timeout: float = 5.0) -> str | bytes:
        """Return the next message; raise ``ConnectionClosed`` or ``TimeoutError``."""
        while not self._messages:
            if self.protocol.state is State.CLOSED or (self.protocol.close_rcvd and not self._messages):
                raise self._closed()
            self._read(timeout)
        return self._messages.pop(0)

    def receive_json(self, timeout: float = 5.0) -> Any:
        import json

        return json.loads(self.receive(timeout))

    def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Send a close frame and wait for the server's; then close the socket."""
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        try:
            while self.protocol.state is not State.CLOSED and not self.protocol.close_rcvd:
                self._read(timeout)
        except (TimeoutError, OSError):
            pass
        self.socket.close()

    @property
    def close_code(self) -> int | None:
        """The server's close code once it closed (1006 when it dropped the connection)."""
        if self.protocol.close_rcvd is not None:
            return self.protocol.close_rcvd.code
        return 1006 if self.protocol.state is State.CLOSED else None

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_rcvd.reason if self.protocol.close_rcvd is not None else None

    def _closed(self) -> ConnectionClosed:
        return connection_closed(self.close_code or 1006, self.close_reason or "")

    def _read(self, timeout: float) -> None:
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no message within {timeout} s") from None
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for frame in self.protocol.events_received():
            self._on_frame(frame)
        self._flush()

    def _on_frame(self, frame: Any) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragment_opcode = frame.opcode
            self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
        else:
            return
        if frame.fin:
            data = b"".join(self._fragments)
            self._messages.append(data.decode() if self._fragment_opcode is Opcode.TEXT else data)
            self._fragments = []

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                try:
                    self.socket.sendall(chunk)
                except OSError:
                    # The server already dropped the connection (it does after failing it).
                    return

    def __enter__(self) -> WebSocketTestConnection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def open_connection(
    sock: Any,
    path: str,
    *,
    host: str = "testserver",
    headers: Iterable[tuple[str, str]] = (),
    subprotocols: list[str] | None = None,
    origin: str | None = None,
    timeout: float = 5.0,
) -> WebSocketTestConnection:
    """Send a websocket handshake for *path* on connected *sock*.

    Returns the open connection, or raises :class:`HandshakeRejected` with the
    server's HTTP status, headers and body.
    """
    protocol = ClientProtocol(
        parse_uri(f"ws://{host}{path}"), origin=origin, subprotocols=subprotocols, max_size=None
    )
    request = protocol.connect()
    for name, value in headers:
        request.headers[name] = value
    protocol.send_request(request)
    sock.sendall(b"".join(protocol.data_to_send()))
    sock.settimeout(timeout)
    while True:
        data = sock.recv(65536)
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        if events or not data:
            break
    response = events[0] if events else None
    if not isinstance(response, Response):
        sock.close()
        raise ProtocolError("the server closed the connection without answering the handshake")
    if protocol.handshake_exc is not None:
        sock.close()
        raise HandshakeRejected(response.status_code, dict(response.headers.raw_items()), response.body)
    connection = WebSocketTestConnection(sock, protocol, response)
    for event in events[1:]:
        connection._on_frame(event)
    connection._flush()  # e.g. the echo of a close frame that came with the 101
    return connection


class WebSocketClient:
    """Connect to websocket views in-process, without a network server.

    *application* defaults to the websocket application (``WEBSOCKET_URLCONF``,
    ``MIDDLEWARE``). Cookies set with :meth:`force_login` / :meth:`login` or in
    :attr:`cookies` are sent with every handshake.
    """

    def __init__(self, application: Any = None) -> None:
        self._application = application
        self.cookies: SimpleCookie = SimpleCookie()

    @property
    def application(self) -> Any:
        if self._application is None:
            from .handler import WebSocketHandler

            self._application = WebSocketHandler()
        return self._application

    def force_login(self, user: Any, backend: str | None = None) -> None:
        """Log *user* in (as ``django.test.Client.force_login``) for later handshakes."""
        from django.test import Client

        client = Client()
        client.force_login(user, backend)
        self.cookies.update(client.cookies)

    def login(self, **credentials: Any) -> bool:
        """Log in with *credentials* (as ``django.test.Client.login``); return whether it worked."""
        from django.test import Client

        client = Client()
        logged_in = client.login(**credentials)
        self.cookies.update(client.cookies)
        return logged_in

    def connect(
        self,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        subprotocols: list[str] | None = None,
        origin: str | None = None,
        timeout: float = 5.0,
    ) -> WebSocketTestConnection:
        """Open a websocket to *path*; raise :class:`HandshakeRejected` if it is refused."""
        server_end, client_end = gevent.socket.socketpair()
        server = pywsgi.WSGIServer(
            ("127.0.0.1", 0),
            self.application,
            handler_class=UpgradeHandler,
            log=None,
            environ={"SERVER_NAME": "testserver", "SERVER_PORT": "80", KEEP_DB_CONNECTIONS: True},
        )
        gevent.spawn(_serve_one, server, server_end)
        all_headers = list(headers)
        cookie = "; ".join(f"{morsel.key}={morsel.value}" for morsel in self.cookies.values())
        if cookie:
            all_headers.append(("Cookie", cookie))
        return open_connection(
            client_end, path, headers=all_headers, subprotocols=subprotocols, origin=origin, timeout=timeout
        )


def _serve_one(server: pywsgi.WSGIServer, sock: Any) -> None:
    handler = UpgradeHandler(sock, ("127.0.0.1", 0), server)
    handler.handle()


class _GeventLiveServerThread(LiveServerThread):
    """A live server thread running a gevent WSGI server (HTTP and websockets on one port)."""

    def run(self) -> None:
        from django.db import connections

        from .wsgi import SinglePortApplication

        if self.connections_override:
            for alias, connection in self.connections_override.items():
                connections[alias] = connection
        try:
            application = SinglePortApplication()
            application.http = self.static_handler(_media_files_handler(application.http))
            self.hub = gevent.get_hub()
            self.httpd = pywsgi.WSGIServer(
                (self.host, self.port), application, handler_class=UpgradeHandler, log=None
            )
            self.httpd.init_socket()
            self.port = self.httpd.server_port
            self.is_ready.set()
            self.httpd.serve_forever()
        except Exception as error:
            self.error = error
            self.is_ready.set()
        finally:
            connections.close_all()

    def terminate(self) -> None:
        if hasattr(self, "httpd"):
            stopped = threading.Event()

            def stop() -> None:
                gevent.spawn(lambda: (self.httpd.stop(timeout=1), stopped.set()))

            self.hub.loop.run_callback_threadsafe(stop)
            stopped.wait(5)
        self.join(5)


def _media_files_handler(application: Any) -> Any:
    from django.test.testcases import _MediaFilesHandler

    return _MediaFilesHandler(application)


class WebSocketLiveServerTestCase(LiveServerTestCase):
    """A ``LiveServerTestCase`` serving HTTP and websockets on one free port."""

    server_thread_class = _GeventLiveServerThread

    @classmethod
    def ws_url(cls, path: str = "/") -> str:
        """The ``ws://`` URL of *path* on the live server."""
        return f"ws://{cls.host}:{cls.server_thread.port}{path}"

    def connect(self, path: str, **kwargs: Any) -> WebSocketTestConnection:
        """Open a websocket to *path* on the live server over TCP (see :func:`open_connection`)."""
        sock = socket.create_connection((self.host, self.server_thread.port), timeout=5)
        return open_connection(sock, path, host=f"{self.host}:{self.server_thread.port}", **kwargs)
