"""Tests of django_websocket.handler through the in-process test client (Django's test database)."""

from __future__ import annotations

import logging

import gevent
import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.test import TestCase, override_settings

from django_websocket.exceptions import ConnectionClosedError, ConnectionClosedOK
from django_websocket.testing import HandshakeRejected, WebSocketClient


class HandshakeDecisionTests(TestCase):
    """Accept-or-refuse happens before the upgrade, as real HTTP."""

    def setUp(self):
        self.client = WebSocketClient()

    def rejected(self, path: str, **kwargs) -> HandshakeRejected:
        with pytest.raises(HandshakeRejected) as caught:
            self.client.connect(path, **kwargs)
        return caught.value

    def test_unknown_path_is_404(self):
        """A path not in WEBSOCKET_URLCONF gets HTTP 404, not a 101."""
        assert self.rejected("/no-such-socket/").status == 404

    def test_login_required_redirects_anonymous_users(self):
        """login_required stacked above @websocket answers with its redirect to LOGIN_URL."""
        refusal = self.rejected("/whoami/")
        assert refusal.status == 302
        assert refusal.headers["Location"].startswith("/accounts/login/")

    def test_logged_in_user_is_seen_by_the_view(self):
        """A session made by force_login reaches the view as request.user."""
        self.client.force_login(get_user_model().objects.create(username="bob"))
        with self.client.connect("/whoami/") as websocket:
            assert websocket.receive() == "bob"

    def test_permission_denied_is_403(self):
        """PermissionDenied before the accept is an HTTP 403."""
        assert self.rejected("/forbidden/").status == 403

    def test_foreign_origin_is_403_and_own_origin_accepted(self):
        """Cross-site websocket hijacking defence: Origin must match ALLOWED_HOSTS."""
        refusal = self.rejected("/echo/", origin="http://evil.example")
        assert refusal.status == 403
        with self.client.connect("/echo/", origin="http://localhost:8000") as websocket:
            websocket.send("same site")
            assert websocket.receive() == "same site"

    @override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://app.example.com"])
    def test_allowed_origins_setting_replaces_allowed_hosts(self):
        """WEBSOCKET_ALLOWED_ORIGINS, when set, is the list that counts."""
        assert self.rejected("/echo/", origin="http://localhost").status == 403
        self.client.connect("/echo/", origin="https://app.example.com").close()

    @override_settings(WEBSOCKET_ALLOW_MISSING_ORIGIN=False)
    def test_missing_origin_can_be_refused(self):
        """With WEBSOCKET_ALLOW_MISSING_ORIGIN off, a handshake without Origin is 403."""
        assert self.rejected("/echo/").status == 403

    def test_bad_version_is_400_naming_13(self):
        """An unsupported version is 400 with Sec-WebSocket-Version: 13."""
        refusal = self.rejected("/echo/", headers=[("Sec-WebSocket-Version", "8")])
        assert refusal.status == 400
        assert refusal.headers["Sec-WebSocket-Version"] == "13"

    def test_error_before_accept_is_generic_500(self):
        """An exception before the accept is a 500 whose body shows no details."""
        with self.assertLogs("django.request", logging.ERROR):
            refusal = self.rejected("/raise-before-accept/")
        assert refusal.status == 500
        assert b"secret" not in refusal.body

    def test_selected_subprotocol_is_sent_back(self):
        """The server's preferred subprotocol among the client's offers is selected."""
        with self.client.connect("/subprotocol/", subprotocols=["chat.v1", "chat.v2"]) as websocket:
            assert websocket.subprotocol == "chat.v2"
            assert websocket.receive() == "chat.v2"

    def test_orm_works_in_views(self):
        """The view uses the ORM (here in the test's own transaction)."""
        get_user_model().objects.create(username="carol")
        with self.client.connect("/count-users/") as websocket:
            assert websocket.receive() == "1"


class AfterAcceptTests(TestCase):
    """Behaviour once the 101 is sent."""

    def setUp(self):
        self.client = WebSocketClient()

    def test_view_error_closes_1011_without_details(self):
        """An exception in the view closes 1011; the reason carries no details; the log has them."""
        with self.assertLogs("django_websocket", logging.ERROR) as logs:
            websocket = self.client.connect("/raise-after-accept/")
            websocket.send("go")
            with pytest.raises(ConnectionClosedError) as caught:
                websocket.receive()
        assert caught.value.code == 1011
        assert "secret" not in caught.value.reason
        assert "secret detail" in "\n".join(logs.output)

    def test_view_returning_closes_1000(self):
        """A view that returns closes the socket normally."""
        with self.client.connect("/subprotocol/") as websocket:
            assert websocket.receive() == "none"
            with pytest.raises(ConnectionClosedOK):
                websocket.receive()
            assert websocket.close_code == 1000

    def test_json_round_trip(self):
        """receive_json/send_json in a view."""
        with self.client.connect("/json/") as websocket:
            websocket.send_json({"n": 1})
            assert websocket.receive_json() == {"got": {"n": 1}}

    def test_reverse_uses_websocket_urlconf_per_greenlet(self):
        """reverse() in a websocket view resolves against WEBSOCKET_URLCONF, undisturbed by others."""
        with self.client.connect("/reverse/") as websocket:
            # Meanwhile this greenlet sets another urlconf, as an HTTP request would.
            from django.urls import get_urlconf, set_urlconf

            set_urlconf("test_project.urls")
            try:
                assert websocket.receive() == "/echo/"
            finally:
                set_urlconf(None)
            assert get_urlconf() is None

    def test_request_signals_fire_once_per_connection(self):
        """request_started at the handshake, request_finished when the connection ends."""
        events = []

        def started(**kwargs):
            events.append("started")

        def finished(**kwargs):
            events.append("finished")

        request_started.connect(started)
        request_finished.connect(finished)
        try:
            with self.client.connect("/echo/") as websocket:
                websocket.send("x")
                websocket.receive()
                assert events == ["started"]
            with gevent.Timeout(3):
                while events != ["started", "finished"]:
                    gevent.sleep(0.01)
        finally:
            request_started.disconnect(started)
            request_finished.disconnect(finished)


@override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=1000)
def test_oversized_message_in_process_closes_1009(db):
    """The in-process client reports the server's 1009 as ConnectionClosedError."""
    with WebSocketClient().connect("/echo/") as websocket:
        websocket.send("x" * 2000)
        with pytest.raises(ConnectionClosedError) as caught:
            websocket.receive()
    assert caught.value.code == 1009


@override_settings(WEBSOCKET_MESSAGE_RATE_LIMIT=(5, 60))
def test_message_rate_limit_setting_closes_1008(db, caplog):
    """WEBSOCKET_MESSAGE_RATE_LIMIT reaches the socket: past the burst the client gets 1008, logged."""
    received = []
    with caplog.at_level(logging.WARNING, logger="django_websocket"):
        with WebSocketClient().connect("/echo/") as websocket:
            for index in range(10):
                websocket.send(f"m{index}")
            with pytest.raises(ConnectionClosedError) as caught:
                while True:
                    received.append(websocket.receive())
    # The view gets the first 5 (all read at once, its echoes then meet the closing socket).
    assert received == [f"m{index}" for index in range(len(received))] and len(received) <= 5
    assert (caught.value.code, caught.value.reason) == (1008, "rate limit exceeded")
    assert "websocket rate limit exceeded: /echo/ (anonymous or unknown user, peer" in caplog.text


@override_settings(WEBSOCKET_MESSAGE_RATE_LIMIT=None)
def test_message_rate_limit_none_disables_it(db):
    """None: 3,000 messages as fast as they are echoed (100 in flight) all come back."""
    with WebSocketClient().connect("/echo/") as websocket:
        for batch in range(30):
            for index in range(100):
                websocket.send(f"{batch}.{index}")
            assert [websocket.receive() for _ in range(100)] == [f"{batch}.{index}" for index in range(100)]


def wait_for_owner_count(owner, count: int) -> None:
    """Wait until this process counts *count* sockets for *owner* (the server side ends asynchronously)."""
    from django_websocket.handler import owner_connections

    with gevent.Timeout(5):
        while owner_connections.counts.get(owner, 0) != count:
            gevent.sleep(0.01)


@override_settings(WEBSOCKET_MAX_CONNECTIONS_PER_USER=2)
class PerUserCapTests(TestCase):
    """WEBSOCKET_MAX_CONNECTIONS_PER_USER: 429 with Retry-After, before the upgrade."""

    def setUp(self):
        self.client = WebSocketClient()

    def test_user_at_the_cap_gets_429_until_a_socket_closes(self):
        """Two sockets for bob; the third handshake is HTTP 429 + Retry-After; after a close it passes."""
        bob = get_user_model().objects.create(username="bob")
        self.client.force_login(bob)
        first = self.client.connect("/whoami/")
        second = self.client.connect("/whoami/")
        assert first.receive() == second.receive() == "bob"
        with self.assertLogs("django_websocket", logging.WARNING) as logs:
            with pytest.raises(HandshakeRejected) as caught:
                self.client.connect("/whoami/")
        assert caught.value.status == 429
        assert caught.value.headers["Retry-After"] == "5"
        assert f"refused (429) for /whoami/: user {bob.pk} already holds 2" in "\n".join(logs.output)
        # Another user is not affected.
        other = WebSocketClient()
        other.force_login(get_user_model().objects.create(username="carol"))
        with other.connect("/whoami/") as websocket:
            assert websocket.receive() == "carol"
        first.close()
        wait_for_owner_count(("user", bob.pk), 1)
        with self.client.connect("/whoami/") as third:
            assert third.receive() == "bob"
        second.close()
        wait_for_owner_count(("user", bob.pk), 0)

    def test_anonymous_session_is_capped_and_no_session_is_not(self):
        """An anonymous client with a stored session is capped by it; one without a session is not."""
        from django.conf import settings
        from django.contrib.sessions.backends.db import SessionStore

        anonymous = [WebSocketClient().connect("/echo/") for _ in range(3)]  # no session: no cap
        session = SessionStore()
        session["cart"] = [1]
        session.save()
        self.client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
        kept = [self.client.connect("/echo/") for _ in range(2)]
        with pytest.raises(HandshakeRejected) as caught:
            self.client.connect("/echo/")
        assert caught.value.status == 429
        # A session key the store does not know is no key: such clients are not capped.
        stranger = WebSocketClient()
        stranger.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
        extra = [stranger.connect("/echo/") for _ in range(3)]
        for websocket in anonymous + kept + extra:
            websocket.close()
        wait_for_owner_count(("session", session.session_key), 0)


def test_per_user_cap_is_off_by_default(db):
    """Without the setting, one user opens as many sockets as the worker takes (here 5)."""
    client = WebSocketClient()
    client.force_login(get_user_model().objects.create(username="dave"))
    sockets = [client.connect("/whoami/") for _ in range(5)]
    assert [websocket.receive() for websocket in sockets] == ["dave"] * 5
    for websocket in sockets:
        websocket.close()


@override_settings(WEBSOCKET_MAX_CONNECTIONS_PER_USER=2)
def test_per_user_cap_failing_to_load_the_user_is_a_generic_500(db, caplog):
    """If finding whose socket it is raises (the database is down…), the handshake is a plain 500."""
    from unittest import mock

    with mock.patch("django_websocket.handler.connection_owner", side_effect=RuntimeError("secret")):
        with pytest.raises(HandshakeRejected) as caught:
            WebSocketClient().connect("/echo/")
    assert caught.value.status == 500
    assert b"secret" not in caught.value.body
    assert "cannot tell whose connection it is" in caplog.text
