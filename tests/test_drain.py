"""django_websocket.drain: readiness files, younger siblings from /proc, batched closes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from django_websocket import drain


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []
    yield started
    for child in started:
        child.kill()
        child.wait()


def test_younger_siblings_are_the_children_started_later(children):
    """Of this process's children, those started after *pid* (by /proc start time)."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("no /proc children list on this system")
    children.append(sleeper())
    time.sleep(0.05)  # distinct start times: /proc counts clock ticks (10 ms)
    children.append(sleeper())
    older, younger = children
    assert drain.younger_siblings(os.getpid(), older.pid) == [younger.pid]
    assert drain.younger_siblings(os.getpid(), younger.pid) == []
    assert drain.younger_siblings(999_999_999, older.pid) == []  # no such master: wait for no one


def test_waiting_ends_when_every_replacement_is_ready_or_gone(children, tmp_path, monkeypatch):
    """wait_until_ready(): True once each marked itself ready (or exited); False after the timeout."""
    monkeypatch.setattr(drain.tempfile, "gettempdir", lambda: str(tmp_path))
    children.append(sleeper())
    children.append(sleeper())
    ready, gone = children
    assert not drain.wait_until_ready(1, [ready.pid, gone.pid], timeout=0.1)
    marker = drain.mark_ready(1, ready.pid)
    gone.kill()
    gone.wait()
    assert drain.wait_until_ready(1, [ready.pid, gone.pid], timeout=5)
    assert marker == tmp_path / "django_websocket-1" / str(ready.pid)


def test_closes_are_spread_over_the_window():
    """100 sockets over 0.5 s: the first batch at once, the last about 0.5 s later, each closed once."""
    closed: list[tuple[object, int, str, float]] = []
    started = time.monotonic()

    def close(socket, code, reason):
        closed.append((socket, code, reason, time.monotonic() - started))

    drain.close_in_batches(list(range(100)), 1012, "service restart", 0.5, close)
    assert sorted(item[0] for item in closed) == list(range(100))
    assert {(code, reason) for _, code, reason, _ in closed} == {(1012, "service restart")}
    times = [item[3] for item in closed]
    assert min(times) < 0.05 and 0.35 < max(times) < 1.5


def test_a_shutdown_waits_for_no_one_and_says_going_away():
    """Without younger siblings drain() closes at once with 1001."""
    closed = []
    started = time.monotonic()
    drain.drain(999_999_999, os.getpid(), lambda: ["a"], lambda *args: closed.append(args), 1.0, 10.0)
    assert closed == [("a", 1001, "server shutting down")]
    assert time.monotonic() - started < 0.5


def test_a_busy_worker_still_closes_within_the_window(monkeypatch):
    """When each sleep lasts 0.2 s instead of POLL (closing views keep the worker busy), the
    batches grow: 100 sockets over 1 s take 5 sleeps (by the clock), not 20 (by the count)."""
    clock = [0.0]
    sleeps = []

    def slow_sleep(seconds):
        sleeps.append(seconds)
        clock[0] += 0.2

    monkeypatch.setattr(drain.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(drain.gevent, "sleep", slow_sleep)
    closed = []
    drain.close_in_batches(list(range(100)), 1001, "", 1.0, lambda socket, *_: closed.append(socket))
    assert closed == list(range(100))
    assert len(sleeps) == 5


def test_wait_closed_returns_the_sockets_still_open():
    """wait_closed(): at once when none is open; after the timeout, those still open."""
    assert drain.wait_closed(["a", "b"], lambda socket: False, timeout=5) == []
    assert drain.wait_closed(["a", "b"], lambda socket: socket == "b", timeout=0.1) == ["b"]
