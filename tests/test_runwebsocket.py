"""``manage.py runwebsocket``: HTTP and websockets on one port, with and without the autoreloader.

The server runs as a real subprocess (``test_project/manage.py``, ``tests.settings``, a
migrated temporary SQLite file) on a port picked by binding port 0 and releasing it,
retried if another process takes it first. Its process group is killed after each
test, even when the test fails.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from django.core.management import call_command
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from django_websocket.management.commands.runwebsocket import Command
from tests.servers import ROOT, Server, stop_process

MANAGE = ROOT / "test_project" / "manage.py"
STARTED = re.compile(r"Starting development server at http://127\.0\.0\.1:(\d+)/")
PORT_IN_USE = "That port is already in use."
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    """A port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[bytes]]:
    """Start ``manage.py ARGS`` in its own process group; its output is collected in the returned list."""
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log: list[bytes] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            log.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, log


def wait_started(process: subprocess.Popen, log: list[bytes], timeout: float = STARTUP_TIMEOUT) -> int | None:
    """Return the port from the "Starting development server" line, or ``None`` if the process exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = STARTED.search(b"".join(log).decode("utf-8", "replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            return None
        time.sleep(0.02)
    raise AssertionError("runwebsocket did not start:\n" + b"".join(log).decode("utf-8", "replace"))


@contextmanager
def runwebsocket(db_path: str, *options: str, attempts: int = 5) -> Iterator[Server]:
    """Run ``manage.py runwebsocket 127.0.0.1:PORT OPTIONS`` and yield it as a :class:`Server`."""
    for _ in range(attempts):
        port = free_port()
        process, log = start(["runwebsocket", f"127.0.0.1:{port}", *options], {"DJANGO_DB_PATH": db_path})
        try:
            started = wait_started(process, log)
            if started is not None:
                assert started == port
                yield Server(process, port, log)
                return
        finally:
            stop_process(process)
        output = b"".join(log).decode("utf-8", "replace")
        if PORT_IN_USE not in output:
            raise AssertionError(f"runwebsocket exited with {process.returncode}:\n{output}")
    raise AssertionError(f"no free port after {attempts} attempts")


def wait_refused(port: int, timeout: float = 10.0) -> None:
    """Wait until nothing accepts connections on *port* any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still accepts connections")


def get(server: Server, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(server.url(path), timeout=10) as response:
        return response.status, response.read()


@pytest.fixture(scope="module")
def server(server_db: dict[str, str]) -> Iterator[Server]:
    """``runwebsocket 127.0.0.1:PORT --noreload`` over the migrated test database."""
    with runwebsocket(server_db["path"], "--noreload") as running:
        yield running


def test_prints_url_like_runserver(server: Server) -> None:
    """The banner names Django's version, the settings and the URL, after the system checks."""
    log = server.log
    assert "System check identified no issues" in log
    assert "using settings 'tests.settings'" in log
    assert f"Starting development server at http://127.0.0.1:{server.port}/" in log


def test_http_page(server: Server) -> None:
    """An ordinary page (ROOT_URLCONF) is served on the port."""
    status, body = get(server, "/")
    assert status == 200
    assert b"<html" in body.lower()


def test_static_files_in_debug(server: Server) -> None:
    """With DEBUG on and staticfiles installed, STATIC_URL is served as runserver serves it."""
    status, body = get(server, "/static/admin/css/base.css")
    assert status == 200
    assert body


def test_websocket_echo(server: Server) -> None:
    """A websocket upgrade on the same port reaches the echo view (WEBSOCKET_URLCONF)."""
    with connect(server.ws_url("/echo/"), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"


def test_orm_in_websocket_views(server: Server) -> None:
    """Each greenlet gets its own database connection after the late monkey-patching."""
    for _ in range(2):
        with connect(server.ws_url("/count-users/"), open_timeout=10) as ws:
            assert ws.recv(timeout=10).isdigit()


def test_refusal_is_plain_http(server: Server) -> None:
    """A view refused before the accept answers HTTP 403, not 101 (our UpgradeHandler)."""
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url("/forbidden/"), open_timeout=10)
    assert refused.value.response.status_code == 403


def test_access_log(server: Server) -> None:
    """Requests are logged on stderr with their status, 101 for an accepted websocket."""
    with connect(server.ws_url("/echo/"), open_timeout=10):
        pass
    server.wait_for_log(r'"GET /echo/ HTTP/1\.1" 101')


def test_autoreloader_starts_and_serves(server_db: dict[str, str]) -> None:
    """Without --noreload the reloader's child serves; stopping the process group stops both."""
    with runwebsocket(server_db["path"]) as server:
        server.wait_for_log("Watching for file changes")
        with connect(server.ws_url("/echo/"), open_timeout=10) as ws:
            ws.send("reloaded")
            assert ws.recv(timeout=10) == "reloaded"
        assert get(server, "/")[0] == 200
    assert server.process.poll() is not None
    wait_refused(server.port)


def test_port_in_use(server_db: dict[str, str]) -> None:
    """Binding a taken port fails with runserver's message and exit status 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, log = start(["runwebsocket", f"127.0.0.1:{port}", "--noreload"], {})
        try:
            assert process.wait(timeout=STARTUP_TIMEOUT) == 1
        finally:
            stop_process(process)
    assert f"Error: {PORT_IN_USE}" in b"".join(log).decode()


def test_import_does_not_monkey_patch() -> None:
    """Importing the command (as ``manage.py help`` does) leaves the process unpatched."""
    code = (
        "import django; django.setup()\n"
        "import django_websocket.management.commands.runwebsocket\n"
        "from gevent import monkey\n"
        "assert not monkey.is_anything_patched()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        check=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("addrport", "url"),
    [
        (None, "http://127.0.0.1:8000/"),
        ("8001", "http://127.0.0.1:8001/"),
        ("0.0.0.0:8001", "http://0.0.0.0:8001/"),
        ("[::1]:8000", "http://[::1]:8000/"),
    ],
)
def test_addrport_like_runserver(addrport: str | None, url: str) -> None:
    """``addrport`` is parsed as runserver parses it (no server is started)."""
    command = Command()
    out = io.StringIO()
    with mock.patch.object(Command, "run"):
        call_command(command, *([addrport] if addrport else []), stdout=out)
    command.on_bind(int(command.port))
    assert f"Starting development server at {url}" in out.getvalue()
