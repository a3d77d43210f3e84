"""The stock gevent-websocket worker: same views, refusals as close codes after its early 101."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from tests.servers import STOCK_WORKER, gunicorn


@pytest.fixture(scope="module")
def stock_server(server_db):
    with gunicorn(worker=STOCK_WORKER, env={"DJANGO_DB_PATH": server_db["path"]}) as running:
        yield running


def test_stock_worker_serves_echo(stock_server):
    """Under geventwebsocket's worker the echo view works, text and binary."""
    with connect(stock_server.ws_url("/echo/")) as websocket:
        websocket.send("hello")
        assert websocket.recv() == "hello"
        websocket.send(b"\x01\x02")
        assert websocket.recv() == b"\x01\x02"


def test_stock_worker_refusals_become_close_codes(stock_server):
    """A 404 and a 403 arrive as close codes 4404 and 4403 (the 101 was already sent)."""
    for path, code in (("/no-such-socket/", 4404), ("/forbidden/", 4403)):
        with connect(stock_server.ws_url(path)) as websocket:
            with pytest.raises(ConnectionClosedError) as caught:
                websocket.recv(timeout=5)
        assert caught.value.rcvd.code == code


def test_stock_worker_close_code_and_reason_arrive(stock_server):
    """close(4001, "custom reason") keeps its code even under the stock worker."""
    with connect(stock_server.ws_url("/close/")) as websocket:
        with pytest.raises(ConnectionClosedError) as caught:
            websocket.recv(timeout=5)
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4001, "custom reason")


def test_stock_worker_client_close_ends_the_view(stock_server):
    """A normal client close ends the view's iteration; the next connection works."""
    with connect(stock_server.ws_url("/echo/")) as websocket:
        websocket.send("one")
        assert websocket.recv() == "one"
    with connect(stock_server.ws_url("/ping/")) as websocket:
        websocket.send("ping")
        assert websocket.recv() == "pong"


def test_stock_worker_reports_no_subprotocol(stock_server):
    """gevent-websocket's 101 names no subprotocol, so the view sees none either."""
    with connect(stock_server.ws_url("/subprotocol/"), subprotocols=["chat.v1"]) as websocket:
        assert websocket.subprotocol is None
        assert websocket.recv(timeout=5) == "none"
