"""django_websocket.publishing: publish(), last_id(), history(), on the in-process broker and a real Redis."""

from __future__ import annotations

import itertools
import socket
import time
import uuid

import pytest
from django.db import transaction
from django.test import override_settings

from django_websocket import last_id, publish
from django_websocket.brokers import get_broker
from django_websocket.exceptions import PublishError
from django_websocket.messaging.history import ORIGIN, Reading, parse_id
from django_websocket.publishing import connections, history, presence
from tests.conftest import ALSO_ON_SENTINEL

_names = itertools.count()


def fresh(prefix: str = "h") -> str:
    """A channel name no other test used (the embedded ring lives as long as the process)."""
    return f"{prefix}-{next(_names)}-{time.monotonic_ns()}"


def read(channel: str, since: str | None) -> Reading:
    return get_broker().read(channel, since)


def test_embedded_publish_with_no_subscribers_reaches_nobody():
    """Without Redis, publish() counts the sockets it queued for: none here."""
    with override_settings(WEBSOCKET_REDIS_URL=None):
        assert publish("nobody-listens", "x").receivers == 0


def test_publish_with_redis_down_fails_fast_and_clearly(monkeypatch):
    """A Redis that refuses connections gives PublishError at once, not after hidden retries."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    with override_settings(WEBSOCKET_REDIS_URL=f"redis://:secret@127.0.0.1:{port}/0"):
        started = time.monotonic()
        with pytest.raises(PublishError) as caught:
            publish("room", "x")
    assert time.monotonic() - started < 1.5
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("empty", [{"user": None}, {"session": None}, {"session": ""}, {"group": ""}])
def test_an_empty_audience_is_an_error_not_a_broadcast(empty):
    """publish(..., session=None) must not reach everyone."""
    with pytest.raises(ValueError):
        publish("room", "private", **empty)


@pytest.mark.django_db(transaction=True)
def test_on_commit_publishes_when_the_transaction_commits(broker):
    """publish(on_commit=True) inside atomic() publishes at the commit, not before; returns None."""
    channel = f"commit-{uuid.uuid4().hex}"
    before = last_id(channel)
    with transaction.atomic():
        assert publish(channel, "saved", on_commit=True) is None
        assert last_id(channel) == before
    assert last_id(channel) != before


@pytest.mark.django_db(transaction=True)
def test_on_commit_never_publishes_after_a_rollback(broker):
    """A rolled-back transaction publishes nothing, nested savepoints included."""
    channel = f"rollback-{uuid.uuid4().hex}"
    before = last_id(channel)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            publish(channel, "not saved", on_commit=True)
            raise RuntimeError("rolled back")
    with transaction.atomic():
        try:
            with transaction.atomic():
                publish(channel, "savepoint rolled back", on_commit=True)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert last_id(channel) == before


@pytest.mark.django_db(transaction=True)
def test_on_commit_outside_a_transaction_publishes_at_once(broker):
    """In autocommit mode there is nothing to wait for: the message goes out and its id comes back."""
    channel = f"autocommit-{uuid.uuid4().hex}"
    published = publish(channel, "now", on_commit=True)
    assert published and published == last_id(channel)


@pytest.mark.django_db(transaction=True)
def test_on_commit_checks_its_arguments_at_the_call():
    """A bad channel or audience raises where publish() is called, not later at the commit."""
    with transaction.atomic():
        with pytest.raises(ValueError):
            publish("a@b", "x", on_commit=True)
        with pytest.raises(ValueError):
            publish("room", "x", user=None, on_commit=True)


@pytest.mark.django_db
@ALSO_ON_SENTINEL
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
    assert read(channel, ORIGIN).entries[2].key == get_broker().key(channel, "@user:7")


@pytest.mark.django_db
@ALSO_ON_SENTINEL
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
@ALSO_ON_SENTINEL
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


@ALSO_ON_SENTINEL
def test_join_leave_and_aggregation(broker):
    channel = fresh()
    get_broker().join(channel, {"conn": "h:1:1", "user": 1, "name": "alice"})
    get_broker().join(channel, {"conn": "h:1:2", "user": 1, "name": "alice"})
    get_broker().join(channel, {"conn": "h:2:1", "user": None, "name": "bob"})
    assert presence(channel) == [
        {"user": 1, "name": "alice", "connections": 2},
        {"user": None, "name": "bob", "connections": 1},
    ]
    get_broker().leave(channel, "h:1:1")
    get_broker().leave(channel, "h:1:1")  # twice: harmless
    assert [m["conn"] for m in connections(channel)] == ["h:1:2", "h:2:1"]
    get_broker().leave(channel, "h:1:2")
    get_broker().leave(channel, "h:2:1")
    assert presence(channel) == []
