"""``@websocket``: mark a Django view as a websocket endpoint.

::

    from django_websocket.decorators import websocket

    @websocket
    def echo(request, websocket):
        for message in websocket:
            websocket.send(message)

The decorated view runs *after* the handshake is accepted. Everything before
it — middleware, URL resolution, decorators stacked above ``@websocket`` such as
``login_required`` or ``permission_required`` — runs first and may refuse the
connection with an ordinary HTTP response (302, 403, 404…), which the client
receives instead of ``101 Switching Protocols``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, overload

from django.http import HttpRequest, HttpResponse

from .handshake import select_subprotocol
from .response import AcceptWebSocket, upgrade_required

#: The attribute the handler sets on requests that carry a valid websocket handshake.
HANDSHAKE_ATTRIBUTE = "websocket_handshake"

View = Callable[..., Any]


@overload
def websocket(view: View, /) -> Callable[..., HttpResponse]: ...
@overload
def websocket(*, subprotocols: Sequence[str] = ()) -> Callable[[View], Callable[..., HttpResponse]]: ...


def websocket(view: View | None = None, /, *, subprotocols: Sequence[str] = ()) -> Any:
    """Turn ``view(request, websocket, *args, **kwargs)`` into a websocket endpoint.

    Use as ``@websocket`` or ``@websocket(subprotocols=["chat.v2", "chat.v1"])``:
    the first of *subprotocols* (in the server's order of preference) that the client
    offers is selected and sent back; it is ``websocket.subprotocol`` in the view.

    The returned Django view answers a request that carries a websocket handshake
    with an :class:`~django_websocket.response.AcceptWebSocket` marker, and any other
    request with ``426 Upgrade Required``.
    """

    supported = tuple(subprotocols)

    def decorator(view: View) -> Callable[..., HttpResponse]:
        @wraps(view)
        def handshake_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            handshake = getattr(request, HANDSHAKE_ATTRIBUTE, None)
            if handshake is None:
                return upgrade_required()
            subprotocol = select_subprotocol(handshake.subprotocols, supported)
            return AcceptWebSocket(view, args, kwargs, subprotocol)

        handshake_view.websocket_view = view  # type: ignore[attr-defined]
        return handshake_view

    if view is not None:
        return decorator(view)
    return decorator
