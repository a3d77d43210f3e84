"""django_websocket.presence: members, aggregation, expiry, on the in-process broker and a real Redis."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.test import RequestFactory, override_settings

from django_websocket.presence import (
    _keys,
    connection_id,
    connections,
    heartbeat,
    join,
    leave,
    member_for,
    presence,
)

_names = itertools.count()


def fresh() -> str:
    return f"presence-{next(_names)}-{time.monotonic_ns()}"


def test_connection_ids_are_unique_and_name_the_process():
    import os

    first, second = connection_id(), connection_id()
    assert first != second and f":{os.getpid()}:" in first


@pytest.mark.django_db
def test_member_for_the_user_a_handle_or_anonymous():
    request = RequestFactory().get("/")
    request.user = User.objects.create(username="zoe")
    assert member_for(request, True, "c1") == {"user": request.user.pk, "name": "zoe", "conn": "c1"}
    request.user = AnonymousUser()
    assert member_for(request, True, "c2") == {"user": None, "name": "anonymous", "conn": "c2"}
    assert member_for(request, {"name": "Bo", "color": "#fff"}, "c3") == {
        "user": None, "name": "Bo", "color": "#fff", "conn": "c3",
    }  # fmt: skip
    for bad in [{"color": "#fff"}, {"name": 3}, "bo", {"name": "x", "obj": object()}]:
        with pytest.raises((ValueError, TypeError)):
            member_for(request, bad, "c4")


def test_join_leave_and_aggregation(broker):
    channel = fresh()
    join(channel, {"conn": "h:1:1", "user": 1, "name": "alice"})
    join(channel, {"conn": "h:1:2", "user": 1, "name": "alice"})
    join(channel, {"conn": "h:2:1", "user": None, "name": "bob"})
    assert presence(channel) == [
        {"user": 1, "name": "alice", "connections": 2},
        {"user": None, "name": "bob", "connections": 1},
    ]
    leave(channel, "h:1:1")
    leave(channel, "h:1:1")  # twice: harmless
    assert [m["conn"] for m in connections(channel)] == ["h:1:2", "h:2:1"]
    leave(channel, "h:1:2")
    leave(channel, "h:2:1")
    assert presence(channel) == []


def test_redis_members_of_a_dead_process_expire_with_one_leave(redis_server):
    """Connections not refreshed within the TTL are swept by the next reader, their leave published once."""
    channel = fresh()
    with override_settings(WEBSOCKET_REDIS_URL=redis_server.url, WEBSOCKET_PRESENCE_TTL=0.3):
        subscriber = redis_server.client().pubsub()
        subscriber.subscribe(_keys(channel)[2])
        join(channel, {"conn": "dead:1:1", "user": None, "name": "ghost"})
        join(channel, {"conn": "live:1:1", "user": None, "name": "alive"})
        time.sleep(0.2)
        heartbeat(
            redis_server.url, channel, {"live:1:1": {"conn": "live:1:1", "user": None, "name": "alive"}}
        )
        time.sleep(0.2)  # ghost's TTL is over, alive's was refreshed
        assert [m["name"] for m in presence(channel)] == ["alive"]
        assert [m["name"] for m in presence(channel)] == ["alive"]
        events = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            message = subscriber.get_message(timeout=0.1)
            if message and message["type"] == "message":
                events.append(json.loads(message["data"][1:]))
        kinds = [(e["ws"], e["member"]["name"]) for e in events]
        assert kinds == [("join", "ghost"), ("join", "alive"), ("leave", "ghost")]
        subscriber.close()


def test_redis_heartbeat_re_adds_a_swept_connection_with_a_join(redis_server):
    """A worker that stalled past the TTL comes back: its live connection joins again."""
    channel = fresh()
    member = {"conn": "slow:1:1", "user": None, "name": "slow"}
    with override_settings(WEBSOCKET_REDIS_URL=redis_server.url, WEBSOCKET_PRESENCE_TTL=0.1):
        join(channel, member)
        time.sleep(0.2)
        assert presence(channel) == []
        heartbeat(redis_server.url, channel, {"slow:1:1": member})
        assert [m["name"] for m in presence(channel)] == ["slow"]
        leave(channel, "slow:1:1")
