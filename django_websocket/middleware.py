"""Middleware for websocket handshakes.

:class:`WebSocketTokenMiddleware` lets a client without the session cookie open a
socket as a user, with a token minted by :func:`django_websocket.tokens.websocket_token`.
List it after ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        # ...
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_websocket.middleware.WebSocketTokenMiddleware",
        # ...
    ]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from .decorators import HANDSHAKE_ATTRIBUTE
from .response import AcceptWebSocket, handshake_refused
from .tokens import (
    PROTOCOL,
    PROTOCOL_PREFIX,
    QUERY_PARAMETER,
    ExpiredToken,
    InvalidToken,
    verify_websocket_token,
)

logger = logging.getLogger("django_websocket")

#: The status of a handshake whose token is present but expired, tampered, malformed or revoked.
REFUSED_STATUS = 401


def token_from_request(request: HttpRequest) -> tuple[str | None, str | None]:
    """Return ``(token, transport)`` of a websocket handshake, or ``(None, None)`` without one.

    *transport* is ``"subprotocol"`` (an offered ``django-websocket.token.<token>``, which
    wins) or ``"query"`` (the ``token`` query parameter). An empty token is no token.
    Requests that are not websocket handshakes never carry one: a page's ``?token=``
    logs nobody in.
    """
    handshake = getattr(request, HANDSHAKE_ATTRIBUTE, None)
    if handshake is None:
        return None, None
    for subprotocol in handshake.subprotocols:
        if subprotocol.startswith(PROTOCOL_PREFIX) and len(subprotocol) > len(PROTOCOL_PREFIX):
            return subprotocol.removeprefix(PROTOCOL_PREFIX), "subprotocol"
    if not request.META.get("QUERY_STRING"):
        return None, None  # most handshakes: no query string to parse into request.GET
    token = request.GET.get(QUERY_PARAMETER)
    if token:
        return token, "query"
    return None, None


class WebSocketTokenMiddleware:
    """Authenticate websocket handshakes that carry a token; leave every other request alone.

    - A valid token: ``request.user`` is its user (loaded as the session would load it),
      whatever the session says.
    - An expired, tampered, malformed or revoked token (or one for a user who is gone or
      inactive): ``401 Unauthorized`` before the upgrade, with
      ``WWW-Authenticate: Bearer error="invalid_token"``, and a warning on the
      ``django_websocket`` logger naming the reason (never the token).
    - No token: nothing changes; the session decides, as without this middleware.

    When the client offered the ``django-websocket`` subprotocol and the view selected
    none of its own, ``django-websocket`` is selected: a browser fails a connection that
    offered subprotocols and got none back. The token's own subprotocol is never sent back.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        handshake = getattr(request, HANDSHAKE_ATTRIBUTE, None)
        if handshake is None:
            return self.get_response(request)
        token, transport = token_from_request(request)
        if token is not None:
            try:
                user = verify_websocket_token(token)
            except InvalidToken as error:
                return self.refuse(request, transport, error)
            _set_user(request, user)
        response = self.get_response(request)
        if isinstance(response, AcceptWebSocket) and response.subprotocol is None:
            if PROTOCOL in handshake.subprotocols:
                response.subprotocol = PROTOCOL
        return response

    def refuse(self, request: HttpRequest, transport: str | None, error: InvalidToken) -> HttpResponse:
        """The 401 for a token that does not let its bearer in."""
        expired = isinstance(error, ExpiredToken)
        logger.warning(
            "websocket token refused (%d) for %s (%s): %s",
            REFUSED_STATUS, request.path, transport, error.reason,
        )  # fmt: skip
        description = "The token has expired" if expired else "The token is invalid"
        return handshake_refused(
            REFUSED_STATUS,
            f"{description}: get a new one and connect again.",
            {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
        )


def _set_user(request: HttpRequest, user: Any) -> None:
    """Make *user* ``request.user`` (and ``request.auser()``), replacing the session's."""

    async def auser() -> Any:
        return user

    request.user = user
    request.auser = auser  # type: ignore[attr-defined]
