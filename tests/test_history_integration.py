"""Integration: nothing lost, everyone seen — resume, hub recovery and presence for real.

Two gunicorn servers (``A`` and ``B``, one worker each, our worker) share one real
``redis-server`` that persists every write (append-only file, fsync always), as a
production Redis that keeps history across restarts. Clients are ``websockets``
clients on ``resume-room/<name>/`` (``tests/websocket_urls.py``): the view subscribes
with ``forward=True, resume=True, presence=...``, so everything arrives in the resume
protocol's frames (docs/topics/history.md). The test process publishes with ``publish()``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from django.test import override_settings
from websockets.exceptions import ConnectionClosed

from django_websocket import publish
from django_websocket.publishing import presence
from tests.redis_server import RedisServer
from tests.resume_client import Client, close_clients, worker_pid
from tests.servers import Server, gunicorn

#: Short enough to prove expiry in a test; heartbeats run every TTL / 3.
PRESENCE_TTL = 2.0


@pytest.fixture(scope="module")
def durable_redis() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as running:
        yield running


def _server(durable_redis: RedisServer, server_db: dict[str, str]):
    env = {
        "REDIS_URL": durable_redis.url,
        "DJANGO_DB_PATH": server_db["path"],
        "WEBSOCKET_PRESENCE_TTL": str(PRESENCE_TTL),
    }
    return gunicorn(env=env, workers=1)


@pytest.fixture(scope="module")
def server_a(durable_redis, server_db) -> Iterator[Server]:
    with _server(durable_redis, server_db) as running:
        yield running


@pytest.fixture(scope="module")
def server_b(durable_redis, server_db) -> Iterator[Server]:
    with _server(durable_redis, server_db) as running:
        yield running


@pytest.fixture(autouse=True)
def publishing_to(durable_redis) -> Iterator[None]:
    """publish() in this process goes to the servers' Redis; clients are closed after each test."""
    with override_settings(WEBSOCKET_REDIS_URL=durable_redis.url):
        try:
            yield
        finally:
            close_clients()


def test_resume_on_another_worker_after_a_sigkill_gets_all_50_exactly_once(server_a, server_b):
    """Worker A dies (SIGKILL); 50 messages are published; the client resumes on B with its last id.

    A watcher on B sees the dead worker's member leave once its presence TTL ran out.
    """
    watcher = Client(server_b, "kill", "ivy")
    watcher.subscribed()
    first = Client(server_a, "kill", "carol")
    first.subscribed()
    first.until("presence")
    watcher.until("join", name="carol")
    seen = [publish("room:kill", f"seen {n}") for n in range(3)]
    for message_id in seen:
        assert first.until("message")["id"] == message_id
    last = first.messages[-1]["id"]
    os.kill(worker_pid(first, "carol"), signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(ConnectionClosed):  # the connection drops with the worker
        while True:
            first.websocket.recv(timeout=5)
    missed = [publish("room:kill", {"n": n}) for n in range(50)]
    second = Client(server_b, "kill", "carol-again", since=last)
    subscribed = second.subscribed()
    replayed = [(frame["id"], frame["data"]) for frame in second.messages]
    assert replayed == [(message_id, {"n": n}) for n, message_id in enumerate(missed)]
    assert subscribed["id"] == missed[-1] and subscribed["replayed"] == 50
    live = publish("room:kill", "live")
    assert second.until("message")["id"] == live
    assert [frame["id"] for frame in second.messages] == [*missed, live]  # exactly once, in order
    # At most TTL after its last heartbeat, plus one heartbeat period of the sweeping worker.
    watcher.until("leave", timeout=PRESENCE_TTL * 2, name="carol")
    print(f"the killed worker's member left {time.monotonic() - killed:.1f} s after the SIGKILL")
    assert [m["name"] for m in presence("room:kill")] == ["carol-again", "ivy"]


def test_redis_restart_hub_recovers_what_was_published_meanwhile(server_a, durable_redis):
    """Redis restarts, the client stays connected: what was published before the hub resubscribed arrives."""
    client = Client(server_a, "restart", "dan")
    client.subscribed()
    before = publish("room:restart", "before")
    assert client.until("message")["id"] == before
    lost = server_a.log.count("the Redis subscriber connection (")
    durable_redis.kill()
    try:
        deadline = time.monotonic() + 10  # let the hub's backoff grow past a few hundred ms
        while (
            server_a.log.count("the Redis subscriber connection (") < lost + 4 and time.monotonic() < deadline
        ):
            time.sleep(0.02)
    finally:
        durable_redis.start()
    meanwhile = [publish("room:restart", f"meanwhile {n}") for n in range(50)]
    after = publish("room:restart", "after")
    while not client.messages or client.messages[-1]["id"] != after:
        client.frame(timeout=10)
    assert [frame["id"] for frame in client.messages] == [before, *meanwhile, after]
    assert not [frame for frame in client.other if frame["ws"] == "gap"]
    server_a.wait_for_log(r"recovered \d+ messages of room:restart", timeout=5)
    client.close()


def test_subscriber_connection_killed_messages_come_from_history(server_a, durable_redis):
    """CLIENT KILL of the hub's subscriber, then 50 messages at once: each arrives once, in order."""
    client = Client(server_a, "clientkill", "eve")
    client.subscribed()
    first = publish("room:clientkill", "first")
    assert client.until("message")["id"] == first
    assert durable_redis.kill_subscriber_connections() >= 1
    burst = [publish("room:clientkill", n) for n in range(50)]
    while len(client.messages) < 51:
        client.frame(timeout=10)
    assert [frame["id"] for frame in client.messages] == [first, *burst]
    assert [frame["data"] for frame in client.messages[1:]] == list(range(50))
    recovered = server_a.wait_for_log(r"recovered (\d+) messages of room:clientkill")
    print(f"{recovered.group(1)} of the 50 came from the history")
    client.close()


def test_a_trimmed_id_gets_the_gap_signal(server_b, durable_redis):
    old = publish("room:trimmed", "old")
    newest = [publish("room:trimmed", n) for n in range(400)][-1]  # history keeps about 100
    client = Client(server_b, "trimmed", "fay", since=old)
    gap = client.frame()
    assert gap == {"ws": "gap", "channel": "room:trimmed", "id": newest}, redis_state(durable_redis)
    assert client.subscribed() == {"ws": "subscribed", "channel": "room:trimmed", "id": newest, "replayed": 0}
    assert client.messages == []
    client.close()


def redis_state(redis_server: RedisServer) -> str:
    """What each data node and sentinel says now, for a failure's message (a Sentinel group's, on that pass).

    The Sentinel pass has failed here, rarely and only with other load on the machine: the gap
    named an id about 225 ms older than the newest, while the sentinels had just flagged the
    primary subjectively down (``s_down``) and the replica held nothing. This says more when
    it happens again.
    """
    group = getattr(redis_server, "group", None)
    if group is None:
        return "one Redis server"
    lines = []
    for label, node in (("primary", group.primary), ("replica", group.replica)):
        try:
            client = node.client()
            streams = {key: client.xinfo_stream(key)["last-generated-id"] for key in client.keys("*~history")}
            role = client.execute_command("ROLE")[0]
            lines.append(f"{label} :{node.port} role {role!r}, streams {streams}")
        except Exception as error:  # a node that does not answer is part of the picture
            lines.append(f"{label} :{node.port}: {error!r}")
    for sentinel in group.sentinels:
        try:
            lines.append(f"sentinel: {sentinel.client().sentinel_masters()}")
        except Exception as error:
            lines.append(f"sentinel: {error!r}")
    return "\n".join(lines)


def test_presence_across_workers_within_a_second(server_a, server_b):
    """Joins and leaves on two servers: events and presence() agree within 1 s."""
    gus = Client(server_a, "here", "gus")
    gus.subscribed()
    gus.until("presence")
    started = time.monotonic()
    hal = Client(server_b, "here", "hal")
    hal.subscribed()
    snapshot = hal.until("presence")
    assert sorted(m["name"] for m in snapshot["members"]) == ["gus", "hal"]
    gus.until("join", timeout=1.0, name="hal")
    assert [(m["name"], m["connections"]) for m in presence("room:here")] == [("gus", 1), ("hal", 1)]
    print(f"join seen across workers in {time.monotonic() - started:.3f} s")
    started = time.monotonic()
    hal.close()
    gus.until("leave", timeout=1.0, name="hal")
    assert [m["name"] for m in presence("room:here")] == ["gus"]
    print(f"leave seen across workers in {time.monotonic() - started:.3f} s")
    gus.close()
