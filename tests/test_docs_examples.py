"""The documentation's code examples, run: the tutorial's chat (``docs/examples/``).

docs/tutorial.md includes these files with ``literalinclude``, so what a reader copies is
what runs here. The project is copied to a temporary directory (its SQLite file lands
there), migrated as the tutorial says, checked, its own tests run, then served the two documented ways —
``manage.py runwebsocket`` and gunicorn with our worker — on 127.0.0.1 and a free port,
each stopped (its process group killed) even when a test fails. Two websocket clients in
one room see each other's messages; a third, in another room, sees none of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.servers import ROOT, Server, gunicorn, stop_process

EXAMPLES = ROOT / "docs" / "examples"
SETTINGS = "mysite.settings"
STARTED = re.compile(r"Starting development server at http://127\.0\.0\.1:(\d+)/")
PORT_IN_USE = "That port is already in use."
SOCKET_URL = re.compile(r'new DjangoWebSocket\("(ws://[^"]+)"')


def site_env(site: Path) -> dict[str, str]:
    """The environment of the tutorial project's processes: its settings, its directory importable."""
    return {"DJANGO_SETTINGS_MODULE": SETTINGS, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}


def manage(site: Path, *args: str) -> str:
    """Run the tutorial's ``manage.py ARGS`` in *site*; return its output (stdout and stderr)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=site,
        env={**os.environ, **site_env(site)},
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of docs/examples, migrated: the project as the tutorial leaves it."""
    path = tmp_path_factory.mktemp("tutorial") / "site"
    shutil.copytree(EXAMPLES, path, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    manage(path, "migrate", "--noinput", "-v", "0")
    return path


def free_port() -> int:
    """A port that was free a moment ago (runwebsocket is retried if another process takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def runwebsocket(site: Path, attempts: int = 5) -> Iterator[Server]:
    """``manage.py runwebsocket 127.0.0.1:PORT --noreload`` in *site*, as a :class:`Server`."""
    for _ in range(attempts):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runwebsocket", f"127.0.0.1:{port}", "--noreload"],
            cwd=site,
            env={**os.environ, **site_env(site)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log: list[bytes] = []

        def pump(process: subprocess.Popen = process, log: list[bytes] = log) -> None:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, b""):
                log.append(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and process.poll() is None:
                if STARTED.search(b"".join(log).decode("utf-8", "replace")):
                    yield Server(process, port, log)
                    return
                time.sleep(0.02)
        finally:
            stop_process(process)
        output = b"".join(log).decode("utf-8", "replace")
        if PORT_IN_USE not in output:
            raise AssertionError(f"runwebsocket did not start:\n{output}")
    raise AssertionError(f"no free port after {attempts} attempts")


@pytest.fixture(scope="module", params=["runwebsocket", "gunicorn"])
def server(request: pytest.FixtureRequest, site: Path) -> Iterator[Server]:
    """The tutorial's project served by ``runwebsocket``, then by gunicorn's single-port application."""
    if request.param == "runwebsocket":
        with runwebsocket(site) as running:
            yield running
    else:
        with gunicorn("mysite.wsgi:application", settings=SETTINGS, env=site_env(site)) as running:
            yield running


def get(server: Server, path: str) -> tuple[int, str, str]:
    """GET *path*: status, Content-Type and body."""
    with urllib.request.urlopen(server.url(path), timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def socket_url(server: Server, room: str) -> str:
    """The websocket URL the room's page gives ``DjangoWebSocket``."""
    status, _, page = get(server, f"/chat/{room}/")
    assert status == 200
    match = SOCKET_URL.search(page)
    assert match, page
    return match[1]


def join(server: Server, url: str) -> ClientConnection:
    """Open *url* as a browser on the room's page would (with its ``Origin``)."""
    return connect(url, origin=f"http://127.0.0.1:{server.port}", open_timeout=10)


def say(client: ClientConnection, name: str, text: str) -> None:
    client.send(json.dumps({"name": name, "text": text}))


def heard(client: ClientConnection) -> dict:
    return json.loads(client.recv(timeout=5))


def test_check_passes(site: Path) -> None:
    """``manage.py check``: the tutorial's settings raise no error and no warning."""
    assert "System check identified no issues" in manage(site, "check", "--fail-level", "WARNING")


def test_the_chats_own_tests_pass(site: Path) -> None:
    """``manage.py test``: chat/tests.py, the example of docs/howto/testing.md, passes."""
    assert re.search(r"^Ran 3 tests in .*\n\nOK$", manage(site, "test", "--noinput"), re.M)


def test_page_connects_to_its_room(server: Server) -> None:
    """The page loads websocket.js and gives DjangoWebSocket the room's absolute ws:// URL."""
    status, _, page = get(server, "/chat/lobby/")
    assert status == 200
    assert '<script src="/static/django_websocket/websocket.js"></script>' in page
    assert socket_url(server, "lobby") == f"ws://127.0.0.1:{server.port}/ws/chat/lobby/"


def test_two_members_see_each_others_messages(server: Server) -> None:
    """Members of a room hear each other (and themselves); another room hears nothing."""
    url = socket_url(server, "lobby")
    with join(server, url.replace("lobby", "other")) as eve, join(server, url) as alice:
        # Each first hears its own message back: proof that its view has subscribed, so
        # nothing said afterwards can be missed.
        say(eve, "eve", "anyone?")
        assert heard(eve) == {"name": "eve", "text": "anyone?"}
        say(alice, "alice", "hello?")
        assert heard(alice) == {"name": "alice", "text": "hello?"}
        with join(server, url) as bob:
            say(bob, "bob", "hi alice")
            assert heard(bob) == {"name": "bob", "text": "hi alice"}
            assert heard(alice) == {"name": "bob", "text": "hi alice"}

            alice.send("not a chat message")  # ignored by the view, which goes on
            say(alice, "alice", "hi bob")
            assert heard(alice) == {"name": "alice", "text": "hi bob"}
            assert heard(bob) == {"name": "alice", "text": "hi bob"}

            # The view publishes only the two fields, trimmed, whatever the client adds.
            alice.send(json.dumps({"name": "a" * 100, "text": "x", "html": "<b>"}))
            assert heard(bob) == {"name": "a" * 40, "text": "x"}

            with pytest.raises(TimeoutError):
                eve.recv(timeout=0.3)  # another room hears nothing of this one


def test_runwebsocket_serves_websocket_js(site: Path) -> None:
    """Under ``runwebsocket`` (DEBUG on) the page's websocket.js is served, as runserver would."""
    with runwebsocket(site) as server:
        status, content_type, script = get(server, "/static/django_websocket/websocket.js")
    assert status == 200
    assert "javascript" in content_type
    assert "DjangoWebSocket" in script
