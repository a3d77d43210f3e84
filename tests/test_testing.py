"""django_websocket.testing: the live-server TestCase (the in-process client is used throughout)."""

from __future__ import annotations

import urllib.request

from django.contrib.auth import get_user_model
from websockets.sync.client import connect

from django_websocket.exceptions import ConnectionClosedOK
from django_websocket.testing import HandshakeRejected, WebSocketClient, WebSocketLiveServerTestCase


class LiveServerTests(WebSocketLiveServerTestCase):
    """A real gevent server on a free port, sharing the test database."""

    def test_echo_over_tcp(self):
        """self.connect() opens a real TCP websocket to the live server."""
        with self.connect("/echo/") as websocket:
            websocket.send("live")
            assert websocket.receive() == "live"

    def test_any_client_can_use_ws_url(self):
        """ws_url() works for third-party clients; HTTP pages are served on the same port."""
        with connect(self.ws_url("/echo/")) as websocket:
            websocket.send(b"bytes")
            assert websocket.recv() == b"bytes"
        with urllib.request.urlopen(f"{self.live_server_url}/", timeout=5) as response:
            assert response.status == 200

    def test_views_see_the_test_database(self):
        """Rows created by the test are visible to the view."""
        get_user_model().objects.create(username="dora")
        with self.connect("/count-users/") as websocket:
            assert websocket.receive() == "1"


def test_rejection_carries_status_headers_and_body(db):
    """HandshakeRejected exposes the HTTP answer."""
    try:
        WebSocketClient().connect("/no-such-socket/")
    except HandshakeRejected as rejected:
        assert rejected.status == 404
        assert rejected.headers
    else:
        raise AssertionError("expected a rejection")


def test_client_login_with_credentials(db):
    """WebSocketClient.login() logs in with a password, like django.test.Client.login()."""
    get_user_model().objects.create_user("erin", password="pw")
    client = WebSocketClient()
    assert client.login(username="erin", password="pw")
    with client.connect("/whoami/") as websocket:
        assert websocket.receive() == "erin"
        websocket.close()
        assert websocket.close_code == 1000


def test_connection_reports_normal_close(db):
    """After the view returns, receive() raises ConnectionClosedOK with 1000."""
    with WebSocketClient().connect("/subprotocol/") as websocket:
        websocket.receive()
        try:
            websocket.receive()
        except ConnectionClosedOK as closed:
            assert closed.code == 1000
        else:
            raise AssertionError("expected the connection to close")
