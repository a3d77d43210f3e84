"""Real servers for integration tests: gunicorn processes on 127.0.0.1, port 0.

Each server binds port 0 and the real port is read from gunicorn's own
"Listening at" log line, so tests never race for a fixed port. Servers are
context managers: the process group is killed on exit, even when the test fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")

OUR_WORKER = "django_websocket.workers.GeventWebSocketWorker"
STOCK_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"


class Server:
    """A running gunicorn: ``port``, ``url(path)``, ``ws_url(path)``, and its log so far."""

    def __init__(self, process: subprocess.Popen, port: int, log: list[bytes]) -> None:
        self.process = process
        self.port = port
        self._log = log

    @property
    def log(self) -> str:
        """Everything gunicorn wrote to stderr so far (error log and access log)."""
        return b"".join(self._log).decode("utf-8", "replace")

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        """Return the first match of regex *pattern* in the log; raise ``AssertionError`` after *timeout*."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log)
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not in server log:\n{self.log}")

    def log_sections(self) -> list[tuple[str, str]]:
        """What a failing test's report shows of this server (see ``conftest.pytest_runtest_makereport``)."""
        return [(f"gunicorn log (port {self.port}, pid {self.process.pid})", tail(self.log))]


#: Lines of a log that a failing test's report shows: the last ones, where a failure usually is.
TAIL_LINES = 200


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last *lines* lines of *text*, after a note of how many were left out."""
    kept = text.splitlines(keepends=True)
    if len(kept) <= lines:
        return text
    return f"[{len(kept) - lines} earlier lines left out]\n" + "".join(kept[-lines:])


@contextmanager
def gunicorn(
    app: str = "test_project.wsgi:websocket",
    *,
    worker: str = OUR_WORKER,
    settings: str = "tests.settings",
    workers: int = 1,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 20.0,
) -> Iterator[Server]:
    """Start ``gunicorn -k WORKER APP -b 127.0.0.1:0`` and yield a :class:`Server`.

    The process runs in its own process group, which is killed on exit.
    Raises ``RuntimeError`` (with the log) if gunicorn is not listening within *startup_timeout*.
    """
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker,
        app,
        "-b",
        "127.0.0.1:0",
        "-w",
        str(workers),
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        "--log-level",
        "info",
        "--graceful-timeout",
        "3",
        "--no-control-socket",
        *extra_args,
    ]
    process_env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, "PYTHONUNBUFFERED": "1"}
    process_env.update(env or {})
    process = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log: list[bytes] = []
    listening = threading.Event()
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            log.append(line)
            match = LISTENING.search(line)
            if match and not port:
                port.append(int(match.group(1)))
                listening.set()
        listening.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        listening.wait(startup_timeout)
        if not port:
            raise RuntimeError("gunicorn did not start:\n" + b"".join(log).decode("utf-8", "replace"))
        server = Server(process, port[0], log)
        _wait_until_booted(server, workers, startup_timeout)
        yield server
    finally:
        stop_process(process)
        reader.join(timeout=5)


def reload(server: Server) -> tuple[str, str]:
    """Reload *server* as a deployment would: SIGHUP to its master (our own child process).

    gunicorn boots a new worker, then stops the old one with SIGTERM (our worker waits for the
    new one, then closes its sockets with 1012: a service restart). Returns the old and the
    new worker's pid, once the old one has exited. For a one-worker server.
    """
    old = server.wait_for_log(r"Booting worker with pid: (\d+)").group(1)
    os.kill(server.process.pid, signal.SIGHUP)
    new = server.wait_for_log(rf"Booting worker with pid: (?!{old}\b)(\d+)", timeout=20).group(1)
    server.wait_for_log(rf"Worker exiting \(pid: {old}\)", timeout=20)
    return old, new


def _wait_until_booted(server: Server, workers: int, timeout: float) -> None:
    """Wait until *workers* workers have logged "Booting worker", so the first request is served."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log.count("Booting worker") >= workers:
            return
        if server.process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError("gunicorn workers did not boot:\n" + server.log)


def stop_process(process: subprocess.Popen) -> None:
    """Stop gunicorn's process group: SIGTERM, then SIGKILL after a grace period."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass
    if process.stdout is not None:
        process.stdout.close()
