"""django_websocket.history: ids, policies, the in-memory ring and the Redis stream, same rules."""

from __future__ import annotations

import itertools
import time

import pytest
from django.test import override_settings

from django_websocket import last_id, publish
from django_websocket.exceptions import PublishError
from django_websocket.history import ORIGIN, Policy, history, parse_id, policy, read, stream_key

_names = itertools.count()


def fresh(prefix: str = "h") -> str:
    """A channel name no other test used (the embedded ring lives as long as the process)."""
    return f"{prefix}-{next(_names)}-{time.monotonic_ns()}"


def test_parse_id_orders_like_the_ids():
    assert parse_id("10-2") < parse_id("10-10") < parse_id("11-0")
    for bad in ["", "10", "a-1", "1-2-3", "-1", None, "1 -2"]:
        with pytest.raises(ValueError):
            parse_id(bad)


def test_policy_defaults_and_first_matching_override():
    assert policy("room") == Policy(100, 3600.0)
    overrides = {"chat:*": {"size": 5}, "chat:big": {"size": 500}, "live:*": {"size": 0, "ttl": None}}
    with override_settings(WEBSOCKET_HISTORY_CHANNELS=overrides, WEBSOCKET_HISTORY_TTL=60):
        assert policy("chat:big") == Policy(5, 60.0)  # first match wins
        assert policy("live:x") == Policy(0, None)
        assert not policy("live:x").enabled
        assert policy("other") == Policy(100, 60.0)


@pytest.mark.django_db
def test_ids_increase_and_history_keeps_them_in_order(broker):
    channel = fresh()
    assert last_id(channel) == ORIGIN
    ids = [publish(channel, {"n": n}) for n in range(5)]
    assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)
    assert len(set(ids)) == 5
    assert last_id(channel) == ids[-1]
    messages = history(channel)
    assert [(m.id, m.data, m.kind) for m in messages] == [
        (i, f'{{"n":{n}}}', b"j") for n, i in enumerate(ids)
    ]
    assert [m.json() for m in history(channel, since=ids[2])] == [{"n": 3}, {"n": 4}]
    assert [m.json() for m in history(channel, limit=2)] == [{"n": 3}, {"n": 4}]
    assert history(channel, limit=0) == []


@pytest.mark.django_db
def test_history_keeps_text_binary_and_audiences(broker):
    channel = fresh()
    publish(channel, "text")
    publish(channel, b"\x00\xff")
    publish(channel, "for 7 only", user=7)
    messages = history(channel)
    assert [(m.data, m.kind) for m in messages] == [("text", b"t"), (b"\x00\xff", b"b"), ("for 7 only", b"t")]
    assert read(channel, ORIGIN).entries[2].key.endswith(f"{channel}@user:7")


@pytest.mark.django_db
def test_read_after_an_id_returns_what_followed_without_gap(broker):
    channel = fresh()
    first, second, third = (publish(channel, str(n)) for n in range(3))
    reading = read(channel, first)
    assert [e.id for e in reading.entries] == [second, third]
    assert (reading.position, reading.gap) == (third, False)
    latest = read(channel, third)  # the newest id: nothing missed
    assert (latest.entries, latest.gap) == ([], False)
    assert [e.data for e in read(channel, ORIGIN).entries] == [b"0", b"1", b"2"]  # never trimmed
    assert read(channel, None).entries == [] and read(channel, None).position == third


@pytest.mark.django_db
def test_a_trimmed_id_is_a_gap(broker):
    channel = fresh("trim")
    with override_settings(WEBSOCKET_HISTORY_CHANNELS={"trim-*": {"size": 10}}):
        ids = [publish(channel, str(n)) for n in range(400)]  # Redis trims whole nodes: well past them
    reading = read(channel, ids[0])
    assert reading.gap and reading.entries == [] and reading.position == ids[-1]
    assert read(channel, ORIGIN).gap  # something was trimmed since the channel began
    assert not read(channel, ids[-2]).gap  # still kept
    assert 10 <= len(history(channel)) < 400


@pytest.mark.django_db
def test_unknown_or_malformed_ids_are_gaps(broker):
    channel = fresh()
    assert read(channel, "123-0").gap  # a channel without history cannot hold it
    assert not read(channel, ORIGIN).gap
    publish(channel, "x")
    assert read(channel, "1-0").gap  # never existed here (history lost, or another channel's id)
    assert read(channel, "garbage").gap
    with pytest.raises(ValueError):
        history(channel, since="garbage")


@pytest.mark.django_db
def test_size_zero_turns_ids_and_history_off(broker):
    channel = fresh("off")
    with override_settings(WEBSOCKET_HISTORY_CHANNELS={"off-*": {"size": 0}}):
        published = publish(channel, "x")
        assert published == "" and published.receivers == 0
    assert history(channel) == []


def test_embedded_ring_expires_by_age():
    channel = fresh("ttl")
    with override_settings(WEBSOCKET_REDIS_URL=None, WEBSOCKET_HISTORY_CHANNELS={"ttl-*": {"ttl": 0.05}}):
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("REDIS_URL", raising=False)
            old = publish(channel, "old")
            time.sleep(0.1)
            new = publish(channel, "new")
            assert [m.data for m in history(channel)] == ["new"]
            assert read(channel, old).gap and not read(channel, new).gap


def test_redis_stream_expires_after_the_ttl(redis_server):
    channel = fresh("ttl")
    with override_settings(
        WEBSOCKET_REDIS_URL=redis_server.url, WEBSOCKET_HISTORY_CHANNELS={"ttl-*": {"ttl": 30}}
    ):
        publish(channel, "x")
        ttl = redis_server.client().ttl(stream_key(channel))
        assert 0 < ttl <= 30


def test_redis_down_raises_publish_error():
    with override_settings(WEBSOCKET_REDIS_URL="redis://127.0.0.1:1/0"):
        with pytest.raises(PublishError):
            read("anything", None)
        with pytest.raises(PublishError):
            publish("anything", "x")
