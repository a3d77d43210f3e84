"""A blocked event loop made visible: ``WEBSOCKET_BLOCKED_LOOP_THRESHOLD``.

One gevent hub serves every socket of a worker, so code that runs without yielding to it
(a blocking database driver, ``time.sleep`` from an unpatched module, a long computation)
stalls them all. With the setting on, the worker logs each such stall once, when the loop
runs again, as one WARNING record on the ``django_websocket`` logger::

    event loop blocked for 1.02 s (threshold 0.5 s) in /ws/report/:
      File ".../views.py", line 12, in report
        rows = cursor.fetchall()

How, and why this way rather than gevent's own monitor thread (which prints the whole
greenlet tree on every check while the loop stays blocked: tens of thousands of lines):

- a greenlet switch tracer (``greenlet.settrace``, chained to any tracer installed
  before) records when the hub's thread last switched greenlets, and to which;
- a real OS thread wakes four times per threshold. When the greenlet last switched to is
  not the hub (the hub waiting for I/O is idle, not blocked) and has been running longer
  than the threshold, it takes that thread's stack and hands the report to the hub with
  ``loop.run_callback_threadsafe``. When the loop runs again the hub measures the whole
  stall and a greenlet logs it. One report per event: none again before the next switch;
- the thread never logs itself: after monkey-patching, logging's locks are gevent's,
  which must not be taken from a foreign thread.

A stall is reported when it lasts longer than the threshold and, checks being a quarter
of it apart, always when it lasts 1.25 times the threshold. Each report names the path of
the request whose greenlet was running (or that spawned it): requests are labelled
through Django's ``request_started`` and ``request_finished`` signals while a monitor
runs, and :func:`serving` labels other work. :data:`counters` keeps the totals for metrics.

Importing this module has no effect; :func:`start_monitor` (called by the worker when the
setting is set) installs the tracer and starts the thread.
"""

from __future__ import annotations

import logging
import sys
import traceback
import weakref
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import gevent
import greenlet
from gevent import get_hub
from gevent.monkey import get_original

logger = logging.getLogger("django_websocket")

# The worker is monkey-patched: the monitor needs a real thread and a real lock to sleep on.
_start_new_thread = get_original("_thread", "start_new_thread")
_allocate_lock = get_original("_thread", "allocate_lock")

#: Innermost frames shown in a report, ending at the blocking call.
STACK_DEPTH = 6
#: Checks per threshold: a stall of (1 + 1/CHECKS) x threshold is always caught.
CHECKS = 4


@dataclass
class BlockedLoopCounters:
    """Totals of this process, for metrics: read them, never write them.

    ``events`` counts stalls as soon as they are detected (so a stall that never ends
    counts); ``seconds`` adds each stall's whole length when the loop runs again.
    """

    events: int = 0
    seconds: float = 0.0


#: This process's blocked-loop totals (zero while no monitor runs).
counters = BlockedLoopCounters()

#: greenlet -> path of the request it serves. The hub's thread writes, the monitor thread reads.
_paths: weakref.WeakKeyDictionary[greenlet.greenlet, str] = weakref.WeakKeyDictionary()


class serving:  # noqa: N801 - a context manager used like a function, as it always was
    """Within the block, reports of the current greenlet (and those it spawns) name *path*.

    Requests handled by Django are labelled automatically while a monitor runs; use this
    for other long-lived work. The previous label is restored on exit.
    """

    # A class, not a @contextmanager generator: a websocket's greenlet keeps its block open
    # for the socket's life, and a generator with its frame is about 0.3 KB more per socket.
    __slots__ = ("path", "_current", "_previous")

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        current = self._current = greenlet.getcurrent()
        self._previous = _paths.get(current)
        _paths[current] = self.path

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is None:
            _paths.pop(self._current, None)
        else:
            _paths[self._current] = self._previous


def path_of(running: Any) -> str | None:
    """The path *running* serves, else that of the greenlet which spawned it (recursively), else ``None``."""
    while running is not None:
        path = _paths.get(running)
        if path is not None:
            return path
        spawner = getattr(running, "spawning_greenlet", None)  # a weakref, on gevent's Greenlet
        running = spawner() if spawner is not None else None
    return None


def _label_request(sender: Any, environ: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if environ is not None:
        from django.core.handlers.wsgi import get_path_info, get_script_name

        # Django's own request.path, built the way WSGIRequest builds it.
        script_name = get_script_name(environ).rstrip("/")
        _paths[greenlet.getcurrent()] = f"{script_name}/{get_path_info(environ).replace('/', '', 1)}"


def _unlabel_request(sender: Any, **kwargs: Any) -> None:
    _paths.pop(greenlet.getcurrent(), None)


class Monitor:
    """Report, once per event, every stall of the calling thread's gevent loop over *threshold* s.

    Create, :meth:`start` and :meth:`stop` it in the thread whose hub it watches (greenlet
    tracers are per thread). The worker uses one per process through :func:`start_monitor`.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.hub = get_hub()
        # (time, greenlet) of the last switch, one tuple so the monitor thread reads a consistent pair.
        self._last: tuple[float, Any] = (perf_counter(), greenlet.getcurrent())
        self._reported = -1.0  # the switch time of the stall reported last
        self._previous_tracer: Any = None
        self._stopping = _allocate_lock()  # held while running: the thread sleeps on it
        self._running = False

    def start(self) -> None:
        """Install the tracer, label requests, start the monitor thread. Call once."""
        from django.core.signals import request_finished, request_started

        request_started.connect(_label_request, dispatch_uid=__name__)
        request_finished.connect(_unlabel_request, dispatch_uid=__name__)
        self._last = (perf_counter(), greenlet.getcurrent())
        self._previous_tracer = greenlet.settrace(self._trace)
        self._stopping.acquire()
        self._running = True
        _start_new_thread(self._watch, ())

    def stop(self) -> None:
        """Stop the thread (it exits at once), restore the previous tracer if ours is still installed.

        Stopping a stopped (or never started) monitor does nothing.
        """
        from django.core.signals import request_finished, request_started

        if not self._running:
            return
        self._running = False
        if greenlet.gettrace() == self._trace:
            greenlet.settrace(self._previous_tracer)
        request_started.disconnect(dispatch_uid=__name__)
        request_finished.disconnect(dispatch_uid=__name__)
        self._stopping.release()

    def _trace(self, event: str, args: tuple[Any, Any]) -> None:
        # Runs on every switch of the hub's thread: keep it to one clock read and one store.
        # 'switch' and 'throw', the only events, both carry (origin, target).
        self._last = (perf_counter(), args[1])
        if self._previous_tracer is not None:
            self._previous_tracer(event, args)

    def _watch(self) -> None:
        """The monitor thread: check until :meth:`stop` releases the lock."""
        while not self._stopping.acquire(timeout=self.threshold / CHECKS):
            self._check()

    def _check(self) -> None:
        """In the monitor thread: report a stall past the threshold, unless reported already."""
        since, running = self._last
        if running is self.hub or since == self._reported or perf_counter() - since <= self.threshold:
            return
        frame = sys._current_frames().get(self.hub.thread_ident)
        if frame is None:  # the hub's thread has exited
            return
        # Summaries without source lines: the hub reads those when it logs, not this thread.
        stack = traceback.StackSummary.extract(
            traceback.walk_stack(frame), limit=STACK_DEPTH, lookup_lines=False
        )
        del frame
        # Read now, while the greenlet still serves the request: the label may be gone when the hub logs.
        path = path_of(running)
        if self._last[0] != since:  # the loop moved on while we looked: the stack is not the stall's
            return
        self._reported = since
        counters.events += 1
        loop = self.hub.loop
        if loop is not None:  # None once the hub is destroyed, as the process ends
            loop.run_callback_threadsafe(self._report, since, path, stack)

    def _report(self, since: float, path: str | None, stack: traceback.StackSummary) -> None:
        """In the hub, when the loop runs again: count the stall's length, have it logged.

        The record is written by a greenlet of its own: a log handler's lock may be held by a
        greenlet writing to a socket, and the hub must never wait for it.
        """
        blocked = perf_counter() - since
        counters.seconds += blocked
        gevent.spawn_raw(self._log, blocked, path, stack)

    def _log(self, blocked: float, path: str | None, stack: traceback.StackSummary) -> None:
        frames = "".join(traceback.StackSummary.from_list(list(reversed(stack))).format())
        logger.warning(
            "event loop blocked for %.2f s (threshold %s s)%s:\n%s",
            blocked,
            self.threshold,
            f" in {path}" if path else "",
            frames.rstrip("\n"),
        )


_monitor: Monitor | None = None


def start_monitor(threshold: float) -> None:
    """Watch this process's event loop from now on; later calls do nothing.

    Call it in the thread running the gevent hub (the worker's main thread), after
    monkey-patching. *threshold* is in seconds and must be positive.
    """
    global _monitor
    if _monitor is not None:
        return
    if not threshold > 0:
        raise ValueError(f"threshold must be a positive number of seconds, not {threshold!r}")
    _monitor = Monitor(threshold)
    _monitor.start()
    logger.info("blocked-loop monitor on: stalls over %s s are logged", threshold)
