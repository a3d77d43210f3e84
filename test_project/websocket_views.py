"""Websocket views of the demo.

Each view runs after the handshake is accepted; middleware and ordinary Django
decorators such as ``login_required`` run first and may refuse with an HTTP response.
"""

import logging

from django.contrib.auth.decorators import login_required

from django_websocket import publish
from django_websocket.decorators import websocket as websocket_view
from django_websocket.events import ClientMessage, Resync
from django_websocket.exceptions import ConnectionClosed, PublishError
from django_websocket.outbox import broker_unavailable

from . import chat as chat_rules
from .models import Room

logger = logging.getLogger(__name__)

RESYNC = {"type": "resync"}
#: What a broadcast's sender hears when its message could not be published (the broker is away).
BROKER_AWAY = "[not sent: the message broker is unavailable, try again in a moment]"
#: What a chat poster hears when its stored message waits in the outbox for the broker.
QUEUED = "Saved. The room sees it as soon as the message broker is back."


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


@websocket_view
def broadcast(request, websocket, room):
    """Publish every text message to ``broadcast:<room>``; forward everything published there.

    Every member, the sender included, receives each message unchanged. Binary messages
    from the client are ignored. No database on this path.
    """
    channel = f"broadcast:{room}"
    # forward=True: the hub writes the room's messages straight to the client (one shared
    # frame per message), without waking this view; a broadcast keeps no state to resync.
    websocket.subscribe(channel, forward=True)
    for message in websocket:
        if isinstance(message, str):
            try:
                publish(channel, message)
            except PublishError as error:  # the broker is away: this socket stays, its sender is told
                logger.warning("broadcast %s: not published: %s", room, error)
                websocket.send(BROKER_AWAY)


@websocket_view
def chat(request, websocket, room):
    """The chat room *room*: store and publish valid messages; the room's channel goes to the client.

    The hub forwards the channel with resume and presence (``docs/topics/history.md``): the page
    names the last message id it has (``?since=chat:<room>@<id>``: the position it was
    rendered at, then the last one received) and gets what came after, exactly once,
    before live messages, or a ``gap`` frame (it then reloads ``messages.json``). The
    room's members see this connection under the handle the page passes as
    ``?handle=`` when it is valid, else under the username ("anonymous" logged out).

    The page sends acknowledged messages (``django_websocket.acks``): each is stored once per
    client id, then acknowledged; a resend after a reconnection is acknowledged again, not
    posted twice. Bad input gets a nack (``{"type": "error", "error": ...}`` for a plain
    message) sent to this client only; the connection stays open. ``{"type": "resync"}``
    (reload ``messages.json``) is sent when the hub may have missed messages it cannot
    recover (a channel without history).
    """
    room, _ = Room.objects.get_or_create(name=room)
    websocket.subscribe(chat_rules.channel(room.name), forward=True, resume=True, presence=_presence(request))
    for event in websocket.events():
        if isinstance(event, ClientMessage):
            _post(websocket, room, event)
        elif isinstance(event, Resync):
            # Forwarded with resume, the hub recovers what the broker lost, or sends the client
            # a gap frame; a plain Resync means the channel keeps no history to recover from.
            websocket.send_json(RESYNC)


def _presence(request):
    """How this connection appears in the room's presence: the ``handle`` parameter, if valid."""
    try:
        return {"name": chat_rules.parse_handle(request.GET.get("handle", ""))}
    except chat_rules.InvalidMessage:
        return True  # the username, or "anonymous"


def _post(websocket, room, message):
    """Validate and post one client message; answer problems to this client only.

    An acknowledged message (``message.id``, sent by the page with ``{ack: true}``) is stored
    with its id, at most once (``post_message``'s unique ``client_id``), and acknowledged
    after the commit, or refused with a nack; a resend is acknowledged again, not stored.
    """
    try:
        chat_rules.post_message(room, **chat_rules.parse_message(message.data), client_id=message.id)
    except chat_rules.InvalidMessage as error:
        if message.id is None:
            websocket.send_json({"type": "error", "error": str(error)})
        else:
            websocket.nack(message, str(error))
        return
    websocket.ack(message)
    if broker_unavailable():
        websocket.send_json({"type": "notice", "notice": QUEUED})
