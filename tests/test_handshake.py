"""Unit tests of django_websocket.handshake: pure functions over environ dicts."""

from __future__ import annotations

import pytest

from django_websocket.exceptions import HandshakeError
from django_websocket.handshake import (
    accept_headers,
    accept_key,
    check_origin,
    is_upgrade_request,
    is_valid_key,
    parse_handshake,
    select_subprotocol,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def environ(**overrides: str) -> dict:
    base = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "keep-alive, Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def test_accept_key_matches_rfc_6455_example():
    """RFC 6455 §1.3's sample key gives its sample accept value."""
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_handshake_is_parsed():
    """A browser-like handshake parses, with subprotocols in the client's order."""
    handshake = parse_handshake(
        environ(HTTP_SEC_WEBSOCKET_PROTOCOL="chat.v1, chat.v2", HTTP_ORIGIN="http://localhost")
    )
    assert handshake.key == KEY
    assert handshake.subprotocols == ("chat.v1", "chat.v2")
    assert handshake.origin == "http://localhost"
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in accept_headers(handshake)


def test_upgrade_detection_is_token_based_and_case_insensitive():
    """Upgrade: WebSocket (any case, in a list) is an upgrade; other upgrades are not."""
    assert is_upgrade_request({"HTTP_UPGRADE": "WebSocket"})
    assert is_upgrade_request({"HTTP_UPGRADE": "h2c, websocket"})
    assert not is_upgrade_request({"HTTP_UPGRADE": "h2c"})
    assert not is_upgrade_request({})


@pytest.mark.parametrize(
    "overrides",
    [
        {"REQUEST_METHOD": "POST"},
        {"SERVER_PROTOCOL": "HTTP/1.0"},
        {"HTTP_CONNECTION": "keep-alive"},
        {"HTTP_SEC_WEBSOCKET_KEY": None},
        {"HTTP_SEC_WEBSOCKET_KEY": "not base64!"},
        {"HTTP_SEC_WEBSOCKET_KEY": "c2hvcnQ="},  # base64, but 5 bytes
        {"HTTP_SEC_WEBSOCKET_KEY": f"{KEY},{KEY}"},  # duplicated header, comma-joined
    ],
    ids=["post", "http10", "no-connection-upgrade", "no-key", "bad-base64", "short-key", "duplicate-key"],
)
def test_malformed_handshakes_are_400(overrides):
    """Each malformed handshake is refused with 400 and a message, never a crash."""
    with pytest.raises(HandshakeError) as caught:
        parse_handshake(environ(**overrides))
    assert caught.value.status == 400
    assert caught.value.message


@pytest.mark.parametrize("version", ["8", "", "13, 13"])
def test_unsupported_version_names_13(version):
    """A version other than 13 gets 400 with Sec-WebSocket-Version: 13."""
    with pytest.raises(HandshakeError) as caught:
        parse_handshake(environ(HTTP_SEC_WEBSOCKET_VERSION=version))
    assert caught.value.status == 400
    assert caught.value.headers == {"Sec-WebSocket-Version": "13"}


def test_key_validation():
    """Keys must be strict base64 of 16 bytes."""
    assert is_valid_key(KEY)
    assert not is_valid_key("")
    assert not is_valid_key("é" * 24)


def test_subprotocol_selection_uses_server_preference():
    """The server's first supported subprotocol that the client offered wins."""
    assert select_subprotocol(("a", "b"), ["b", "a"]) == "b"
    assert select_subprotocol(("a",), ["c"]) is None
    assert select_subprotocol((), ["c"]) is None


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://localhost:8000", ["localhost"]),
        ("https://app.example.com", [".example.com"]),
        ("https://EXAMPLE.com", ["example.com"]),
        ("http://anything.test", ["*"]),
        ("https://example.com:8443", ["https://example.com:8443"]),
        ("http://[::1]:8000", ["[::1]"]),
    ],
)
def test_allowed_origins(origin, allowed):
    """Host patterns ignore the port as ALLOWED_HOSTS does; full origins match exactly."""
    check_origin(origin, allowed, allow_missing=False)


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://evil.test", ["localhost"]),
        ("http://example.com.evil.test", [".example.com"]),
        ("https://example.com:9999", ["https://example.com:8443"]),
        ("null", ["localhost"]),
        ("not a url", ["localhost"]),
    ],
)
def test_refused_origins_are_403(origin, allowed):
    """Foreign, opaque ("null") and garbage origins are refused with 403."""
    with pytest.raises(HandshakeError) as caught:
        check_origin(origin, allowed, allow_missing=True)
    assert caught.value.status == 403


def test_origin_decisions_follow_the_allowed_patterns_they_were_made_with():
    """A remembered decision is per (origin, patterns): other patterns decide again."""
    check_origin("https://app.example.com", [".example.com"], allow_missing=False)
    check_origin("https://app.example.com", (".example.com",), allow_missing=False)  # remembered
    with pytest.raises(HandshakeError):
        check_origin("https://app.example.com", ["other.test"], allow_missing=False)


def test_missing_origin_policy():
    """No Origin header passes only while allow_missing is on."""
    check_origin(None, ["localhost"], allow_missing=True)
    with pytest.raises(HandshakeError):
        check_origin(None, ["localhost"], allow_missing=False)
