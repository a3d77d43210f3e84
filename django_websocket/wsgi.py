"""The WSGI entry points, for a project's ``wsgi.py``::

    from django_websocket.wsgi import get_wsgi_application, get_wsgi_websocket_application

    application = get_wsgi_application()           # HTTP and websockets on one port
    websocket = get_wsgi_websocket_application()   # websockets only (behind nginx)

Serve either with ``gunicorn -k django_websocket.workers.GeventWebSocketWorker project.wsgi:NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import django
from django.core.handlers.wsgi import WSGIHandler

from .handler import WebSocketHandler
from .handshake import is_upgrade_request


def get_wsgi_websocket_application() -> WebSocketHandler:
    """Set up Django and return the websocket-only WSGI application.

    Every request is resolved against ``WEBSOCKET_URLCONF`` through ``MIDDLEWARE``;
    a plain (non-upgrade) request to a websocket view gets 426.
    """
    django.setup(set_prefix=False)
    return WebSocketHandler()


class SinglePortApplication:
    """WSGI application serving ordinary Django HTTP and websocket upgrades on one port.

    Requests with ``Upgrade: websocket`` go to :class:`WebSocketHandler`
    (``WEBSOCKET_URLCONF``); every other request to Django's own ``WSGIHandler``
    (``ROOT_URLCONF``) — the routing the nginx layout does by the ``Upgrade`` header.
    """

    def __init__(self) -> None:
        self.http = WSGIHandler()
        self.websocket = WebSocketHandler()

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if is_upgrade_request(environ):
            return self.websocket(environ, start_response)
        return self.http(environ, start_response)


def get_wsgi_application() -> SinglePortApplication:
    """Set up Django and return the single-port application (HTTP + websockets)."""
    django.setup(set_prefix=False)
    return SinglePortApplication()
