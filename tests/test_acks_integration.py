"""Acknowledged client messages on a real gunicorn and a real Redis: a reload and a Redis restart.

The chat view stores each acknowledged message with its client id under a unique constraint
and acks after the commit. A client that resends whatever it has no ack for (and here, to be
harsh, what it has an ack for too, as if the ack had been lost) gets every message stored
exactly once: across a SIGHUP reload (the old worker closes with 1012, a new one answers the
resends) and across a Redis that is down then back (the row and its outbox entry commit
while Redis is away; the room hears the message once when it returns).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from django_websocket.acks import send_frame
from tests import test_outbox_integration
from tests.servers import Server, reload

# The outage tests' Redis and gunicorn (one worker, a short outbox relay): this module gets its own pair.
outage_redis = test_outbox_integration.outage_redis
outage_server = test_outbox_integration.outage_server
frames_until = test_outbox_integration.frames_until


@contextmanager
def open_socket(server: Server, room: str) -> Iterator[ClientConnection]:
    """The chat socket of *room*, once subscribed; closed on exit."""
    url = server.ws_url(f"/chat/{room}/?handle=poster")
    with connect(url, open_timeout=10, close_timeout=2) as websocket:
        frames_until(websocket, lambda frame: frame.get("ws") == "subscribed")
        yield websocket


def post(websocket: ClientConnection, message_id: str, text: str) -> None:
    """Send chat message *text* acknowledged, with *message_id*."""
    message = {"handle": "poster", "message": text, "color": "#112233"}
    websocket.send(send_frame(message_id, json.dumps(message)))


def acks_until_closed(websocket: ClientConnection) -> set[str]:
    """The ids acknowledged on *websocket* until the server closes it."""
    acked = set()
    try:
        while True:
            frame = json.loads(websocket.recv(timeout=30))
            if frame.get("ws") == "ack":
                acked.add(frame["id"])
    except ConnectionClosed:
        return acked


def stored(server_db: dict[str, str], room: str) -> list[tuple[str, str]]:
    """``(client_id, message)`` of *room*'s stored messages, in order."""
    with sqlite3.connect(server_db["path"]) as db:
        rows = db.execute(
            "SELECT m.client_id, m.message FROM test_project_message m"
            " JOIN test_project_room r ON r.id = m.room_id WHERE r.name = ? ORDER BY m.id",
            (room,),
        )
        return list(rows)


def test_acked_messages_are_stored_once_across_a_server_reload(outage_server, server_db):
    """SIGHUP while a message is in flight; resending everything to the new worker stores each once."""
    with open_socket(outage_server, "reload") as websocket:
        post(websocket, "reload-1", "one")
        frames_until(websocket, lambda frame: frame == {"ws": "ack", "id": "reload-1"})
        post(websocket, "reload-2", "two")  # answered by the old worker, or not: either way once
        reload(outage_server)
        acks_until_closed(websocket)
    with open_socket(outage_server, "reload") as websocket:
        for message_id, text in [("reload-1", "one"), ("reload-2", "two"), ("reload-3", "three")]:
            post(websocket, message_id, text)
        acked: set[str] = set()
        wanted = {"reload-1", "reload-2", "reload-3"}
        frames_until(
            websocket, lambda frame: frame.get("ws") == "ack" and (acked.add(frame["id"]) or acked >= wanted)
        )
        assert acked == wanted
    assert stored(server_db, "reload") == [("reload-1", "one"), ("reload-2", "two"), ("reload-3", "three")]


def test_acked_messages_are_stored_once_across_a_redis_restart(outage_server, outage_redis, server_db):
    """Posted while Redis is down: acked (stored, in the outbox); a resend is acked, not stored; Redis back:
    the room hears it once."""
    with (
        open_socket(outage_server, "redis-restart") as poster,
        open_socket(outage_server, "redis-restart") as member,
    ):
        outage_redis.kill()
        try:
            post(poster, "down-1", "typed while Redis is down")
            frames_until(poster, lambda frame: frame == {"ws": "ack", "id": "down-1"})
            post(poster, "down-1", "typed while Redis is down")  # its ack "lost": resent
            frames_until(poster, lambda frame: frame == {"ws": "ack", "id": "down-1"})
        finally:
            outage_redis.start()
        frames = frames_until(member, lambda frame: frame.get("ws") == "message")
        assert frames[-1]["data"]["message"] == "typed while Redis is down"
        post(poster, "up-1", "after")
        frames = frames_until(member, lambda frame: frame.get("ws") == "message")
        assert [f["data"]["message"] for f in frames if f.get("ws") == "message"] == ["after"]  # not twice
    assert stored(server_db, "redis-restart") == [("down-1", "typed while Redis is down"), ("up-1", "after")]
