"""How a stopping worker hands its sockets over: wait for its replacements, then close in batches.

On a reload (SIGHUP to gunicorn's master) the master forks the new workers and at once
sends SIGTERM to the old ones, while the new ones are still importing Django. Closing every
socket then sends every client to a listener nobody serves yet, all at the same moment. So
a worker told to stop (:func:`drain`):

1. stops accepting (the caller does);
2. if younger sibling workers exist (a reload: they were forked before our SIGTERM), waits
   until each has said it is ready (:func:`mark_ready`, after its application loaded), at
   most ``timeout`` seconds — a plain shutdown has no younger siblings and waits for nothing;
3. closes its sockets in batches spread over ``window`` seconds, with 1012 (service
   restart) on a reload and 1001 (going away) on a shutdown, so the reconnections arrive
   spread out too. Each close is started by the draining greenlet itself, without waiting
   (a close frame written at once); the peers' answers are awaited together afterwards, for
   a bounded time. With a greenlet per socket waiting for its peer's close instead, 19,900
   sockets on one worker stretched a one-second window over 8–15 s (``bench/shutdown.py``).

Readiness is a file per worker in a directory named after the master's pid, in the system
temp directory. Sibling workers are found in ``/proc/<master>/task/<master>/children``
(Linux); elsewhere a worker waits for no one.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gevent

from .processes import is_alive

logger = logging.getLogger("django_websocket")

#: Close codes (RFC 6455 §7.4.1 and IANA): the server restarts / goes away.
SERVICE_RESTART = 1012
GOING_AWAY = 1001
#: Seconds between two checks for the replacements' readiness, and between two batches.
POLL = 0.05


def ready_directory(master_pid: int) -> Path:
    """Where the workers of the gunicorn master *master_pid* say they are ready."""
    return Path(tempfile.gettempdir()) / f"django_websocket-{master_pid}"


def mark_ready(master_pid: int, pid: int) -> Path:
    """Say worker *pid* of *master_pid* serves now; return the file (remove it at exit)."""
    directory = ready_directory(master_pid)
    directory.mkdir(mode=0o700, exist_ok=True)
    marker = directory / str(pid)
    marker.touch()
    return marker


def younger_siblings(master_pid: int, pid: int) -> list[int]:
    """The other children of *master_pid* started after *pid*: on a reload, its replacements."""
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        mine = _start_time(pid)
        return [int(child) for child in children if int(child) != pid and _start_time(int(child)) > mine]
    except (OSError, ValueError):
        return []  # not Linux, or a child exited meanwhile: wait for no one


def _start_time(pid: int) -> int:
    """The process's start time, in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def wait_until_ready(master_pid: int, pids: Sequence[int], timeout: float) -> bool:
    """Wait until every worker of *pids* marked itself ready, or exited; False after *timeout*."""
    directory = ready_directory(master_pid)
    deadline = time.monotonic() + timeout
    while True:
        waiting = [pid for pid in pids if not (directory / str(pid)).exists() and is_alive(pid)]
        if not waiting:
            return True
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(POLL)


def close_in_batches(
    sockets: Sequence[Any], code: int, reason: str, window: float, close: Callable[[Any, int, str], Any]
) -> None:
    """Start closing *sockets* with *code*, in batches every ``POLL`` seconds over *window*.

    *close(socket, code, reason)* starts one closing handshake and must not block: it runs
    here, in the draining greenlet, so 20,000 sockets cost no greenlet each (a socket that
    needs one to close, its close does spawn). Returns once the last batch has started:
    :func:`wait_closed` waits for the handshakes.
    """
    total, done = len(sockets), 0
    started = time.monotonic()
    while done < total:
        # Due by the clock, not a fixed count per wake-up: when the sockets closed so far keep
        # the worker busy (each view ends, its request finishes), a sleep of POLL lasts longer,
        # and the next batch is bigger, so the last close frame still goes out within *window*.
        share = 1.0 if window <= 0 else min(1.0, (time.monotonic() - started + POLL) / window)
        due = max(done + 1, math.ceil(total * share))
        for socket in sockets[done:due]:
            close(socket, code, reason)
        done = due
        if done < total:
            gevent.sleep(POLL)


def wait_closed(sockets: Sequence[Any], is_open: Callable[[Any], bool], timeout: float) -> list[Any]:
    """Wait until none of *sockets* ``is_open``, at most *timeout* seconds; return those still open.

    Polls every ``POLL`` seconds (a pass over 20,000 sockets costs a few milliseconds), rather
    than a waiter per socket.
    """
    deadline = time.monotonic() + timeout
    left = [socket for socket in sockets if is_open(socket)]
    while left and time.monotonic() < deadline:
        gevent.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        left = [socket for socket in left if is_open(socket)]
    return left


def drain(
    master_pid: int,
    pid: int,
    sockets: Callable[[], Sequence[Any]],
    close: Callable[[Any, int, str], Any],
    window: float,
    timeout: float,
    finish: Callable[[Sequence[Any], int, str], Any] | None = None,
) -> None:
    """Hand over this worker's sockets (see the module's docstring).

    *close* starts closing one socket without blocking (:func:`close_in_batches`); *finish*,
    called with the sockets, the code and the reason after the last batch, waits for their
    closing handshakes and ends the stragglers (see ``workers.finish_closing``).
    """
    replacements = younger_siblings(master_pid, pid)
    code, reason = GOING_AWAY, "server shutting down"
    if replacements:
        code, reason = SERVICE_RESTART, "service restart"
        started = time.monotonic()
        if wait_until_ready(master_pid, replacements, timeout):
            waited = time.monotonic() - started
            logger.info("reload: %d new workers ready after %.2f s", len(replacements), waited)
        else:
            logger.warning("reload: new workers not ready after %.1f s; closing sockets anyway", timeout)
    closing = list(sockets())
    close_in_batches(closing, code, reason, window, close)
    if finish is not None:
        finish(closing, code, reason)
