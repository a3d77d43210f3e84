"""Websocket views of the demo.

Each view runs after the handshake is accepted; middleware and ordinary Django
decorators such as ``login_required`` run first and may refuse with an HTTP response.
"""

from django.contrib.auth.decorators import login_required

from django_websocket.decorators import websocket as websocket_view
from django_websocket.exceptions import ConnectionClosed


@websocket_view
def echo(request, websocket):
    """Send every message back unchanged: text as text, binary as binary."""
    for message in websocket:
        websocket.send(message)


@websocket_view
def ping(request, websocket):
    """Answer "pong" to "ping" and "ping" to "pong"; stay silent otherwise."""
    replies = {"ping": "pong", "pong": "ping"}
    for message in websocket:
        reply = replies.get(message) if isinstance(message, str) else None
        if reply is not None:
            websocket.send(reply)


@login_required
@websocket_view
def whoami(request, websocket):
    """Send the logged-in user's username, then wait until the client closes."""
    websocket.send(request.user.username)
    while True:
        try:
            websocket.receive()
        except ConnectionClosed:
            return
