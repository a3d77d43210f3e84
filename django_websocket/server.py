"""Step 0 of a connection: the gevent WSGI server side of the upgrade.

:class:`UpgradeHandler` is a ``gevent.pywsgi`` request handler that lets the WSGI
application — not the server — decide whether to switch protocols. It puts a
callable under :data:`UPGRADE_ENVIRON_KEY` in the environ; the application calls
it only after Django has accepted the handshake, and gets the raw connection back.
Every other request is served exactly as ``pywsgi`` serves it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from gevent import pywsgi

#: environ key of the upgrade callable: ``upgrade(headers) -> (socket, read)``.
UPGRADE_ENVIRON_KEY = "django_websocket.upgrade"

Upgrade = Callable[[list[tuple[str, str]]], tuple[socket.socket, Callable[[int], bytes]]]


class UpgradeHandler(pywsgi.WSGIHandler):
    """A pywsgi handler whose applications can take over the connection after a 101."""

    def get_environ(self) -> dict:
        environ = super().get_environ()
        environ[UPGRADE_ENVIRON_KEY] = self.upgrade_connection
        return environ

    def upgrade_connection(
        self, headers: list[tuple[str, str]]
    ) -> tuple[socket.socket, Callable[[int], bytes]]:
        """Send ``101 Switching Protocols`` with *headers*; hand the connection to the caller.

        Returns ``(socket, read)``: ``read(n)`` returns up to *n* bytes, starting with
        any the HTTP parser had already buffered. After this call the server writes
        nothing more on the connection and closes it when the application returns;
        the access log records status 101 and the connection's duration.
        """
        self.close_connection = True
        # pywsgi sends neither chunked encoding nor a body for a 101 (connection_upgraded).
        self.start_response("101 Switching Protocols", headers)
        self.write(b"")
        return self.socket, self.rfile.read1
