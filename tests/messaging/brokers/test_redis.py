"""django_websocket.messaging.brokers.redis against a real redis-server: streams, presence expiry."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from django_websocket.exceptions import PublishError
from django_websocket.messaging.brokers.redis import RedisBroker, safe_url
from django_websocket.messaging.options import Options
from tests.redis_server import RedisServer

_names = itertools.count()


def fresh() -> str:
    return f"redis-broker-{next(_names)}-{time.monotonic_ns()}"


def test_safe_url_hides_the_password():
    """Passwords never reach logs or exceptions."""
    assert safe_url("redis://:secret@h:1/0") == "redis://***@h:1/0"
    assert safe_url("redis://user:secret@h:1/0") == "redis://***@h:1/0"
    assert safe_url("redis://h:1/0") == "redis://h:1/0"


def test_a_stream_expires_after_the_ttl(redis_server):
    """A channel's stream carries the policy's TTL as its expiry."""
    broker = RedisBroker(redis_server.url, Options(history_channels=(("ttl-*", {"ttl": 30}),)))
    channel = "ttl-" + fresh()
    message_id, _ = broker.publish(channel, broker.options.key(channel), b"t", "x")
    assert message_id and 0 < redis_server.client().ttl(broker.stream_key(channel)) <= 30


@pytest.mark.parametrize("history_size", [100, 0], ids=["script", "plain"])
def test_the_first_publishes_after_a_redis_restart_succeed_without_disconnect(history_size):
    """Redis restarts: every pooled connection it closed is replaced when next used, none fails a publish.

    No retry does it: redis-py's pool checks each idle connection it hands out (``can_read()``
    sees the closed socket's EOF) and opens a new one instead; a script the restarted Redis
    does not know is loaded again (``NOSCRIPT``) before it runs, once.
    """
    with RedisServer() as server:
        broker = RedisBroker(server.url, Options(history_size=history_size))
        channel = fresh()
        pool = broker.client.connection_pool
        idle = [pool.get_connection() for _ in range(3)]  # three pooled connections, then idle
        for connection in idle:
            pool.release(connection)
        broker.publish(channel, broker.key(channel), b"t", "before")
        server.kill()
        server.start()
        published = [broker.publish(channel, broker.key(channel), b"t", f"after {n}") for n in range(4)]
        stored = [entry.id for entry in broker.entries(channel)] if history_size else []
    if history_size:  # Redis restarted empty: the four publishes after it, each once
        assert stored == [message_id for message_id, _ in published]
    else:
        assert published == [("", 0)] * 4


def test_redis_down_raises_publish_error():
    """Reads and publishes fail with PublishError within the timeout, password hidden."""
    broker = RedisBroker("redis://:secret@127.0.0.1:1/0", Options(timeout=0.5))
    with pytest.raises(PublishError) as caught:
        broker.read("anything", None)
    assert "secret" not in str(caught.value)
    with pytest.raises(PublishError):
        broker.publish("anything", broker.options.key("anything"), b"t", "x")


def test_redis_members_of_a_dead_process_expire_with_one_leave(redis_server):
    """Connections not refreshed within the TTL are swept by the next reader, their leave published once."""
    channel = fresh()
    broker = RedisBroker(redis_server.url, Options(presence_ttl=0.3))
    subscriber = redis_server.client().pubsub()
    subscriber.subscribe(broker.presence_keys(channel)[2])
    broker.join(channel, {"conn": "dead:1:1", "user": None, "name": "ghost"})
    broker.join(channel, {"conn": "live:1:1", "user": None, "name": "alive"})
    time.sleep(0.2)
    broker.heartbeat(channel, {"live:1:1": {"conn": "live:1:1", "user": None, "name": "alive"}})
    time.sleep(0.2)  # ghost's TTL is over, alive's was refreshed
    assert [m["name"] for m in broker.members(channel)] == ["alive"]
    assert [m["name"] for m in broker.members(channel)] == ["alive"]
    events = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.1)
        if message and message["type"] == "message":
            events.append(json.loads(message["data"][1:]))
    kinds = [(e["ws"], e["member"]["name"]) for e in events]
    assert kinds == [("join", "ghost"), ("join", "alive"), ("leave", "ghost")]
    subscriber.close()
    for conn in ("dead:1:1", "live:1:1"):
        broker.leave(channel, conn)  # this process's heartbeat stops with its last member


def test_redis_heartbeat_re_adds_a_swept_connection_with_a_join(redis_server):
    """A worker that stalled past the TTL comes back: its live connection joins again."""
    channel = fresh()
    member = {"conn": "slow:1:1", "user": None, "name": "slow"}
    broker = RedisBroker(redis_server.url, Options(presence_ttl=0.1))
    broker.join(channel, member)
    time.sleep(0.2)
    assert broker.members(channel) == []
    broker.heartbeat(channel, {"slow:1:1": member})
    assert [m["name"] for m in broker.members(channel)] == ["slow"]
    broker.leave(channel, "slow:1:1")
    assert broker.members(channel) == []


def test_presence_of_a_10000_member_room_answers_in_milliseconds(redis_server):
    """members() of 10,000 connections: one script, a few milliseconds (guard: under a second)."""
    broker = RedisBroker(redis_server.url, Options(presence_ttl=60))
    channel = fresh()
    members = {f"h:1:{n}": {"conn": f"h:1:{n}", "user": n, "name": f"user{n}"} for n in range(10_000)}
    broker.heartbeat(channel, members)  # all of them in one call
    started = time.perf_counter()
    listed = broker.members(channel)
    elapsed = time.perf_counter() - started
    print(f"presence of 10,000 members read in {elapsed * 1000:.1f} ms")
    assert len(listed) == 10_000 and elapsed < 1.0


def test_remember_is_one_set_nx_shared_by_every_broker_of_the_redis(redis_server):
    """Two brokers (two workers): the first remember() wins, forget() frees it, the key expires."""
    first, second = RedisBroker(redis_server.url, Options()), RedisBroker(redis_server.url, Options())
    token = fresh()
    assert first.remember("acks", token, 30) is True
    assert second.remember("acks", token, 30) is False
    assert 0 < redis_server.client().ttl(first.key("acks") + "~seen:" + token) <= 30
    second.forget("acks", token)
    assert first.remember("acks", token, 30) is True


def test_remember_with_redis_down_raises_publish_error():
    """No answer: PublishError, nothing assumed."""
    broker = RedisBroker("redis://127.0.0.1:1/0", Options(timeout=0.5))
    with pytest.raises(PublishError):
        broker.remember("acks", "token", 30)
    with pytest.raises(PublishError):
        broker.forget("acks", "token")
