"""Integration: the demos through a Redis outage, on a real gunicorn worker and a real Redis.

The chat stores a message and puts it in the durable outbox in one transaction; with Redis
stopped the poster is told it waits, the socket stays open, and once Redis is back the
worker's own relay publishes it: every member gets it exactly once. The broadcast demo
(no database) tells its sender the message was not sent, and keeps the socket.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.redis_server import RedisServer
from tests.servers import Server, gunicorn

#: The worker's relay interval here: short, so the test waits fractions of a second.
RELAY_INTERVAL = 0.2


@pytest.fixture(scope="module")
def outage_redis() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture(scope="module")
def outage_server(outage_redis: RedisServer, server_db: dict[str, str]) -> Iterator[Server]:
    env = {
        "REDIS_URL": outage_redis.url,
        "DJANGO_DB_PATH": server_db["path"],
        "WEBSOCKET_OUTBOX_RELAY_INTERVAL": str(RELAY_INTERVAL),
    }
    with gunicorn(env=env, workers=1) as running:
        yield running


def open_socket(server: Server, path: str) -> ClientConnection:
    return connect(server.ws_url(path), open_timeout=10, close_timeout=2)


def frames_until(websocket: ClientConnection, predicate, timeout: float = 10.0) -> list[dict]:
    """JSON frames read until one satisfies *predicate*; all of them, in order."""
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        frames.append(json.loads(websocket.recv(timeout=max(0.01, deadline - time.monotonic()))))
        if predicate(frames[-1]):
            return frames


def is_message(frame: dict) -> bool:
    return frame.get("ws") == "message"


def chat_messages(frames: list[dict]) -> list[str]:
    return [frame["data"]["message"] for frame in frames if frame.get("ws") == "message"]


def test_chat_message_posted_during_an_outage_arrives_once_after_it(outage_server, outage_redis):
    """Posted while Redis is down: "saved" notice, socket open; Redis back: every member gets it once."""
    with (
        open_socket(outage_server, "/chat/outage/?handle=poster") as poster,
        open_socket(outage_server, "/chat/outage/?handle=member") as member,
    ):
        for websocket in (poster, member):
            frames_until(websocket, lambda frame: frame.get("ws") == "subscribed")
        outage_redis.kill()
        try:
            poster.send(json.dumps({"handle": "poster", "message": "typed offline", "color": "#112233"}))
            notice = frames_until(poster, lambda frame: frame.get("type") == "notice")[-1]
            assert "message broker is back" in notice["notice"]
        finally:
            outage_redis.start()
        for websocket in (member, poster):
            frames = frames_until(websocket, lambda frame: "typed offline" in chat_messages([frame]))
            assert chat_messages(frames).count("typed offline") == 1
        poster.send(json.dumps({"handle": "poster", "message": "after", "color": "#112233"}))
        frames = frames_until(member, lambda frame: frame.get("ws") == "message")
        assert chat_messages(frames) == ["after"]  # the offline one did not come twice


def test_broadcast_sender_is_told_and_keeps_its_socket(outage_server, outage_redis):
    """The broadcast demo publishes without an outbox: during the outage its sender hears so."""
    with open_socket(outage_server, "/broadcast/outage/") as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=10) == "hello"
        outage_redis.kill()
        try:
            websocket.send("lost?")
            assert "not sent" in websocket.recv(timeout=10)
        finally:
            outage_redis.start()
        deadline = time.monotonic() + 10
        while True:  # until the worker's hub is subscribed again
            websocket.send("back")
            reply = websocket.recv(timeout=10)
            if reply == "back":
                break
            assert time.monotonic() < deadline, f"still {reply!r} after Redis came back"
            time.sleep(0.2)


def test_concurrent_posters_on_sqlite_never_lock_each_other_out(outage_server):
    """Ten chat sockets post at once on SQLite: every message arrives once, nobody waits on a lock.

    The relay used to publish inside its transaction: a greenlet that then wanted SQLite's lock
    waited for it in C, blocking the worker, so the relay never got back from the broker to
    release it, until the wait failed ("database is locked", the socket closed 1013) 5 s later.
    """
    with contextlib.ExitStack() as stack:
        paths = [f"/chat/turns/?handle=p{n}" for n in range(10)]
        sockets = [stack.enter_context(open_socket(outage_server, path)) for path in paths]
        for websocket in sockets:
            frames_until(websocket, lambda frame: frame.get("ws") == "subscribed")
        sent = [f"m{n}-{k}" for k in range(5) for n in range(len(sockets))]
        for k in range(5):
            for n, websocket in enumerate(sockets):
                websocket.send(json.dumps({"handle": f"p{n}", "message": f"m{n}-{k}", "color": "#112233"}))
        for n, websocket in enumerate(sockets):  # every member gets every message, once
            received: list[str] = []
            try:
                while len(received) < len(sent):
                    received += chat_messages(frames_until(websocket, is_message))
            except TimeoutError:
                missing = sorted(set(sent) - set(received))
                log = outage_server.log[-5000:]
                pytest.fail(f"socket {n} lacks {missing} after 10 s; server log:\n{log}")
            assert sorted(received) == sorted(sent)
    assert "database is locked" not in outage_server.log
