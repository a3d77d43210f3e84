"""The demo's ops page (``test_project/ops.py``): the snapshot builder, who may see it, and the page live.

The live tests run one gunicorn worker (our gevent worker, ``test_project.settings``, the
embedded broker, a fresh migrated SQLite file) and log in with session cookies made by
:data:`MAKE_SESSIONS`; the browser test drives headless Debian Chromium as
``tests/test_browser_chat.py`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from django_websocket.counters import Counters
from test_project import ops
from tests.servers import ROOT, Server, gunicorn
from tests.test_browser import SETTINGS, manage

#: Creates a staff user and a plain one with a logged-in session each; prints their session keys.
MAKE_SESSIONS = """
import json
import django
django.setup()
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
keys = {}
for name, staff in (("olga", True), ("nina", False)):
    user, _ = get_user_model().objects.get_or_create(username=name, defaults={"is_staff": staff})
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    keys[name] = session.session_key
print(json.dumps(keys))
"""

#: Sockets the browser test opens besides the page's own.
EXTRA_SOCKETS = 3


class FakeBroker:
    """Broker keys as ``channel`` for everyone and ``channel|audience`` for an audience."""

    def key(self, channel: str, audience_suffix: str = "") -> str:
        return channel + audience_suffix


class FakeHub:
    """What :func:`ops.top_channels` reads of a hub: ``mailboxes``, ``channel_name()``, ``broker.key()``."""

    def __init__(self, mailboxes: dict[str, set]) -> None:
        self.mailboxes = mailboxes
        self.broker = FakeBroker()

    def channel_name(self, key: str) -> str:
        return key.split("|")[0]


# The snapshot builder


def test_top_channels_add_up_audiences_and_hubs_most_subscribed_first() -> None:
    """Sockets count once per channel (not per audience key), hubs add up; busiest first, ties by name."""
    first = FakeHub({"chat:a": {1, 2, 3}, "chat:a|user:1": {3}, "news": {4, 5, 6}, "z": {7}})
    second = FakeHub({"y": {8}, "news": {9}})
    assert ops.top_channels([first, second], limit=3) == [("news", 4), ("chat:a", 3), ("y", 1)]
    assert ops.top_channels([]) == []


def test_snapshot_carries_counters_sockets_channels_and_members() -> None:
    """The snapshot holds the process's counters, sockets, uptime and top channels with their members."""
    totals = Counters()
    totals.messages_received, totals.messages_sent = 5, 7
    totals.bytes_received, totals.bytes_sent = 50, 70
    totals.count_handshake(101)
    totals.count_handshake(403)
    totals.count_handshake(101)
    hub = FakeHub({"room": {1, 2}, "other": {3}})
    found = ops.snapshot(
        pid=42, started=100.0, now=112.5, sockets=3, totals=totals, hubs=[hub], members={"room": 2}
    )
    assert found == {
        "pid": 42,
        "time": 112.5,
        "uptime": 12.5,
        "sockets": 3,
        "in": 5,
        "out": 7,
        "bytes_in": 50,
        "bytes_out": 70,
        "handshakes": {"101": 2, "403": 1},
        "channels": [["room", 2, 2], ["other", 1, None]],
    }
    assert json.loads(json.dumps(found)) == found


def test_read_members_counts_people_and_skips_channels_the_broker_cannot_answer() -> None:
    """Members are counted per channel; a PublishError leaves that channel out."""
    from django_websocket.exceptions import PublishError

    def read(channel: str) -> list[dict]:
        if channel == "down":
            raise PublishError("no answer")
        return [{"user": 1}, {"user": 2}]

    assert ops.read_members(["up", "down"], read) == {"up": 2}


def test_publisher_does_not_start_outside_a_gevent_server(monkeypatch) -> None:
    """Without gevent's monkey-patching (manage.py, tests) no publisher greenlet is started."""
    monkeypatch.setattr(ops, "_started", [])
    ops.ensure_started()
    assert ops._started == []


# The live page


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """The demo on one worker with the embedded broker, and the session keys of "olga" (staff) and "nina"."""
    directory: Path = tmp_path_factory.mktemp("ops")
    env = {"DJANGO_DB_PATH": str(directory / "db.sqlite3"), "REDIS_URL": ""}
    manage(env, "migrate", "--noinput")
    sessions = _make_sessions(env)
    with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env, workers=1) as server:
        yield server, sessions


def _make_sessions(env: dict[str, str]) -> dict[str, str]:
    """Run :data:`MAKE_SESSIONS` against the database of *env*: ``{"olga": key, "nina": key}``."""
    return json.loads(
        subprocess.run(
            [sys.executable, "-c", MAKE_SESSIONS],
            env={**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, **env},
            cwd=ROOT,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        ).stdout
    )


def _cookie(sessions: dict[str, str], name: str | None) -> dict[str, str]:
    return {"Cookie": f"sessionid={sessions[name]}"} if name else {}


@pytest.mark.parametrize("user", [None, "nina"])
def test_the_page_sends_others_to_the_login(demo, user: str | None) -> None:
    """Anonymous and non-staff users asking for /ops/ are redirected to the login page."""
    server, sessions = demo
    headers = _cookie(sessions, user)
    response = requests.get(server.url("/ops/"), headers=headers, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert "login" in response.headers["Location"]


@pytest.mark.parametrize("user", [None, "nina"])
def test_the_socket_refuses_others_before_the_upgrade(demo, user: str | None) -> None:
    """Anonymous and non-staff handshakes to the ops socket get 403, not a websocket."""
    server, sessions = demo
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url("/ops/"), additional_headers=_cookie(sessions, user), open_timeout=10)
    assert refused.value.response.status_code == 403


def test_staff_get_the_page_and_the_snapshots(demo) -> None:
    """A staff user gets the page and, on its socket, this worker's snapshots."""
    server, sessions = demo
    headers = _cookie(sessions, "olga")
    response = requests.get(server.url("/ops/"), headers=headers, timeout=10)
    assert response.status_code == 200
    assert 'id="chart"' in response.text
    with connect(server.ws_url("/ops/"), additional_headers=headers, open_timeout=10) as socket:
        first = json.loads(socket.recv(timeout=5))
        assert first["sockets"] >= 1
        assert {"pid", "time", "in", "out", "channels", "handshakes"} <= set(first)
        assert any(name == ops.CHANNEL and count >= 1 for name, count, _ in first["channels"])


@pytest.mark.browser
def test_the_page_shows_more_sockets_as_they_open(demo, tmp_path: Path) -> None:
    """Chromium: open-sockets figure grows as sockets open, the chart has points, the screenshot is a PNG."""
    from playwright.sync_api import sync_playwright

    from tests.pages import browser_page
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    server, sessions = demo
    with sync_playwright() as playwright, ExitStack() as stack:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = stack.enter_context(browser_page(browser, server))
        page.context.add_cookies([{"name": "sessionid", "value": sessions["olga"], "url": server.url("/")}])
        page.goto(server.url("/ops/"))
        page.wait_for_function("Number(document.getElementById('total-sockets').textContent) >= 1")
        before = int(page.text_content("#total-sockets") or "0")

        for _ in range(EXTRA_SOCKETS):
            stack.enter_context(connect(server.ws_url("/echo/"), open_timeout=10))
        page.wait_for_function(
            f"Number(document.getElementById('total-sockets').textContent) >= {before + EXTRA_SOCKETS}"
        )
        page.wait_for_function("Number(document.getElementById('chart').dataset.points) >= 2")
        points = page.get_attribute("#line-sockets", "points") or ""
        assert len(points.split()) >= 2
        assert page.locator("#workers tbody tr").count() == 1

        shot = tmp_path / "ops.png"
        page.screenshot(path=str(shot), full_page=True)
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_every_worker_reports_through_redis(tmp_path: Path) -> None:
    """With Redis and two workers, one ops socket hears both workers' snapshots, requests or not."""
    from tests.redis_server import RedisServer

    env = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3")}
    manage(env, "migrate", "--noinput")
    sessions = _make_sessions(env)
    with RedisServer() as redis_server:
        env["REDIS_URL"] = redis_server.url
        with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env, workers=2) as server:
            headers = _cookie(sessions, "olga")
            with connect(server.ws_url("/ops/"), additional_headers=headers, open_timeout=10) as socket:
                pids: set[int] = set()
                deadline = time.monotonic() + 10
                while len(pids) < 2 and time.monotonic() < deadline:
                    pids.add(json.loads(socket.recv(timeout=5))["pid"])
    assert len(pids) == 2


@pytest.mark.parametrize(("user", "linked"), [("olga", True), ("nina", False), (None, False)])
def test_the_index_links_the_page_for_staff_only(demo, user: str | None, linked: bool) -> None:
    """The demo index links /ops/ for staff users only."""
    server, sessions = demo
    response = requests.get(server.url("/"), headers=_cookie(sessions, user), timeout=10)
    assert ('href="/ops/"' in response.text) is linked
