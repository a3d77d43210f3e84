"""django_websocket.wsgi: the single-port application serves pages and sockets on one port."""

from __future__ import annotations

import urllib.request

import pytest
from websockets.sync.client import connect

from tests.servers import gunicorn


@pytest.fixture(scope="module")
def single_port(server_db):
    with gunicorn("test_project.wsgi:application", env={"DJANGO_DB_PATH": server_db["path"]}) as running:
        yield running


def test_page_and_socket_on_one_port(single_port):
    """GET /echo/ is the HTML page (ROOT_URLCONF); an upgrade to /echo/ is the socket."""
    with urllib.request.urlopen(single_port.url("/echo/"), timeout=5) as response:
        page = response.read().decode()
    assert response.status == 200
    assert f"ws://127.0.0.1:{single_port.port}/echo/" in page
    with connect(single_port.ws_url("/echo/"), origin=single_port.url("").rstrip("/")) as websocket:
        websocket.send("one port")
        assert websocket.recv() == "one port"


def test_http_requests_use_root_urlconf_while_sockets_use_websocket_urlconf(single_port):
    """A websocket view reversing after a pause still sees WEBSOCKET_URLCONF while HTTP pages are served."""
    with connect(single_port.ws_url("/reverse/")) as websocket:
        for _ in range(5):
            with urllib.request.urlopen(single_port.url("/"), timeout=5) as response:
                assert response.status == 200
        assert websocket.recv(timeout=5) == "/echo/"
