"""The gunicorn worker: ``gunicorn -k django_websocket.workers.GeventWebSocketWorker``.

gunicorn's own gevent worker (``gevent.pywsgi`` underneath) with these changes:

- requests are handled by :class:`~django_websocket.server.UpgradeHandler`, so the
  application decides whether to switch protocols after Django's middleware ran, and
  the access log (gunicorn's logger) shows 101, 403, 404… per handshake;
- on SIGTERM, SIGINT or SIGQUIT every open websocket is closed with 1001 within about a
  second, so views end, their subscriptions are dropped, and the worker exits long
  before ``--graceful-timeout`` (gunicorn's own worker would leave sockets silent until
  that timeout, then drop them without a close frame). A reload (SIGHUP to the master)
  reaches old workers as SIGTERM: their clients get 1001 too;
- on those signals it also stops accepting at once (gunicorn would for up to a second
  more, so a client reconnecting after its 1001 could land on the dying worker and sit
  there until ``--graceful-timeout``) and closes idle keep-alive HTTP connections (which
  gunicorn counts as busy until that timeout): a deploy's old workers exit in about a
  second;
- ``--max-requests`` (with ``--max-requests-jitter``) is honoured — gunicorn's pywsgi
  worker ignores it — counting requests and handshakes; the recycled worker closes its
  websockets with 1012 (service restart);
- unless ``WEBSOCKET_MAX_CONNECTIONS`` is set, handshakes past 90 % of
  ``--worker-connections`` get a fast 503, leaving room to answer them.

gevent's monkey-patching happens in the worker's start-up, as gunicorn does it.
"""

from __future__ import annotations

import gc
import socket
import weakref
from typing import Any

import gevent
from gunicorn.workers.base import Worker
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from . import blocking, conf, drivers, server
from .server import UpgradeHandler

#: Share of ``--worker-connections`` websockets may take by default.
CONNECTION_SHARE = 0.9


def close_all(code: int, reason: str, wait: float = 2.0) -> None:
    """Close every open websocket of this process with *code*, concurrently; wait up to *wait* s."""
    from .connection import open_connections

    closing = [gevent.spawn(websocket.shutdown, code, reason) for websocket in list(open_connections)]
    gevent.joinall(closing, timeout=wait)


#: This process's listening servers and its keep-alive connections waiting for a request.
_servers: weakref.WeakSet[Any] = weakref.WeakSet()
_idle_handlers: weakref.WeakSet[Any] = weakref.WeakSet()


def stop_serving() -> None:
    """Stop accepting and drop idle keep-alive connections: what is left are requests in progress."""
    for listening in list(_servers):
        listening.close()
    for handler in list(_idle_handlers):
        try:
            handler.socket.shutdown(socket.SHUT_RDWR)  # its read of the next request line ends
        except (AttributeError, OSError):
            pass


class WorkerServer(PyWSGIServer):
    """gunicorn's pywsgi server, known to the worker so it can stop accepting early."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _servers.add(self)

    def close(self) -> None:
        if not self.closed:  # gunicorn closes it again after its loop
            super().close()


class GunicornUpgradeHandler(UpgradeHandler, PyWSGIHandler):
    """:class:`UpgradeHandler` logging through gunicorn's access log and counting requests.

    A handshake counts when its 101 is sent (its response ends only with the socket);
    any other request when its response is done.
    """

    worker: GeventWebSocketWorker | None = None
    #: Called in the connection's greenlet when its client is gone (``after_load()`` sets it
    #: to close the greenlet's database connections: under gevent each greenlet has its own,
    #: and a persistent one (``CONN_MAX_AGE``) left in a dead greenlet would hold a backend
    #: until the garbage collector finds it).
    on_connection_end: Any = None

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self.on_connection_end is not None:
                self.on_connection_end()

    def upgrade_connection(self, headers: list[tuple[str, str]]) -> Any:
        connection = super().upgrade_connection(headers)
        if self.worker is not None:
            self.worker.count_request()
        return connection

    def handle_one_response(self) -> None:
        try:
            super().handle_one_response()
        finally:
            self.served = True
            if self.worker is not None and not self.connection_upgraded:
                self.worker.count_request()

    served = False

    def log_request(self) -> None:
        # gunicorn's access() returns at once without an access log, but only after this handler
        # built its arguments (two datetimes, the request's header list): skip them, as gunicorn's
        # own ASGI protocol does with the same flag.
        if getattr(self.server.log, "access_log_enabled", True):
            super().log_request()

    def read_requestline(self) -> Any:
        # Between two requests of a keep-alive connection: idle, safe to drop at shutdown.
        if self.served:
            _idle_handlers.add(self)
        try:
            return super().read_requestline()
        finally:
            _idle_handlers.discard(self)


class GeventWebSocketWorker(GeventPyWSGIWorker):
    """gunicorn's gevent worker serving websocket upgrades decided by Django."""

    wsgi_handler = GunicornUpgradeHandler
    server_class = WorkerServer

    def init_process(self) -> None:
        server.default_connection_limit = max(1, int(self.worker_connections * CONNECTION_SHARE))
        GunicornUpgradeHandler.worker = self
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.after_load()

    def after_load(self) -> None:
        """Once per worker, after gevent patched and the application (so Django's settings) loaded.

        Where the database layer is made safe for greenlets and the blocked-loop monitor starts.
        """
        # Here, not in init_process(): with --preload the application (psycopg, Django's
        # connection handler) was loaded in the master before the patch; load_wsgi() runs in
        # the worker either way. A BlockingDriverError fails the boot with its message.
        for note in drivers.prepare_for_gevent():
            self.log.info(note)
        # Imported here, not at the top: this module is imported by gunicorn's master, and
        # django.db must not be imported there before gevent patched threading.local.
        from .database import close_connections

        GunicornUpgradeHandler.on_connection_end = staticmethod(close_connections)
        threshold = conf.get("WEBSOCKET_BLOCKED_LOOP_THRESHOLD")
        if threshold is not None:
            blocking.start_monitor(threshold)
        # Everything loaded so far (Django, the project, the libraries) lives as long as the worker:
        # out of the collector's sight, a full collection walks only what connections allocate.
        gc.collect()
        gc.freeze()

    def count_request(self) -> None:
        """One more request or handshake; recycle the worker at ``max_requests``."""
        self.nr += 1
        if self.alive and self.nr >= self.max_requests:
            self.log.info("Autorestarting worker after current requests (%s).", self.nr)
            self.alive = False
            gevent.spawn(close_all, 1012, "service restart")

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(stop_serving)
        gevent.spawn(close_all, 1001, "server shutting down")

    def handle_quit(self, sig: int, frame: Any) -> None:
        gevent.spawn(self._close_then_quit, sig, frame)

    def _close_then_quit(self, sig: int, frame: Any) -> None:
        close_all(1001, "server shutting down", wait=1.0)
        Worker.handle_quit(self, sig, frame)
