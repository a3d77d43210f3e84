"""Signed, short-lived tokens: a socket for a user without the session cookie.

A mobile app, a native program or another service has no browser session. A view
that knows the user (by the session, or by the app's own API authentication) mints
a token with :func:`websocket_token`; the client sends it with the handshake, and
:class:`~django_websocket.middleware.WebSocketTokenMiddleware` sets ``request.user``
from it, as the session would have::

    from django.contrib.auth.decorators import login_required
    from django.http import JsonResponse

    from django_websocket.tokens import websocket_token

    @login_required
    def socket_token(request):
        return JsonResponse({"token": websocket_token(request.user)})

A token is signed with ``SECRET_KEY`` (``django.core.signing``, a salt of its own) and
carries the user's primary key, the authentication backend, its expiry time and a
digest of the user's session hash: changing the password (or ``SECRET_KEY``) revokes
every token minted before. It is checked at the handshake only: the socket it opened
stays open after it expires.

Transports, in the middleware's order:

- the ``Sec-WebSocket-Protocol`` header: the client offers ``django-websocket`` and
  ``django-websocket.token.<token>`` (``new WebSocket(url, protocols)`` in a browser;
  ``websocket.js``'s ``token`` option); the server selects ``django-websocket``, never
  the token, when the view selects no subprotocol of its own;
- the ``token`` query parameter: ``?token=<token>``, simpler, but the URL and so the
  token lands in access logs (gunicorn's, nginx's, a proxy's).

A token is made of URL-safe base64 characters and dots, which are all valid in a
subprotocol name and in a query string without escaping.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.core import signing
from django.utils.crypto import constant_time_compare

from . import conf

#: The salt of the token signature: a signature made for anything else never verifies.
SALT = "django_websocket.tokens"
#: The subprotocol a client offers beside its token; the server selects it (browsers need one).
PROTOCOL = "django-websocket"
#: The prefix of the subprotocol carrying the token: ``django-websocket.token.<token>``.
PROTOCOL_PREFIX = "django-websocket.token."
#: The query parameter carrying the token: ``?token=<token>``.
QUERY_PARAMETER = "token"
#: ``signing``'s default separator, ``:``, is not allowed in a subprotocol name; ``.`` is,
#: and never occurs in URL-safe base64.
SEPARATOR = "."


class InvalidToken(Exception):
    """A token that does not let its bearer in: tampered, malformed, revoked, or for no active user.

    ``reason`` says which, for the server's log (never the token itself).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExpiredToken(InvalidToken):
    """A token whose signature is valid, but whose expiry time has passed."""


def _now() -> float:
    """The current time, in seconds since the epoch (tests replace it)."""
    return time.time()


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT, sep=SEPARATOR)


def _password_digest(user: Any) -> str:
    """A digest of *user*'s session hash: it changes with the password, as sessions do."""
    session_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    return hashlib.sha256(session_hash.encode()).hexdigest()[:16]


def _backends() -> list[str]:
    from django.conf import settings

    return list(settings.AUTHENTICATION_BACKENDS)


def websocket_token(user: Any, max_age: float | None = None, *, backend: str | None = None) -> str:
    """Return a signed token that opens sockets as *user* for *max_age* seconds.

    *max_age* defaults to ``WEBSOCKET_TOKEN_MAX_AGE`` (60 s). *backend* is the dotted path
    of the authentication backend that loads the user when the token is used, as for
    ``django.contrib.auth.login()``: by default the backend that authenticated *user*
    (``request.user`` has it), or the only one in ``AUTHENTICATION_BACKENDS``; with several
    backends and a user that none authenticated, give it, or ``ValueError`` is raised.
    """
    if max_age is None:
        max_age = conf.get("WEBSOCKET_TOKEN_MAX_AGE")
    if user is None or not getattr(user, "is_authenticated", False):
        raise ValueError("websocket_token() needs an authenticated user, not an anonymous one.")
    backends = _backends()
    backend = backend or getattr(user, "backend", None)
    if backend is None:
        if len(backends) != 1:
            raise ValueError(
                "Several authentication backends are configured: pass backend= to websocket_token() "
                "(the dotted path of the one that loads this user)."
            )
        backend = backends[0]
    pk = user._meta.pk.value_to_string(user)
    payload: list[Any] = [pk, _password_digest(user), int(_now() + max_age)]
    if not backends or backend != backends[0]:
        payload.append(backend)  # the first backend is implied: shorter tokens
    return _signer().sign_object(payload)


def verify_websocket_token(token: str) -> Any:
    """Return the active user *token* was minted for; raise :class:`InvalidToken` or :class:`ExpiredToken`.

    The user is loaded by the token's authentication backend, as the session loads it
    (``ModelBackend`` refuses inactive users), and gets its ``backend`` attribute.
    """
    from django.contrib.auth import get_user_model, load_backend
    from django.core.exceptions import ValidationError

    try:
        payload = _signer().unsign_object(token)
    except signing.BadSignature:
        raise InvalidToken("bad signature (tampered, or signed with another SECRET_KEY)") from None
    except ValueError:  # base64 or JSON that does not decode: only a signer of ours could have made it
        raise InvalidToken("malformed") from None
    if (
        not isinstance(payload, list)
        or len(payload) not in (3, 4)
        or not all(isinstance(part, str) for part in payload[:2] + payload[3:])
        or isinstance(payload[2], bool)
        or not isinstance(payload[2], int)
    ):
        raise InvalidToken("malformed")
    pk, digest, expires = payload[:3]
    if _now() > expires:
        raise ExpiredToken("expired")
    backends = _backends()
    backend_path = payload[3] if len(payload) == 4 else (backends[0] if backends else "")
    if backend_path not in backends:
        raise InvalidToken(f"backend {backend_path!r} is not in AUTHENTICATION_BACKENDS")
    try:
        user_id = get_user_model()._meta.pk.to_python(pk)
    except ValidationError:
        raise InvalidToken("malformed user id") from None
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        raise InvalidToken("no such active user")
    if not constant_time_compare(digest, _password_digest(user)):
        raise InvalidToken("revoked: the user's password changed since it was minted")
    user.backend = backend_path
    return user
