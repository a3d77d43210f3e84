"""Unit tests of django_websocket.decorators: what a @websocket view answers before the upgrade."""

from __future__ import annotations

from django.test import RequestFactory

from django_websocket.decorators import HANDSHAKE_ATTRIBUTE, websocket
from django_websocket.handshake import Handshake
from django_websocket.response import AcceptWebSocket


def view(request, ws, room):
    """A websocket view (never called by these tests)."""


def handshake(*subprotocols: str) -> Handshake:
    return Handshake(key="dGhlIHNhbXBsZSBub25jZQ==", subprotocols=subprotocols, extensions="", origin=None)


def test_plain_request_gets_426():
    """Without a handshake the view answers 426 naming websocket version 13."""
    response = websocket(view)(RequestFactory().get("/room/lobby/"), room="lobby")
    assert response.status_code == 426
    assert response["Upgrade"] == "websocket"
    assert response["Sec-WebSocket-Version"] == "13"


def test_handshake_gets_the_accept_marker_with_view_and_arguments():
    """With a handshake the view returns the marker carrying the view and its URL arguments."""
    request = RequestFactory().get("/room/lobby/")
    setattr(request, HANDSHAKE_ATTRIBUTE, handshake())
    response = websocket(view)(request, room="lobby")
    assert isinstance(response, AcceptWebSocket)
    assert response.status_code == 101
    assert (response.view, response.view_args, response.view_kwargs) == (view, (), {"room": "lobby"})
    assert response.subprotocol is None
    assert "Content-Type" not in response


def test_subprotocol_follows_server_preference():
    """@websocket(subprotocols=...) selects its first entry that the client offered."""
    request = RequestFactory().get("/")
    setattr(request, HANDSHAKE_ATTRIBUTE, handshake("v1", "v2"))
    response = websocket(subprotocols=["v2", "v1"])(view)(request, room="x")
    assert response.subprotocol == "v2"


def test_decorated_view_keeps_its_name_and_is_marked():
    """functools.wraps keeps the name; the original view is reachable for introspection."""
    decorated = websocket(view)
    assert decorated.__name__ == "view"
    assert decorated.websocket_view is view
