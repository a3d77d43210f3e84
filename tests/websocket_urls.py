"""Websocket endpoints for the tests: test_project's demos plus scenario views."""

import os

import gevent
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import permission_required
from django.urls import path, reverse

from django_websocket import publish
from django_websocket.decorators import websocket
from django_websocket.events import ChannelMessage, ClientMessage, Resync
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


def serve_channel(request, ws, channel, publish_client_messages):
    """Subscribe to *channel*, say so, then relay events until the client leaves.

    The first message is ``{"subscribed": channel, "pid": <worker pid>, "user": <username>}``,
    sent once the subscription is active: a message published after the client read it
    is delivered. Then: channel messages forwarded as published, ``{"resync": [...]}``
    after the worker lost Redis, and (if *publish_client_messages*) client messages
    published to *channel*.
    """
    ws.subscribe(channel)
    ws.send_json({"subscribed": channel, "pid": os.getpid(), "user": request.user.get_username()})
    for event in ws.events():
        if isinstance(event, ChannelMessage):
            ws.send(event)
        elif isinstance(event, Resync):
            ws.send_json({"resync": list(event.channels)})
        elif isinstance(event, ClientMessage) and publish_client_messages:
            publish(channel, event.data)


@websocket
def room(request, ws, name):
    """A room across workers: what a client sends is published to ``room:<name>`` for everyone."""
    serve_channel(request, ws, f"room:{name}", publish_client_messages=True)


@websocket
def notify(request, ws):
    """Listen to "notifications" (for everyone, this user, their groups or this session)."""
    serve_channel(request, ws, "notifications", publish_client_messages=False)


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
urlpatterns += [
    path("room/<str:name>/", room, name="room"),
    path("notify/", notify, name="notify"),
]


@websocket
def channel_room(request, ws, name):
    """Subscribe to room:<name>; publish what the client sends; forward what the room gets."""
    from django_websocket import publish
    from django_websocket.events import ChannelMessage, ClientMessage, Resync

    ws.subscribe(f"room:{name}")
    ws.send("subscribed")
    for event in ws.events():
        if isinstance(event, ClientMessage):
            publish(f"room:{name}", event.data)
        elif isinstance(event, ChannelMessage):
            ws.send(event)
        elif isinstance(event, Resync):
            ws.send_json({"resync": list(event.channels)})


urlpatterns.append(path("channel-room/<str:name>/", channel_room, name="channel-room"))


@websocket
def lazy_room(request, ws, name):
    """Subscribe, then never look at channel events: a slow consumer by construction."""
    ws.subscribe(f"room:{name}")
    ws.send("ready")
    ws.receive()


@websocket
def event_log(request, ws, name):
    """Report every event as JSON: kind, data; "unsubscribe" stops the channel; "wait" times out."""
    from django_websocket.events import ChannelMessage, ClientMessage

    ws.subscribe(f"room:{name}")
    ws.send_json({"kind": "ready"})
    while True:
        event = ws.next_event(timeout=5)
        if isinstance(event, ClientMessage):
            if event.data == "unsubscribe":
                ws.unsubscribe(f"room:{name}")
            elif event.data == "wait":
                ws.send_json({"kind": "timeout", "result": repr(ws.next_event(timeout=0.05))})
                continue
            ws.send_json({"kind": "client", "data": event.data})
        elif isinstance(event, ChannelMessage):
            ws.send_json({"kind": "channel", "channel": event.channel, "data": event.data})


urlpatterns += [
    path("lazy-room/<str:name>/", lazy_room, name="lazy-room"),
    path("event-log/<str:name>/", event_log, name="event-log"),
]


@websocket
def forward_room(request, ws, name):
    """Relay room:<name> straight to the client (forward=True); publish what the client sends."""
    from django_websocket import publish

    ws.subscribe(f"room:{name}", forward=True)
    ws.send("ready")
    for message in ws:
        publish(f"room:{name}", message)


urlpatterns.append(path("forward-room/<str:name>/", forward_room, name="forward-room"))


@websocket
def flood(request, ws):
    """Send 64 KiB messages until the connection ends (for a client that stops reading)."""
    chunk = b"x" * 65536
    while True:
        ws.send(chunk)


urlpatterns.append(path("flood/", flood, name="flood"))


@websocket
def resume_room(request, ws, name):
    """Forward room:<name> in the resume protocol, in presence as ``?name=`` (else the user).

    ``?presence=off``: not in presence.

    The client's ``since`` query parameter resumes; ``publish:<text>`` from the client publishes.
    """
    from django_websocket import publish

    handle = request.GET.get("name")
    presence = None if request.GET.get("presence") == "off" else {"name": handle} if handle else True
    ws.subscribe(f"room:{name}", forward=True, resume=True, presence=presence)
    for message in ws:
        if isinstance(message, str) and message.startswith("publish:"):
            publish(f"room:{name}", message.removeprefix("publish:"))


@websocket
def history_events(request, ws, name):
    """Report room:<name>'s events as JSON, subscribed with ``since=?from`` and presence ``?name``."""
    from django_websocket.events import ChannelMessage, Gap, Join, Leave, Presence, Resync

    handle = request.GET.get("name")
    ws.subscribe(f"room:{name}", since=request.GET.get("from"), presence={"name": handle} if handle else None)
    ws.send_json({"kind": "ready"})
    for event in ws.events():
        if isinstance(event, ChannelMessage):
            ws.send_json({"kind": "message", "id": event.id, "data": event.data})
        elif isinstance(event, Gap):
            ws.send_json({"kind": "gap", "id": event.id})
        elif isinstance(event, Resync):
            ws.send_json({"kind": "resync"})
        elif isinstance(event, Presence):
            ws.send_json({"kind": "presence", "names": sorted(m["name"] for m in event.members)})
        elif isinstance(event, Join | Leave):
            ws.send_json({"kind": type(event).__name__.lower(), "name": event.member["name"]})


urlpatterns += [
    path("resume-room/<str:name>/", resume_room, name="resume-room"),
    path("history-events/<str:name>/", history_events, name="history-events"),
]


@websocket
def block_loop(request, ws):
    """Each message is a number of seconds to block the whole worker for (the unpatched
    ``time.sleep``, as a blocking driver would), then answered "unblocked"."""
    from gevent.monkey import get_original

    blocking_sleep = get_original("time", "sleep")
    for message in ws:
        blocking_sleep(float(message))
        # Let the loop run before answering: reading the next message may not wait (it can be
        # there already), which would make two messages' stalls one blocking event.
        gevent.sleep(0)
        ws.send("unblocked")


urlpatterns.append(path("blocking/", block_loop, name="blocking"))


# ------------------------------------------------------- database (tests/test_database_integration.py)
#
# Written as the README tells users to write views: no connection handling at all. The
# framework gives the connections back whenever the view waits, and closes them at the end.

#: The room every row these views write belongs to.
DB_ROOM = "db-tests"


def insert_row(text: str) -> int:
    """Insert one chat message (and its room, the first time) through the ORM; return its id."""
    from test_project.models import Message, Room

    room, _ = Room.objects.get_or_create(name=DB_ROOM)
    return Message.objects.create(room=room, handle="db", message=text).pk


@websocket
def db_write(request, ws):
    """For each text message: insert one row, reply with its id."""
    for message in ws:
        ws.send(str(insert_row(message)))


@websocket
def db_write_events(request, ws):
    """As ``db_write``, reading the client through ``events()``."""
    for event in ws.events():
        if isinstance(event, ClientMessage):
            ws.send(str(insert_row(event.data)))


@websocket
def db_atomic(request, ws):
    """Insert a row in ``atomic()``, say "in-transaction", wait for a message inside the block,
    commit, say "committed", then idle until the client leaves (waiting outside the block)."""
    from django.db import transaction

    with transaction.atomic():
        insert_row("in a transaction")
        ws.send("in-transaction")
        ws.receive()  # the connection is in a transaction: it must stay held
    ws.send("committed")
    for _ in ws:
        pass


@websocket
def db_sleep(request, ws):
    """On a message "N": ``SELECT pg_sleep(N)``, then reply "slept"."""
    from django.db import connection

    for message in ws:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [float(message)])
        ws.send("slept")


urlpatterns += [
    path("db/write/", db_write, name="db-write"),
    path("db/write-events/", db_write_events, name="db-write-events"),
    path("db/atomic/", db_atomic, name="db-atomic"),
    path("db/sleep/", db_sleep, name="db-sleep"),
]


# ------------------------------------------------------- tokens (tests/test_tokens*.py)


@websocket(subprotocols=["chat.v1"])
def token_user(request, ws):
    """Send who the handshake authenticated and the agreed subprotocol: {"user", "subprotocol"}."""
    ws.send_json({"user": request.user.get_username(), "subprotocol": ws.subprotocol})


urlpatterns.append(path("token-user/", token_user, name="token-user"))


@websocket
def flash_messages(request, ws):
    """Send the texts of the request's ``django.contrib.messages``; add one, send them again; wait."""
    ws.send_json([str(message) for message in messages.get_messages(request)])
    messages.info(request, "added in the view")
    ws.send_json([str(message) for message in messages.get_messages(request)])
    for _ in ws:  # until the client closes: its close is counted before the test goes on
        pass


urlpatterns.append(path("flash-messages/", flash_messages, name="flash-messages"))
