"""django_websocket.tokens and WebSocketTokenMiddleware, in process: mint, verify, refuse, select.

The real-server and browser runs are in ``tests/test_tokens_integration.py``.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory, override_settings

from django_websocket import tokens
from django_websocket.checks import check_token_settings
from django_websocket.middleware import WebSocketTokenMiddleware, token_from_request
from django_websocket.testing import HandshakeRejected, WebSocketClient
from django_websocket.tokens import (
    PROTOCOL,
    PROTOCOL_PREFIX,
    ExpiredToken,
    InvalidToken,
    verify_websocket_token,
    websocket_token,
)

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
ALLOW_ALL_BACKEND = "django.contrib.auth.backends.AllowAllUsersModelBackend"
#: RFC 7230 token characters: what a subprotocol name may hold (browsers refuse anything else).
TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("tara", password="first password")


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock for the tokens module: ``clock.now`` seconds since the epoch, settable."""

    class Clock:
        now = 1_800_000_000.0

    monkeypatch.setattr(tokens, "_now", lambda: Clock.now)
    return Clock


# ---------------------------------------------------------------------------------- mint and verify


def test_token_round_trip(user):
    """A fresh token verifies to its user, loaded by the backend, with ``backend`` set."""
    token = websocket_token(user)
    verified = verify_websocket_token(token)
    assert verified == user
    assert verified.backend == MODEL_BACKEND


def test_token_is_a_valid_subprotocol_and_short(user):
    """Only RFC 7230 token characters (no ':'), so it fits Sec-WebSocket-Protocol; and short."""
    token = websocket_token(user)
    assert TOKEN_CHARS.match(PROTOCOL_PREFIX + token), token
    assert ":" not in token
    assert len(token) < 120


def test_expiry_with_the_default_max_age(user, clock):
    """WEBSOCKET_TOKEN_MAX_AGE (60 s by default) after minting, the token has expired."""
    token = websocket_token(user)
    clock.now += 59
    assert verify_websocket_token(token) == user
    clock.now += 2
    with pytest.raises(ExpiredToken):
        verify_websocket_token(token)


@override_settings(WEBSOCKET_TOKEN_MAX_AGE=5)
def test_expiry_follows_the_setting_and_explicit_max_age(user, clock):
    """The setting is the default lifetime; max_age= overrides it per token."""
    short, long = websocket_token(user), websocket_token(user, max_age=3600)
    clock.now += 10
    with pytest.raises(ExpiredToken):
        verify_websocket_token(short)
    assert verify_websocket_token(long) == user
    clock.now += 3600
    with pytest.raises(ExpiredToken):
        verify_websocket_token(long)


def test_expired_is_an_invalid_token(user):
    """ExpiredToken is an InvalidToken: one except clause refuses them all."""
    with pytest.raises(InvalidToken) as caught:
        verify_websocket_token(websocket_token(user, max_age=-1))
    assert isinstance(caught.value, ExpiredToken)


def test_tampered_tokens_are_refused(user):
    """Any changed character, another payload with the old signature, or garbage: InvalidToken."""
    token = websocket_token(user)
    other = get_user_model().objects.create_user("mallory")
    payload, signature = token.rsplit(".", 1)
    forged = websocket_token(other).rsplit(".", 1)[0] + "." + signature
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, forged, payload, "", "garbage", "a.b", token + "x"):
        with pytest.raises(InvalidToken) as caught:
            verify_websocket_token(bad)
        assert not isinstance(caught.value, ExpiredToken)


def test_another_secret_key_or_salt_is_refused(user):
    """Signed with another SECRET_KEY, or by django.core.signing for something else: refused."""
    from django.core import signing

    with override_settings(SECRET_KEY="another secret key, not this site's one at all"):
        foreign = websocket_token(user)
    with pytest.raises(InvalidToken):
        verify_websocket_token(foreign)
    unsalted = signing.Signer(sep=".").sign_object([str(user.pk), "0" * 16, 2**40])
    with pytest.raises(InvalidToken):
        verify_websocket_token(unsalted)


def test_password_change_revokes(user):
    """A token minted before the password changed no longer opens anything."""
    token = websocket_token(user)
    user.set_password("second password")
    user.save()
    with pytest.raises(InvalidToken, match="password"):
        verify_websocket_token(token)
    assert verify_websocket_token(websocket_token(user)) == user


def test_inactive_or_deleted_user_is_refused(user):
    """ModelBackend does not load an inactive user, as for a session; nor a deleted one."""
    token = websocket_token(user)
    user.is_active = False
    user.save()
    with pytest.raises(InvalidToken, match="no such active user"):
        verify_websocket_token(token)
    user.delete()
    with pytest.raises(InvalidToken):
        verify_websocket_token(token)


def test_anonymous_user_cannot_get_a_token():
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(ValueError):
        websocket_token(AnonymousUser())


@override_settings(AUTHENTICATION_BACKENDS=[MODEL_BACKEND, ALLOW_ALL_BACKEND])
def test_backend_is_carried(user):
    """The backend travels in the token (the first one is implied); several backends need backend=."""
    with pytest.raises(ValueError, match="backend="):
        websocket_token(user)
    user.is_active = False
    user.save()
    second = websocket_token(user, backend=ALLOW_ALL_BACKEND)
    assert verify_websocket_token(second).backend == ALLOW_ALL_BACKEND
    first = websocket_token(user, backend=MODEL_BACKEND)
    assert len(first) < len(second)
    with pytest.raises(InvalidToken):  # ModelBackend refuses the inactive user
        verify_websocket_token(first)
    with override_settings(AUTHENTICATION_BACKENDS=[MODEL_BACKEND]):
        with pytest.raises(InvalidToken, match="AUTHENTICATION_BACKENDS"):
            verify_websocket_token(second)


# ---------------------------------------------------------------------------------- the middleware


def test_token_from_request_only_on_handshakes():
    """A page's ?token= is no token; on a handshake the subprotocol wins over the query."""
    from django_websocket.decorators import HANDSHAKE_ATTRIBUTE
    from django_websocket.handshake import Handshake

    request = RequestFactory().get("/page/?token=abc")
    assert token_from_request(request) == (None, None)
    setattr(request, HANDSHAKE_ATTRIBUTE, Handshake("k", (), "", None))
    assert token_from_request(request) == ("abc", "query")
    setattr(request, HANDSHAKE_ATTRIBUTE, Handshake("k", ("x", PROTOCOL, PROTOCOL_PREFIX + "def"), "", None))
    assert token_from_request(request) == ("def", "subprotocol")
    empty = RequestFactory().get("/page/?token=")
    setattr(empty, HANDSHAKE_ATTRIBUTE, Handshake("k", (PROTOCOL_PREFIX,), "", None))
    assert token_from_request(empty) == (None, None)


def test_a_handshake_without_query_string_never_parses_one():
    """No query string: no token, and request.GET is not built for it."""
    from django_websocket.decorators import HANDSHAKE_ATTRIBUTE
    from django_websocket.handshake import Handshake

    request = RequestFactory().get("/socket/")
    setattr(request, HANDSHAKE_ATTRIBUTE, Handshake("k", (), "", None))
    assert token_from_request(request) == (None, None)
    assert "GET" not in request.__dict__


def test_plain_requests_pass_untouched():
    """Not a handshake: the middleware neither reads a token nor touches the response."""
    request = RequestFactory().get("/?token=garbage")
    sentinel = object()
    assert WebSocketTokenMiddleware(lambda request: sentinel)(request) is sentinel


def connect_json(path, **kwargs):
    with WebSocketClient().connect(path, **kwargs) as websocket:
        return websocket.receive_json(), websocket


def test_subprotocol_token_connects_as_its_user(user):
    """django-websocket + django-websocket.token.<t>: the user is set, django-websocket selected."""
    offered = [PROTOCOL, PROTOCOL_PREFIX + websocket_token(user)]
    answer, websocket = connect_json("/token-user/", subprotocols=offered)
    assert answer == {"user": "tara", "subprotocol": PROTOCOL}
    assert websocket.response.headers["Sec-WebSocket-Protocol"] == PROTOCOL


def test_the_views_own_subprotocol_wins(user):
    """A view that selects a subprotocol of its own keeps it; the token still authenticates."""
    offered = ["chat.v1", PROTOCOL, PROTOCOL_PREFIX + websocket_token(user)]
    answer, _ = connect_json("/token-user/", subprotocols=offered)
    assert answer == {"user": "tara", "subprotocol": "chat.v1"}


def test_query_token_connects_as_its_user(user):
    answer, websocket = connect_json(f"/token-user/?token={websocket_token(user)}")
    assert answer == {"user": "tara", "subprotocol": None}
    assert "Sec-WebSocket-Protocol" not in websocket.response.headers


def test_token_wins_over_the_session(user):
    """A handshake with a session cookie for one user and a token for another is the token's user."""
    other = get_user_model().objects.create_user("sam")
    client = WebSocketClient()
    client.force_login(other)
    with client.connect(f"/token-user/?token={websocket_token(user)}") as websocket:
        assert websocket.receive_json()["user"] == "tara"
    with client.connect("/token-user/") as websocket:
        assert websocket.receive_json()["user"] == "sam"


def test_no_token_falls_back_to_the_session(db):
    """No token: anonymous here, and login_required's 302 on /whoami/, as without the middleware."""
    answer, _ = connect_json("/token-user/")
    assert answer == {"user": "", "subprotocol": None}
    with pytest.raises(HandshakeRejected) as caught:
        WebSocketClient().connect("/whoami/")
    assert caught.value.status == 302


@pytest.mark.parametrize("transport", ["subprotocol", "query"])
def test_bad_tokens_get_401_before_the_upgrade(user, clock, transport, caplog):
    """Expired, tampered and revoked tokens: 401 with WWW-Authenticate, a warning, no token in it."""
    valid = websocket_token(user)
    expired = websocket_token(user, max_age=1)
    clock.now += 2
    cases = {"expired": expired, "tampered": valid[:-2] + "xx", "malformed": "not-a-token"}
    for name, token in cases.items():
        caplog.clear()
        with pytest.raises(HandshakeRejected) as caught:
            if transport == "subprotocol":
                WebSocketClient().connect("/whoami/", subprotocols=[PROTOCOL, PROTOCOL_PREFIX + token])
            else:
                WebSocketClient().connect(f"/whoami/?token={token}")
        rejected = caught.value
        assert rejected.status == 401, name
        assert rejected.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert (b"expired" in rejected.body) == (name == "expired"), rejected.body
        warnings = [r.getMessage() for r in caplog.records if r.name == "django_websocket"]
        assert warnings and "websocket token refused (401) for /whoami/" in warnings[0], warnings
        assert f"({transport})" in warnings[0]
        assert token not in "".join(warnings)


# ---------------------------------------------------------------------------------- the checks


def test_max_age_check():
    """E020: WEBSOCKET_TOKEN_MAX_AGE is a positive number of seconds."""
    for bad in (0, -1, "60", None, True, float("nan")):
        with override_settings(WEBSOCKET_TOKEN_MAX_AGE=bad):
            assert [m.id for m in check_token_settings()] == ["django_websocket.E020"], bad
    for good in (1, 60, 0.5, 3600):
        with override_settings(WEBSOCKET_TOKEN_MAX_AGE=good):
            assert check_token_settings() == []


def test_middleware_order_check():
    """W005: the token middleware listed before AuthenticationMiddleware (whose user would win)."""
    auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    token = "django_websocket.middleware.WebSocketTokenMiddleware"
    for middleware, expected in (
        ([auth, token], []),
        ([token], []),
        ([auth], []),
        ([token, auth], ["django_websocket.W005"]),
    ):
        with override_settings(MIDDLEWARE=middleware):
            assert [m.id for m in check_token_settings()] == expected, middleware


def test_demo_token_view(user):
    """The demo's /socket-token/ (the docs' example) mints for the logged-in user; anonymous: 302."""
    from django.test import Client

    client = Client()
    assert client.get("/socket-token/").status_code == 302
    client.force_login(user)
    token = client.get("/socket-token/").json()["token"]
    assert verify_websocket_token(token) == user
