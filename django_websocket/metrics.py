"""Prometheus metrics of the websocket server, one scrape for every gunicorn worker.

Add the view to the project's ``ROOT_URLCONF`` (and restrict who may reach it: see
``docs/howto/metrics.md``)::

    from django_websocket.metrics import metrics_view

    urlpatterns = [..., path("metrics", metrics_view)]

It needs ``prometheus_client`` (``pip install 'django-websocket-views[metrics]'``); without it
the view raises ``ImproperlyConfigured`` and ``manage.py check`` reports
``django_websocket.E023``.

How the numbers are kept, and why:

- the connection layer and the handler only add to plain integers
  (:data:`django_websocket.counters.counters`), and the messaging layer, the limits and the
  blocked-loop monitor keep their own integers (the hub's ``deliveries``, ``reconnects``,
  ``overflows``, ``replayed``, ``gaps``; ``rate_limit_counters``; ``owner_connections.refusals``;
  ``blocking.counters``), as handshake latencies do per bucket (:class:`HandshakeLatencies`).
  Nothing on the per-message or per-handshake path touches ``prometheus_client``;
- :func:`sync` pushes what changed since its last call into ``prometheus_client`` metrics
  (counters and the latency histogram by their difference, the connections gauge set). Under
  our gunicorn worker it runs every :data:`SYNC_INTERVAL` seconds in each worker (started by
  :func:`start_worker`), and the worker serving a scrape runs it first: a scrape is at most
  that old for the other workers;
- with ``PROMETHEUS_MULTIPROC_DIR`` set in gunicorn's environment, ``prometheus_client`` keeps
  each process's values in files there and the view adds up every worker's (the connections
  gauge counts live workers only: ``multiprocess_mode="livesum"``). Without it the view serves
  its own process's registry: right for one process (``runwebsocket``, ``-w 1``), a random
  worker's share under several.

Stale files: a worker's gauge file must go when the worker does, or its sockets would count
forever. The worker removes its own when it exits; gunicorn's ``child_exit`` hook
(:func:`gunicorn_child_exit`, see ``test_project/deploy/gunicorn.conf.py``) removes that of a
worker that was killed; and a worker starting up removes those of processes that no longer
exist, which covers a killed worker without the hook, since gunicorn replaces it at once.
Counter files stay: a dead worker's counts are part of the totals. :func:`gunicorn_on_starting`
empties the directory when gunicorn starts, so totals start again from zero with the server.

Importing this module imports neither ``prometheus_client``, Django nor gevent.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from .counters import counters
from .processes import is_alive

logger = logging.getLogger("django_websocket")

#: The module that keeps this process's hubs (``hubs()`` is read, never added to). The one
#: place that names the messaging layer's module.
HUB_MODULE = "django_websocket.brokers"

#: Seconds between two pushes of a worker's counters into ``prometheus_client``.
SYNC_INTERVAL = 1.0

#: The environment variable of ``prometheus_client``'s multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Upper bounds (seconds) of the handshake latency histogram: from the request reaching the
#: handler to the 101 written, middleware (sessions, authentication: database queries) included.
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONNECTIONS = "django_websocket_connections"
HANDSHAKE_DURATION = "django_websocket_handshake_duration_seconds"

#: Every counter: name, help, label name or ``None``. The names are a fixed interface
#: (dashboards and alerts use them): never rename one.
COUNTERS: tuple[tuple[str, str, str | None], ...] = (
    ("django_websocket_handshakes_total", "Handshakes answered, by HTTP status (101: accepted).", "status"),
    ("django_websocket_closes_total", "Websockets closed, by the close code they ended with.", "code"),
    ("django_websocket_messages_received_total", "Data messages received from clients.", None),
    ("django_websocket_messages_sent_total", "Data messages sent to clients.", None),
    ("django_websocket_received_bytes_total", "Bytes read from websockets (frames, on the wire).", None),
    ("django_websocket_sent_bytes_total", "Bytes written to websockets (frames, on the wire).", None),
    ("django_websocket_channel_deliveries_total", "Channel messages handed to subscribed sockets.", None),
    ("django_websocket_slow_consumer_closes_total", "Sockets closed for not reading channel messages.", None),
    ("django_websocket_broker_reconnects_total", "Reconnections of the workers' Redis subscribers.", None),
    ("django_websocket_resume_replayed_total", "Messages replayed from history to resuming sockets.", None),
    ("django_websocket_resume_gaps_total", "Gaps signalled to sockets (messages out of history).", None),
    ("django_websocket_rate_limit_closes_total", "Closes with 1008 past WEBSOCKET_MESSAGE_RATE_LIMIT.", None),
    ("django_websocket_per_user_refusals_total", "429s past WEBSOCKET_MAX_CONNECTIONS_PER_USER.", None),
    (
        "django_websocket_blocked_loop_events_total",
        "Event loop stalls past the blocked-loop threshold.",
        None,
    ),
    ("django_websocket_blocked_loop_seconds_total", "Seconds the event loop spent in those stalls.", None),
)

#: Every metric name the view exports (histogram samples add ``_bucket``, ``_sum``, ``_count``).
METRIC_NAMES = frozenset([CONNECTIONS, HANDSHAKE_DURATION, *(name for name, _, _ in COUNTERS)])

Totals = dict[tuple[str, str], float]


def available() -> bool:
    """Whether ``prometheus_client`` can be imported (without importing it)."""
    from importlib.util import find_spec

    return find_spec("prometheus_client") is not None


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when unset or empty (one process's registry)."""
    return os.environ.get(MULTIPROC_ENV) or None


def totals() -> Totals:
    """Every counter's total in this process: ``{(counter name, label value or ""): total}``."""
    # Imported here, not at the top: gunicorn's master imports this module for its hooks, and
    # must not import gevent or django.db before the workers patch (see workers.py).
    from . import blocking
    from .connection import rate_limit_counters
    from .handler import owner_connections

    found: Totals = {
        ("django_websocket_messages_received_total", ""): counters.messages_received,
        ("django_websocket_messages_sent_total", ""): counters.messages_sent,
        ("django_websocket_received_bytes_total", ""): counters.bytes_received,
        ("django_websocket_sent_bytes_total", ""): counters.bytes_sent,
        ("django_websocket_rate_limit_closes_total", ""): rate_limit_counters.closes,
        ("django_websocket_per_user_refusals_total", ""): owner_connections.refusals,
        ("django_websocket_blocked_loop_events_total", ""): blocking.counters.events,
        ("django_websocket_blocked_loop_seconds_total", ""): blocking.counters.seconds,
    }
    for status, count in list(counters.handshakes.items()):
        found["django_websocket_handshakes_total", str(status)] = count
    for code, count in list(counters.closes.items()):
        found["django_websocket_closes_total", str(code)] = count
    hubs = existing_hubs()
    for name, attribute in (
        ("django_websocket_channel_deliveries_total", "deliveries"),
        ("django_websocket_slow_consumer_closes_total", "overflows"),
        ("django_websocket_broker_reconnects_total", "reconnects"),
        ("django_websocket_resume_replayed_total", "replayed"),
        ("django_websocket_resume_gaps_total", "gaps"),
    ):
        found[name, ""] = sum(getattr(hub, attribute, 0) for hub in hubs)
    return found


def existing_hubs() -> list[Any]:
    """The hubs this process has made so far, without making one (nor importing their module).

    No module imported means no hub: ``django_websocket.brokers.hubs()`` lists them.
    """
    module = sys.modules.get(HUB_MODULE)
    return module.hubs() if module is not None else []


def open_connection_count() -> int:
    """Websockets open in this process now."""
    from .connection import open_connections

    return len(open_connections)


class HandshakeLatencies:
    """Accepted handshakes' durations, counted per bucket of :data:`HANDSHAKE_BUCKETS` in plain numbers.

    :meth:`observe` is ``counters.observe_handshake`` once the metrics are set up: a bisection
    and two additions, no lock. ``prometheus_client``'s ``Histogram.observe()`` takes a lock
    for each of the two values it updates, and under gevent that lock is gevent's, written in
    Python: about 11 µs per handshake under load (py-spy), against 3 µs alone. :class:`Exporter`
    adds what was counted here to the histogram at each push.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = HANDSHAKE_BUCKETS) -> None:
        self.bounds = bounds
        #: Observations per bucket, not cumulative: ``counts[i]`` is those above ``bounds[i - 1]``
        #: and at most ``bounds[i]``; the last is those above every bound (``+Inf``).
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one handshake that took *seconds* (the bucket ``Histogram.observe()`` would pick)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


class Exporter:
    """The ``prometheus_client`` metrics, fed from :func:`totals` by differences.

    Counters only go up: each :meth:`push` adds, per counter and label, what the total gained
    since the previous push. A total lower than what was pushed (a source that started again)
    becomes the new base and adds nothing. Handshake latencies are counted as they happen in
    :attr:`latencies` (:attr:`observe_handshake`, once per accepted handshake, never per
    message) and added to the histogram at each push too; with a ``prometheus_client`` whose
    histogram does not keep one value per bucket and one for the sum, they are observed into
    it directly instead.
    """

    def __init__(self, registry: Any = None) -> None:
        """Create the metrics in *registry* (``prometheus_client.REGISTRY`` by default)."""
        prometheus = import_prometheus()
        if registry is None:
            registry = prometheus.REGISTRY
        self.counters = {
            name: prometheus.Counter(name, help_text, [label] if label else [], registry=registry)
            for name, help_text, label in COUNTERS
        }
        self.connections = prometheus.Gauge(
            CONNECTIONS,
            "Websockets open now, over the live workers.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.handshake_duration = prometheus.Histogram(
            HANDSHAKE_DURATION,
            "Seconds from a handshake reaching the handler to its 101.",
            buckets=HANDSHAKE_BUCKETS,
            registry=registry,
        )
        self.latencies = HandshakeLatencies()
        self.observe_handshake: Callable[[float], None] = self.latencies.observe
        # The histogram's own values, to add counted latencies to (prometheus_client keeps one
        # per bucket, not cumulative, plus the sum, since 0.4): checked, not assumed.
        histogram = self.handshake_duration
        if len(getattr(histogram, "_buckets", ())) != len(self.latencies.counts) or not hasattr(
            histogram, "_sum"
        ):
            self.observe_handshake = histogram.observe
        self._pushed_latencies = HandshakeLatencies()
        self._pushed: Totals = {}
        # Scrapes served by threads (runserver) may push at the same time as the worker's
        # greenlet; under gevent the lock is gevent's, and nothing inside it yields.
        self._lock = threading.Lock()

    def push(self, current: Totals, connections: int) -> None:
        """Add to each counter what *current* gained since the last push; set the connections gauge."""
        with self._lock:
            pushed = self._pushed
            for key, value in current.items():
                gained = value - pushed.get(key, 0)
                if gained == 0:
                    continue
                pushed[key] = value
                if gained > 0:
                    name, label = key
                    counter = self.counters[name]
                    (counter.labels(label) if label else counter).inc(gained)
            self.connections.set(connections)
            self._push_latencies()

    def _push_latencies(self) -> None:
        """Add the handshakes :attr:`latencies` counted since the last push to the histogram."""
        counted, pushed = self.latencies, self._pushed_latencies
        histogram = self.handshake_duration
        for index, count in enumerate(counted.counts):
            gained = count - pushed.counts[index]
            if gained:
                histogram._buckets[index].inc(gained)
                pushed.counts[index] = count
        total = counted.total
        if total != pushed.total:
            histogram._sum.inc(total - pushed.total)
            pushed.total = total


_exporter: Exporter | None = None
_setup_lock = threading.Lock()
#: gunicorn's ``--workers``, known once :func:`start_worker` ran (for the view's warning).
worker_count = 1
_warned_single_process = False


def import_prometheus() -> Any:
    """``prometheus_client``; ``ImproperlyConfigured`` naming the extra to install if it is missing.

    Also refuses a ``prometheus_client`` imported before ``PROMETHEUS_MULTIPROC_DIR`` was set:
    it would keep each worker's values in memory, where no scrape adds them up.
    """
    from django.core.exceptions import ImproperlyConfigured

    try:
        import prometheus_client
        from prometheus_client import values
    except ImportError:
        raise ImproperlyConfigured(
            "django_websocket.metrics needs prometheus_client: pip install 'django-websocket-views[metrics]'."
        ) from None
    if multiprocess_dir() and not getattr(values.ValueClass, "_multiprocess", False):
        raise ImproperlyConfigured(
            f"{MULTIPROC_ENV} is set but prometheus_client was imported before it was: set it in "
            "the environment gunicorn starts with, not in settings.py."
        )
    return prometheus_client


def setup() -> Exporter:
    """This process's :class:`Exporter`, created once; from then on handshake latencies are observed.

    Raises ``ImproperlyConfigured`` without ``prometheus_client`` (see :func:`import_prometheus`).
    """
    global _exporter
    with _setup_lock:
        if _exporter is None:
            _exporter = Exporter()
            counters.observe_handshake = _exporter.observe_handshake
    return _exporter


def sync() -> None:
    """Push this process's totals and open sockets into ``prometheus_client`` (see :class:`Exporter`)."""
    setup().push(totals(), open_connection_count())


def start_worker(workers: int = 1) -> bool:
    """Called once by our gunicorn worker after loading the application: sync every :data:`SYNC_INTERVAL` s.

    Does nothing (``False``) without ``prometheus_client``: then the project does not export
    metrics, and the integers cost nothing. In multiprocess mode, first removes the gauge files
    of processes that no longer exist (a worker killed without the ``child_exit`` hook).
    A metrics setup that fails (``prometheus_client`` imported before ``PROMETHEUS_MULTIPROC_DIR``
    was set, a directory that does not exist) is logged as an error and the worker serves on
    without metrics: the view then raises the same error, sockets are not refused for it.
    """
    from django.core.exceptions import ImproperlyConfigured

    global worker_count
    if not available():
        return False
    worker_count = workers
    try:
        setup()
    except (ImproperlyConfigured, OSError) as error:
        logger.error("websocket metrics are off in this worker: %s", error)
        return False
    if multiprocess_dir():
        remove_dead_gauges()
    import gevent

    gevent.spawn(_sync_forever)
    return True


def stop_worker() -> None:
    """Called when our worker exits: a last push, then its live gauge file goes (multiprocess mode)."""
    if _exporter is None:
        return
    try:
        sync()
        if multiprocess_dir():
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
    except Exception:  # the worker is exiting: say why the numbers may be off, and go on
        logger.exception("websocket metrics: the last sync of this worker failed")


def _sync_forever() -> None:
    import gevent

    while True:
        gevent.sleep(SYNC_INTERVAL)
        try:
            sync()
        except Exception:  # a full disk, a removed directory: log it, keep serving sockets
            logger.exception("websocket metrics: sync failed")


def remove_dead_gauges(path: str | None = None) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; return their pids.

    ``prometheus_client`` names them ``gauge_live<mode>_<pid>.db``. A pid is dead when
    ``kill(pid, 0)`` says there is no such process (another user's live process says "not
    permitted": kept). The directory must belong to this gunicorn alone.
    """
    from prometheus_client import multiprocess

    path = path or multiprocess_dir()
    if not path:
        return []
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        try:
            pid = int(os.path.basename(name)[: -len(".db")].rsplit("_", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not is_alive(pid):
            dead.add(pid)
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def metrics_view(request: Any) -> Any:
    """The Prometheus text exposition of every worker's metrics (``GET``/``HEAD``; else 405).

    Syncs this process first. With ``PROMETHEUS_MULTIPROC_DIR``, the sum of the files of every
    worker (a fresh registry per scrape, as ``prometheus_client`` prescribes); without it, this
    process's default registry (with ``prometheus_client``'s process and platform collectors).
    Raises ``ImproperlyConfigured`` without ``prometheus_client``. It checks no permission:
    restrict access where it is routed (``docs/howto/metrics.md``).
    """
    from django.http import HttpResponse, HttpResponseNotAllowed

    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    prometheus = import_prometheus()
    sync()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = prometheus.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        _warn_single_process()
        registry = prometheus.REGISTRY
    return HttpResponse(prometheus.generate_latest(registry), content_type=prometheus.CONTENT_TYPE_LATEST)


def _warn_single_process() -> None:
    global _warned_single_process
    if worker_count > 1 and not _warned_single_process:
        _warned_single_process = True
        logger.warning(
            "websocket metrics served without %s under %d gunicorn workers: each scrape shows "
            "the one worker that answered it (see docs/howto/metrics.md)",
            MULTIPROC_ENV, worker_count,
        )  # fmt: skip


def gunicorn_on_starting(server: Any) -> None:
    """gunicorn's ``on_starting`` hook: empty ``PROMETHEUS_MULTIPROC_DIR`` of a previous run's files.

    Runs in the master before any worker exists; removes only ``*.db`` files.
    """
    path = multiprocess_dir()
    if path and os.path.isdir(path):
        for name in glob.glob(os.path.join(path, "*.db")):
            os.remove(name)


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: the exited worker's live gauges stop counting at once."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
