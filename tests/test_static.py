"""websocket.js loads, and works, under each documented way of serving a project.

The page ``/websocket-js/`` (``tests/static_urls.py``) loads ``websocket.js`` with
``{% static %}`` and echoes a message through a ``DjangoWebSocket``; ``/websocket-esm/``
does the same through the ES module form, ``websocket.esm.js``. They are opened in
Debian's Chromium (``tests/test_browser.py``'s fixture) under:

- ``manage.py runwebsocket`` with DEBUG on, which serves static files as runserver does;
- the single-port gunicorn application (``test_project.wsgi:application``, our worker)
  with DEBUG **off**, where WhiteNoise's middleware serves them, as a user runs it.

Both servers are real processes on 127.0.0.1 and free ports, over test_project's settings
(``tests/static_settings.py``); their process groups are killed even when a test fails.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.pages import browser_page
from tests.servers import Server, gunicorn, stop_process
from tests.static_urls import MESSAGE
from tests.test_browser import TIMEOUT_MS, browser  # noqa: F401  (browser: Chromium, per module)
from tests.test_runwebsocket import PORT_IN_USE, free_port, start, wait_started

pytestmark = pytest.mark.browser

SETTINGS = "tests.static_settings"
SCRIPT = "/static/django_websocket/websocket.js"
MODULE = "/static/django_websocket/websocket.esm.js"
JAVASCRIPT_TYPES = ("text/javascript", "application/javascript")


@contextmanager
def runwebsocket(env: dict[str, str], attempts: int = 5) -> Iterator[Server]:
    """``manage.py runwebsocket 127.0.0.1:PORT --noreload`` with *env*, as a :class:`Server`.

    A port taken between choosing and binding it is retried with another one.
    """
    for _ in range(attempts):
        port = free_port()
        process, log = start(["runwebsocket", f"127.0.0.1:{port}", "--noreload"], env)
        try:
            if wait_started(process, log) is not None:
                yield Server(process, port, log)
                return
        finally:
            stop_process(process)
        output = b"".join(log).decode("utf-8", "replace")
        if PORT_IN_USE not in output:
            raise AssertionError(f"runwebsocket exited with {process.returncode}:\n{output}")
    raise AssertionError(f"no free port after {attempts} attempts")


@pytest.fixture(scope="module")
def dev_server(server_db: dict[str, str]) -> Iterator[Server]:
    """``manage.py runwebsocket`` with DEBUG on."""
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS, "DJANGO_DEBUG": "1", "DJANGO_DB_PATH": server_db["path"]}
    with runwebsocket(env) as server:
        yield server


@pytest.fixture(scope="module")
def gunicorn_server(server_db: dict[str, str]) -> Iterator[Server]:
    """gunicorn, our worker, the single-port application, DEBUG off: the README's command."""
    env = {"DJANGO_DEBUG": "0", "DJANGO_DB_PATH": server_db["path"]}
    with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env) as server:
        yield server


@pytest.fixture(params=["dev_server", "gunicorn_server"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each way of serving in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def page(request: pytest.FixtureRequest, server: Server) -> Iterator[Page]:
    """A fresh page; on teardown, print what the browser and the server logged (shown on failure)."""
    with browser_page(request.getfixturevalue("browser"), server) as page:
        yield page


def test_page_loads_websocket_js_and_echoes(page: Page, server: Server) -> None:
    """The script is served as JavaScript, defines DjangoWebSocket, and its socket echoes."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    with page.expect_response(lambda response: response.url == server.url(SCRIPT)) as script:
        page.goto(server.url("/websocket-js/"))
    response = script.value
    assert response.status == 200
    assert response.headers["content-type"].startswith(JAVASCRIPT_TYPES)
    expect(page.locator("#status")).to_have_text("open", timeout=TIMEOUT_MS)
    expect(page.locator("#log li")).to_have_text([MESSAGE], timeout=TIMEOUT_MS)
    assert errors == []


def test_page_imports_the_es_module_and_echoes(page: Page, server: Server) -> None:
    """websocket.esm.js, imported in a module script, exports DjangoWebSocket, whose socket echoes JSON."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    scripts = {}
    page.on("response", lambda response: scripts.setdefault(response.url, response))
    page.goto(server.url("/websocket-esm/"))
    expect(page.locator("#status")).to_have_text("open", timeout=TIMEOUT_MS)
    expect(page.locator("#log li")).to_have_text([MESSAGE], timeout=TIMEOUT_MS)
    assert errors == []
    # Browsers run a module only if it is served as JavaScript: both files, the module and
    # the classic script it imports, must be.
    for path in (MODULE, SCRIPT):
        response = scripts[server.url(path)]
        assert response.status == 200
        assert response.headers["content-type"].startswith(JAVASCRIPT_TYPES)


def test_websocket_js_over_plain_http(gunicorn_server: Server) -> None:
    """Under gunicorn with DEBUG off, the script answers 200 with a JavaScript content type."""
    with urllib.request.urlopen(gunicorn_server.url(SCRIPT), timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith(JAVASCRIPT_TYPES)
        assert b"class DjangoWebSocket" in response.read()


def test_missing_static_file_is_404(gunicorn_server: Server) -> None:
    """A name WhiteNoise does not know falls through to Django's URL resolution: 404."""
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(gunicorn_server.url("/static/django_websocket/missing.js"), timeout=10)
    assert missing.value.code == 404


def test_websocket_beside_whitenoise(gunicorn_server: Server) -> None:
    """WhiteNoise is in the websocket chain too (MIDDLEWARE): an upgrade elsewhere passes by it."""
    with connect(gunicorn_server.ws_url("/echo/"), open_timeout=10) as ws:
        ws.send("through the middleware")
        assert ws.recv(timeout=10) == "through the middleware"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"


def test_websocket_to_a_static_file_is_plain_http(gunicorn_server: Server) -> None:
    """An upgrade to a static file's URL gets the file as plain HTTP (WhiteNoise answers first),
    never a 101; the file is still served to the next ordinary request."""
    with pytest.raises(InvalidStatus) as refused:
        connect(gunicorn_server.ws_url(SCRIPT), open_timeout=10)
    assert refused.value.response.status_code == 200
    with urllib.request.urlopen(gunicorn_server.url(SCRIPT), timeout=10) as response:
        assert response.status == 200
