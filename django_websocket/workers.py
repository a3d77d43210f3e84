"""The gunicorn worker: ``gunicorn -k django_websocket.workers.GeventWebSocketWorker``.

gunicorn's own gevent worker (``gevent.pywsgi`` underneath) with these changes:

- requests are handled by :class:`~django_websocket.server.UpgradeHandler`, so the
  application decides whether to switch protocols after Django's middleware ran, and
  the access log (gunicorn's logger) shows 101, 403, 404… per handshake;
- on SIGTERM every open websocket is closed, in batches spread over
  ``WEBSOCKET_DRAIN_WINDOW`` (a second), so views end, their subscriptions are dropped, and
  the worker exits long before ``--graceful-timeout`` (gunicorn's own worker would leave
  sockets silent until that timeout, then drop them without a close frame). A reload
  (SIGHUP to the master) reaches old workers as SIGTERM while the new ones still load the
  application: an old worker first waits (up to ``WEBSOCKET_DRAIN_TIMEOUT``) until they
  are ready, then closes with 1012 (service restart) instead of 1001
  (``django_websocket.drain``). SIGINT and SIGQUIT close everything with 1001 at once;
- on those signals it also stops accepting at once (gunicorn would for up to a second
  more, so a client reconnecting after its 1001 could land on the dying worker and sit
  there until ``--graceful-timeout``) and closes idle keep-alive HTTP connections (which
  gunicorn counts as busy until that timeout): a deploy's old workers exit in about a
  second;
- ``--max-requests`` (with ``--max-requests-jitter``) is honoured — gunicorn's pywsgi
  worker ignores it — counting requests and handshakes; the recycled worker closes its
  websockets with 1012 (service restart);
- unless ``WEBSOCKET_MAX_CONNECTIONS`` is set, handshakes past 90 % of
  ``--worker-connections`` get a fast 503, leaving room to answer them;
- with ``prometheus_client`` installed, each worker pushes its counters into it every second
  and removes its live gauge file when it exits (``django_websocket.metrics``);
- at start-up the worker raises its soft limit on open files to the hard limit (often 1,024
  soft against a far higher hard limit): every websocket holds a descriptor, and raising the
  hard limit itself is the system's decision (``ulimit -Hn``, systemd's ``LimitNOFILE``).

gevent's monkey-patching happens in the worker's start-up, as gunicorn does it.
"""

from __future__ import annotations

import gc
import resource
import socket
import time
import weakref
from typing import Any

import gevent
from gevent.pool import Pool
from gunicorn.workers.base import Worker
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from . import blocking, conf, drain, drivers, metrics, server
from .runners import ReusingPool
from .server import UpgradeHandler

#: Share of ``--worker-connections`` websockets may take by default.
CONNECTION_SHARE = 0.9


def open_sockets() -> list[Any]:
    """This process's open websockets."""
    from .connection import open_connections

    return list(open_connections)


#: Seconds a stopping worker waits for its clients' close frames after sending its own
#: (a shutdown's ``close_timeout``); the clients that have not answered are then dropped.
SHUTDOWN_GRACE = 1.0
#: Seconds SIGQUIT/SIGINT waits, after the closes, for the views to end before the worker exits.
QUIT_WAIT = 2.0


def close_socket(websocket: Any, code: int, reason: str) -> None:
    """Start closing *websocket* for a shutdown, without blocking (``WebSocket.start_shutdown``)."""
    websocket.start_shutdown(code, reason)


def is_open(websocket: Any) -> bool:
    return websocket.close_code is None


def finish_closing(websockets: list[Any], code: int, reason: str, grace: float = SHUTDOWN_GRACE) -> None:
    """Wait up to *grace* s for the closing handshakes of *websockets*; drop those still open.

    A socket still open gets ``terminate(code, reason)`` (in a greenlet of its own: a send
    stuck on a client that stopped reading holds its write lock for up to a second); returns
    when those are done, a second more at most.
    """
    left = drain.wait_closed(websockets, is_open, grace)
    ending = [gevent.spawn(websocket.terminate, code, reason) for websocket in left]
    gevent.joinall(ending, timeout=1.0)


def close_all(code: int, reason: str, wait: float = SHUTDOWN_GRACE) -> None:
    """Close every open websocket of this process with *code* at once; wait up to *wait* s for the peers."""
    websockets = open_sockets()
    drain.close_in_batches(websockets, code, reason, 0.0, close_socket)
    finish_closing(websockets, code, reason, wait)


def wait_for_handlers(timeout: float) -> bool:
    """Wait until no connection of this process's servers is being handled, at most *timeout* s."""
    deadline = time.monotonic() + timeout
    for listening in list(_servers):
        if not listening.pool.join(timeout=max(0.0, deadline - time.monotonic())):
            return False
    return True


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return the soft limit before, after.

    Leaves it as it is where the system refuses (and returns the same value twice).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
        self._kept_open: set[Any] = set()  # sockets of upgraded connections whose request is not over
        if type(self.pool) is Pool and self.pool.greenlet_class is gevent.Greenlet:
            # gunicorn's plain pool: the same size and accounting, with greenlets that serve one
            # connection after another (see runners.py) and keep no copy of the accept loop's stack.
            self.set_spawn(ReusingPool(self.pool.size))

    def close(self) -> None:
        if not self.closed:  # gunicorn closes it again after its loop
            super().close()

    def keep_open(self, sock: socket.socket) -> bool:
        """Leave *sock* open when its request's greenlet ends: its upgraded connection closes it.

        ``UpgradeHandler.connection_socket()``'s hook, so the connection goes on with the socket
        object accepted for it rather than a second one for the same descriptor. *sock* is held
        only until that greenlet ends (:meth:`do_close`). Always ``True``.
        """
        self._kept_open.add(sock)
        return True

    def do_close(self, sock: Any, *args: Any) -> None:
        # gevent's server calls it with each connection's socket when its greenlet is done.
        try:
            self._kept_open.remove(sock)
        except KeyError:
            super().do_close(sock, *args)


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
        if self.logs_access():
            super().log_request()

    def logs_access(self) -> bool:
        return bool(getattr(self.server.log, "access_log_enabled", True))

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
        before, after = raise_open_files_limit()
        if after != before:
            self.log.info("open files limit raised from %s to %s (the hard limit)", before, after)
        server.default_connection_limit = max(1, int(self.worker_connections * CONNECTION_SHARE))
        GunicornUpgradeHandler.worker = self
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.after_load()

    def after_load(self) -> None:
        """Once per worker, after gevent patched and the application (so Django's settings) loaded.

        Where the database layer is made safe for greenlets, the blocked-loop monitor starts, so
        do the metrics' sync (with ``prometheus_client`` installed) and the outbox relay, the
        messaging configuration is probed once (:func:`~django_websocket.brokers.report_problems`),
        and the worker says it is ready (:func:`~django_websocket.drain.mark_ready`).
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
        # A malformed WEBSOCKET_REDIS_URL or a Sentinel service nobody monitors: one log line
        # per worker now, rather than a failure per socket later. In a greenlet: servers that do
        # not answer cost up to a timeout each, and must not delay the boot.
        from .brokers import report_problems

        gevent.spawn(report_problems, self.log)
        metrics.start_worker(self.cfg.workers)
        self.start_outbox_relay()
        # Everything loaded so far (Django, the project, the libraries) lives as long as the worker:
        # out of the collector's sight, a full collection walks only what connections allocate.
        gc.collect()
        gc.freeze()
        self.ready_marker = drain.mark_ready(self.ppid, self.pid)  # a reloading sibling waits for it

    def start_outbox_relay(self) -> None:
        """Relay the durable outbox from this worker, when the app (its table) is installed."""
        from django.apps import apps

        interval = conf.get("WEBSOCKET_OUTBOX_RELAY_INTERVAL")
        if interval is None or not apps.is_installed("django_websocket"):
            return
        # Imported here: the outbox is a model, importable only once Django's apps are loaded.
        from .outbox import start_relay

        start_relay(float(interval))

    def run(self) -> None:
        """Serve until told to stop; then the metrics get their last push and the live gauge file goes."""
        try:
            super().run()
        finally:
            metrics.stop_worker()
            if self.ready_marker is not None:
                self.ready_marker.unlink(missing_ok=True)

    def count_request(self) -> None:
        """One more request or handshake; recycle the worker at ``max_requests``."""
        self.nr += 1
        if self.alive and self.nr >= self.max_requests:
            self.log.info("Autorestarting worker after current requests (%s).", self.nr)
            self.alive = False
            gevent.spawn(close_all, 1012, "service restart")

    ready_marker: Any = None

    draining: gevent.Greenlet | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self.draining is not None:
            return  # gunicorn's master repeats its SIGTERM every second until the worker is gone
        # The connections are torn down from here on, and this process ends: the collector need
        # not walk what is alive now (every socket's objects) again and again meanwhile.
        gc.freeze()
        gevent.spawn(stop_serving)
        window = float(conf.get("WEBSOCKET_DRAIN_WINDOW"))
        timeout = float(conf.get("WEBSOCKET_DRAIN_TIMEOUT"))
        self.draining = gevent.spawn(
            drain.drain, self.ppid, self.pid, open_sockets, close_socket, window, timeout, finish_closing
        )

    def handle_quit(self, sig: int, frame: Any) -> None:
        gevent.spawn(self._close_then_quit, sig, frame)

    def _close_then_quit(self, sig: int, frame: Any) -> None:
        gc.freeze()  # as in handle_exit()
        close_all(1001, "server shutting down", wait=1.0)
        # The views end (request_finished, their database connections closed) before the
        # process does: at exit, greenlets still running are unwound one by one, far slower.
        wait_for_handlers(QUIT_WAIT)
        Worker.handle_quit(self, sig, frame)
