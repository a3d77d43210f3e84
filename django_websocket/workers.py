"""The gunicorn worker: ``gunicorn -k django_websocket.workers.GeventWebSocketWorker``.

gunicorn's own gevent worker (``gevent.pywsgi`` underneath) with one change:
requests are handled by :class:`~django_websocket.server.UpgradeHandler`, so the
application decides whether to switch protocols after Django's middleware ran,
and the access log (gunicorn's logger) shows 101, 403, 404… per handshake.
gevent's monkey-patching happens in the worker's start-up, as gunicorn does it.
"""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from .server import UpgradeHandler


class GunicornUpgradeHandler(UpgradeHandler, PyWSGIHandler):
    """:class:`UpgradeHandler` logging through gunicorn's access log."""


class GeventWebSocketWorker(GeventPyWSGIWorker):
    """gunicorn's gevent worker serving websocket upgrades decided by Django."""

    wsgi_handler = GunicornUpgradeHandler
