"""Websocket endpoints for the tests: test_project's demos plus scenario views."""

import gevent
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import permission_required
from django.urls import path, reverse

from django_websocket.decorators import websocket
from test_project.websocket_urls import urlpatterns as demo_urlpatterns


@websocket
def close_with_reason(request, ws):
    """Close at once with a private-use code and a reason."""
    ws.close(4001, "custom reason")


@websocket
def concurrent_senders(request, ws):
    """On any message, two greenlets send big binary and small text frames at once, then "done"."""
    ws.receive()
    big = bytes(range(256)) * 1024  # 256 KiB, a pattern the client can check

    def send_big():
        for _ in range(20):
            ws.send(big)

    def send_small():
        for index in range(500):
            ws.send(f"small {index}")

    gevent.joinall([gevent.spawn(send_big), gevent.spawn(send_small)], raise_error=True)
    ws.send("done")
    for _ in ws:
        pass


@websocket
def raise_after_accept(request, ws):
    """Fail after the 101: the client sees close 1011 and no details."""
    ws.receive()
    raise RuntimeError("secret detail that must stay in the server log")


def raises_before_accept(view):
    def wrapper(request, *args, **kwargs):
        raise RuntimeError("secret detail before the accept")

    return wrapper


@raises_before_accept
@websocket
def raise_before_accept(request, ws):  # pragma: no cover - never reached
    ws.send("unreachable")


@permission_required("auth.delete_user", raise_exception=True)
@websocket
def forbidden(request, ws):  # pragma: no cover - refused before the accept
    ws.send("unreachable")


@websocket
def reverse_after_sleep(request, ws):
    """Reverse a websocket URL after yielding to other greenlets (urlconf is greenlet-local)."""
    gevent.sleep(0.2)
    ws.send(reverse("echo"))


@websocket(subprotocols=["chat.v2", "chat.v1"])
def subprotocol(request, ws):
    """Send back the selected subprotocol (or "none")."""
    ws.send(ws.subprotocol or "none")


@websocket
def count_users(request, ws):
    """The ORM works in a websocket view."""
    ws.send(str(get_user_model().objects.count()))


@websocket
def json_echo(request, ws):
    """receive_json / send_json round trip."""
    while True:
        ws.send_json({"got": ws.receive_json()})


urlpatterns = demo_urlpatterns + [
    path("close/", close_with_reason, name="close"),
    path("concurrent/", concurrent_senders, name="concurrent"),
    path("raise-after-accept/", raise_after_accept, name="raise-after-accept"),
    path("raise-before-accept/", raise_before_accept, name="raise-before-accept"),
    path("forbidden/", forbidden, name="forbidden"),
    path("reverse/", reverse_after_sleep, name="reverse"),
    path("subprotocol/", subprotocol, name="subprotocol"),
    path("count-users/", count_users, name="count-users"),
    path("json/", json_echo, name="json"),
]
