"""The blocked-loop monitor: in-process against the real gevent hub, then in a real gunicorn worker.

This test process is not monkey-patched, so ``time.sleep`` blocks the gevent loop exactly as a
blocking driver does in the worker. Those sleeps are the blocking under test, never a way to
wait: the tests wait by running the loop until a report arrives, with a deadline.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator

import gevent
import greenlet
import pytest
from django.core.checks import run_checks
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings
from websockets.sync.client import connect

from django_websocket.blocking import Monitor, counters, serving, start_monitor
from tests.servers import gunicorn

THRESHOLD = 0.1
#: Six thresholds: the monitor thread looks about 24 times while it lasts.
STALL = 0.6


class Records(logging.Handler):
    """Collects the monitor's records (not, say, the hub's retries left over from another test)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("event loop blocked"):
            self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@pytest.fixture
def reports() -> Iterator[Records]:
    """WARNING records of the ``django_websocket`` logger (test_project's LOGGING stops propagation)."""
    handler = Records()
    logger = logging.getLogger("django_websocket")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def monitor() -> Iterator[Callable[..., Monitor]]:
    """Start a :class:`Monitor` on this thread's hub; it is stopped after the test."""
    started: list[Monitor] = []

    def start(threshold: float = THRESHOLD) -> Monitor:
        running = Monitor(threshold)
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def block(seconds: float) -> None:
    """Hold the loop as a blocking driver would."""
    time.sleep(seconds)


def run_loop_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the hub run (so it logs pending reports) until *condition* holds; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


def test_a_stall_is_logged_once_with_its_length_and_stack(monitor, reports):
    """One stall of six thresholds: one WARNING, its total length, the stack ending at the blocking call."""
    monitor()
    events, seconds = counters.events, counters.seconds
    gevent.spawn(block, STALL).join()
    run_loop_until(lambda: reports.records)
    # Every report of a stall is handed to the hub while the stall lasts, so all of them are
    # logged in the same turn of the loop: a second one would be in the records already.
    assert len(reports.records) == 1
    message = reports.messages[0]
    blocked = float(re.match(r"event loop blocked for ([\d.]+) s \(threshold 0\.1 s\):\n", message)[1])
    assert STALL <= blocked < STALL + 1
    assert message.splitlines()[-2:] == [
        f'  File "{__file__}", line {block.__code__.co_firstlineno + 2}, in block',
        "    time.sleep(seconds)",
    ]
    assert counters.events == events + 1
    assert STALL <= counters.seconds - seconds < STALL + 1


def test_each_stall_is_one_event(monitor, reports):
    """Two stalls separated by a switch are two reports, not one and not dozens."""
    monitor()
    events = counters.events
    gevent.spawn(block, 0.3).join()
    gevent.spawn(block, 0.3).join()
    run_loop_until(lambda: len(reports.records) >= 2)
    assert len(reports.records) == 2
    assert counters.events == events + 2


def test_an_idle_or_cooperative_loop_is_not_reported(monitor, reports):
    """Waiting for I/O in the hub and greenlets that yield often are not stalls."""
    monitor()
    events = counters.events

    def cooperative() -> None:
        for _ in range(30):
            time.sleep(THRESHOLD / 10)  # under the threshold between two switches
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(cooperative), gevent.spawn(gevent.sleep, 5 * THRESHOLD)])
    gevent.sleep(0)  # a report handed over in the last moments would be logged now
    assert reports.records == []
    assert counters.events == events


def test_a_report_names_the_request_of_the_greenlet(monitor, reports):
    """Requests are labelled through Django's request signals; greenlets they spawn inherit the path."""
    monitor()

    def request() -> None:
        request_started.send(sender=None, environ={"PATH_INFO": "/ws/report/", "SCRIPT_NAME": "/app"})
        try:
            gevent.spawn(block, 0.3).join()
        finally:
            request_finished.send(sender=None)
        block(0.3)  # after the request: no path

    # Django's close_old_connections() listens to both signals; this test has no database.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        gevent.spawn(request).join()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    run_loop_until(lambda: len(reports.records) >= 2)
    paths = [
        re.match(r"event loop blocked for [\d.]+ s \(threshold 0\.1 s\)( in \S+)?:", message)[1]
        for message in reports.messages
    ]
    assert paths == [" in /app/ws/report/", None]


def test_serving_labels_other_work(monitor, reports):
    """``serving(path)`` names the path in reports, and restores the previous label on exit."""
    monitor()

    def task() -> None:
        with serving("/outer/"):
            with serving("/inner/"):
                block(0.3)
            gevent.sleep(0)
            block(0.3)

    gevent.spawn(task).join()
    run_loop_until(lambda: len(reports.records) >= 2)
    assert [re.search(r" in (\S+):", message)[1] for message in reports.messages] == ["/inner/", "/outer/"]


def test_the_tracer_chains_to_the_previous_one_and_is_restored(monitor):
    """A tracer installed before (another tool's) keeps seeing switches, and is back after stop()."""
    events: list[str] = []

    def previous(event: str, args: tuple) -> None:
        events.append(event)

    original = greenlet.settrace(previous)
    try:
        running = monitor()
        gevent.sleep(0)
        assert "switch" in events
        running.stop()
        running.stop()  # a second stop does nothing
        assert greenlet.gettrace() is previous
    finally:
        greenlet.settrace(original)


def test_start_monitor_refuses_a_threshold_that_is_not_positive():
    """``start_monitor(0)`` raises before installing anything."""
    with pytest.raises(ValueError, match="positive number of seconds"):
        start_monitor(0)
    assert greenlet.gettrace() is None


@pytest.mark.parametrize("value", [0, -1, "0.5", True, float("nan"), float("inf")])
def test_check_e019_refuses_a_bad_threshold(value):
    """E019 names the setting when it is not None or a positive number of seconds."""
    with override_settings(WEBSOCKET_BLOCKED_LOOP_THRESHOLD=value):
        errors = [
            error for error in run_checks(tags=["django_websocket"]) if error.id == "django_websocket.E019"
        ]
    assert len(errors) == 1
    assert "WEBSOCKET_BLOCKED_LOOP_THRESHOLD" in errors[0].msg


@pytest.mark.parametrize("value", [None, 0.5, 2])
def test_check_e019_accepts_none_and_positive_numbers(value):
    """No E019 for the default (off) or a positive threshold."""
    with override_settings(WEBSOCKET_BLOCKED_LOOP_THRESHOLD=value):
        assert not [
            error for error in run_checks(tags=["django_websocket"]) if error.id == "django_websocket.E019"
        ]


#: One report of the test view's stall: the path, then the stack ending at its blocking call.
VIEW_REPORT = re.compile(
    r"event loop blocked for ([\d.]+) s \(threshold 0\.1 s\) in /blocking/:\n"
    r"(?:  .*\n)*?    blocking_sleep\(float\(message\)\)\n"
)


def test_the_worker_logs_one_line_per_blocking_event_with_the_path(server_db):
    """Under gunicorn, each stall of a websocket view is one WARNING naming its path, however long."""
    env = {"DJANGO_DB_PATH": server_db["path"], "WEBSOCKET_BLOCKED_LOOP_THRESHOLD": str(THRESHOLD)}
    with gunicorn(env=env) as server:
        server.wait_for_log(r"blocked-loop monitor on: stalls over 0\.1 s are logged")
        with connect(server.ws_url("/blocking/")) as websocket:
            for seconds in ("0", str(STALL), "0", "0.3", "0"):
                websocket.send(seconds)
                assert websocket.recv(timeout=10) == "unblocked"
            server.wait_for_log(VIEW_REPORT.pattern + r"(?:.|\n)*" + VIEW_REPORT.pattern)
        stalls = [float(seconds) for seconds in VIEW_REPORT.findall(server.log)]
    # Two stalls, two reports: about 24 and 12 looks at a blocked loop said nothing more.
    assert len(stalls) == 2
    assert STALL <= stalls[0] < STALL + 1
    assert 0.3 <= stalls[1] < 1.3
