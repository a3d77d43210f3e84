"""README.md's notifications example: the files it shows are the demo's, and they work.

The demo's ``test_project/notifications.py`` and ``templates/notifications.html`` must appear
in README.md verbatim, and its routes in the demo's URLconfs. Then they run: gunicorn (our
worker, the single-port ``test_project.wsgi:application``) with a real Redis, two users
logged in through the login form in headless Chromium, and README.md's ``manage.py shell``
snippet run as it is in a ``manage.py shell -c`` subprocess with the server's settings and
``REDIS_URL``. Browser waits are Playwright's; only Redis is polled.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from http.client import HTTPConnection

import pytest
from playwright.sync_api import Browser, Page, expect

from django_websocket.brokers import remote_broker
from django_websocket.messaging.options import Options
from tests.pages import page_factory
from tests.readme import README, block_with, code_blocks
from tests.servers import ROOT, Server, gunicorn
from tests.test_browser import SETTINGS, TIMEOUT_MS, browser, manage  # noqa: F401  (browser: a fixture)

pytestmark = pytest.mark.browser

VIEWS = ROOT / "test_project" / "notifications.py"
TEMPLATE = ROOT / "test_project" / "templates" / "notifications.html"
URLCONFS = {
    "urls.py": ROOT / "test_project" / "urls.py",
    "websocket_urls.py": ROOT / "test_project" / "websocket_urls.py",
}
PASSWORD = "notifications-test-password"
HANDSHAKE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}

#: Creates the two users the test logs in as.
CREATE_USERS = f"""
from django.contrib.auth import get_user_model
for name in ("alice", "bob"):
    get_user_model().objects.create_user(name, password={PASSWORD!r})
"""


def test_readme_shows_the_demo_files():
    blocks = code_blocks(README.read_text())
    assert VIEWS.read_text() in blocks, "README.md does not show test_project/notifications.py as it is"
    assert TEMPLATE.read_text() in blocks, "README.md does not show templates/notifications.html as it is"


def test_readme_routes_are_the_demo_routes():
    """Each ``path(...)`` line of README.md's routes block is in the URLconf its comment names."""
    routes = block_with("notifications.notifications_page", "notifications.notifications_socket")
    urlconf = None
    checked = 0
    for line in routes.splitlines():
        if line.startswith("# "):
            urlconf = URLCONFS[line.removeprefix("# ")]
        elif line.strip():
            assert urlconf is not None and f"    {line}\n" in urlconf.read_text(), line
            checked += 1
    assert checked == 2


# ------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def redis_url(redis_server) -> dict[str, str]:
    """The environment naming the test Redis, for the server and the shell alike."""
    return {"REDIS_URL": redis_server.url}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, redis_url: dict[str, str]) -> Iterator:
    """The demo on gunicorn with Redis, users alice and bob; yields the server and its environment."""
    env = {"DJANGO_DB_PATH": str(tmp_path_factory.mktemp("notifications") / "db.sqlite3"), **redis_url}
    manage(env, "migrate", "--noinput")
    manage(env, "shell", "-c", CREATE_USERS)
    with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env) as server:
        yield server, env


@pytest.fixture
def new_page(browser: Browser, demo) -> Iterator:  # noqa: F811  (the imported fixture)
    """A factory of pages, each in its own browser context (its own cookies), as two people."""
    server, _ = demo
    with page_factory(browser, server) as make:
        yield make


def _log_in(page: Page, server: Server, username: str) -> None:
    """Open the notifications page, log in on the form it redirects to, wait for the open socket."""
    page.goto(server.url("/notifications/"))
    page.wait_for_url(server.url("/accounts/login/?next=/notifications/"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(server.url("/notifications/"))
    expect(page.locator("h1")).to_have_text(f"Notifications for {username}")
    expect(page.locator("#status")).to_have_text("open")


def _wait_subscribed(redis_server, env: dict[str, str], username: str, timeout: float = 10.0) -> None:
    """Wait until the server listens on Redis for *username*'s notifications.

    The page says "open" at the 101, before the view has subscribed: a message published
    in between would reach no one. Polls Redis, the only thing that knows.
    """
    with sqlite3.connect(env["DJANGO_DB_PATH"]) as db:
        (pk,) = db.execute("SELECT id FROM auth_user WHERE username = ?", (username,)).fetchone()
    channel = remote_broker(env["REDIS_URL"], Options()).key("notifications", f"@user:{pk}")
    deadline = time.monotonic() + timeout
    while redis_server.subscribers(channel) == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing subscribed to {channel} within {timeout} s")
        time.sleep(0.02)  # polling Redis, not waiting for the browser


def _notifications(page: Page):
    return page.locator("#notifications li")


def test_logged_out_page_and_socket_are_refused(new_page, demo) -> None:
    server, _ = demo
    page = new_page()
    page.goto(server.url("/notifications/"))
    expect(page).to_have_url(server.url("/accounts/login/?next=/notifications/"))
    # A handshake by hand: websockets' client would follow the redirect.
    http = HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_MS / 1000)
    try:
        http.request("GET", "/notifications/", headers=HANDSHAKE)
        response = http.getresponse()
    finally:
        http.close()
    assert response.status == 302
    assert response.headers["Location"] == "/accounts/login/?next=/notifications/"


def test_shell_publish_reaches_its_user_only(new_page, demo, redis_server) -> None:
    server, env = demo
    alice, bob = new_page(), new_page()
    _log_in(alice, server, "alice")
    _log_in(bob, server, "bob")
    _wait_subscribed(redis_server, env, "alice")
    _wait_subscribed(redis_server, env, "bob")

    # README.md's snippet, as it is: publishes "Your export is ready" for alice.
    manage(env, "shell", "-c", block_with("publish(", "user=alice"))
    expect(_notifications(alice)).to_have_text(["Your export is ready"])

    # Redis delivers in order: had bob's page received alice's message, it would come first.
    for_bob = block_with("publish(", "user=alice").replace('"alice"', '"bob"')
    manage(env, "shell", "-c", for_bob.replace("Your export is ready", "For bob"))
    expect(_notifications(bob)).to_have_text(["For bob"])
    expect(_notifications(alice)).to_have_count(1)
