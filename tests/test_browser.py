"""Browser tests: the demo pages of ``test_project`` in headless Debian Chromium.

A real gunicorn (our gevent worker, the single-port ``test_project.wsgi:application``)
serves the HTTP pages and their websockets on the same port; Playwright drives
``/usr/bin/chromium``. Run them with::

    python -m pytest tests/test_browser.py -v          # or: -m browser

A missing Chromium is a failure, not a skip: ``make`` installs Debian's ``chromium``.
Synchronisation uses Playwright's waits only, never ``sleep()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.pages import TIMEOUT_MS, browser_page
from tests.servers import ROOT, Server, gunicorn

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETTINGS = "test_project.settings"


def manage(env: dict[str, str], *args: str) -> None:
    """Run ``test_project/manage.py ARGS`` against the test database; fail with its output."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "test_project" / "manage.py"), *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}"
        pytest.fail(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{output}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's Chromium "
            "(`apt-get install chromium`, which `make` does); Playwright's browser downloads are not used."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn serving the single-port demo application over a fresh, migrated SQLite database."""
    env = {"DJANGO_DB_PATH": str(tmp_path_factory.mktemp("browser") / "db.sqlite3")}
    manage(env, "migrate", "--noinput")
    manage(env, "demo_user")
    with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env) as server:
        yield server


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A fresh browser context and page; on teardown, print what the browser and server logged."""
    with browser_page(browser, server) as page:
        yield page


def _open(page: Page, server: Server, path: str) -> None:
    """Load the demo page at *path* and wait until its socket is open."""
    page.goto(server.url(path))
    expect(page.locator("#status")).to_have_text("open", timeout=TIMEOUT_MS)


def _send(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.click("#send")


def test_echo_page_echoes_what_is_typed(page: Page, server: Server) -> None:
    _open(page, server, "/echo/")
    _send(page, "hello browser")
    expect(page.locator("#log")).to_contain_text("hello browser", timeout=TIMEOUT_MS)
    _send(page, "héllo wörld ✓")
    expect(page.locator("#log li")).to_have_text(["hello browser", "héllo wörld ✓"], timeout=TIMEOUT_MS)


def test_ping_page_answers_pong(page: Page, server: Server) -> None:
    _open(page, server, "/ping/")
    _send(page, "ping")
    expect(page.locator("#log")).to_contain_text("pong", timeout=TIMEOUT_MS)
    _send(page, "hello")  # no reply; the next answer proves it was skipped, not queued
    _send(page, "pong")
    expect(page.locator("#log li")).to_have_text(["pong", "ping"], timeout=TIMEOUT_MS)


def test_whoami_page_refuses_anonymous_then_greets_demo(page: Page, server: Server) -> None:
    page.goto(server.url("/whoami/"))
    expect(page.locator("#status")).to_have_text("closed", timeout=TIMEOUT_MS)
    # In words, not "code 1006": the browser cannot read the refused handshake's status.
    expect(page.locator("#close-info")).to_have_text(
        "refused: you are not logged in, and this socket requires a login (log in above, then come back)"
    )
    expect(page.locator("#log li")).to_have_count(0)

    page.click("#login")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo")
    page.click("#login-submit")
    page.wait_for_url(server.url("/whoami/"))
    expect(page.locator("#status")).to_have_text("open", timeout=TIMEOUT_MS)
    expect(page.locator("#log li")).to_have_text(["demo"], timeout=TIMEOUT_MS)


def test_chromium_negotiates_permessage_deflate(page: Page, server: Server) -> None:
    """Chromium offers permessage-deflate; the server accepts it and a compressed echo round-trips."""
    _open(page, server, "/echo/")
    extensions, echoed = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/echo/");
            const message = "compress me ".repeat(200);  // 2,400 bytes: over the threshold
            socket.onopen = () => socket.send(message);
            socket.onmessage = (event) => {
                resolve([socket.extensions, event.data === message]);
                socket.close();
            };
            socket.onerror = () => reject(new Error("websocket error"));
        })"""
    )
    assert "permessage-deflate" in extensions
    assert echoed
