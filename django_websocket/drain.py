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
   spread out too.

Readiness is a file per worker in a directory named after the master's pid, in the system
temp directory. Sibling workers are found in ``/proc/<master>/task/<master>/children``
(Linux); elsewhere a worker waits for no one.
"""

from __future__ import annotations

import logging
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
    """Close *sockets* with *code* in batches every ``POLL`` seconds over *window*; return when all are.

    *close(socket, code, reason)* closes one (it runs in a greenlet of its own).
    """
    steps = max(1, int(window / POLL))
    per_step = max(1, -(-len(sockets) // steps))  # ceiling division
    closing = []
    for start in range(0, len(sockets), per_step):
        closing += [gevent.spawn(close, socket, code, reason) for socket in sockets[start : start + per_step]]
        if start + per_step < len(sockets):
            gevent.sleep(POLL)
    gevent.joinall(closing)


def drain(
    master_pid: int,
    pid: int,
    sockets: Callable[[], Sequence[Any]],
    close: Callable[[Any, int, str], Any],
    window: float,
    timeout: float,
) -> None:
    """Hand over this worker's sockets (see the module's docstring); return when all are closed."""
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
    close_in_batches(list(sockets()), code, reason, window, close)
