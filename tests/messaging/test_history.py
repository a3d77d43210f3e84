"""django_websocket.messaging.history: ids and the in-memory history, with the Redis stream's rules."""

from __future__ import annotations

import time

import pytest

from django_websocket.messaging.history import ORIGIN, LocalHistory, parse_id
from django_websocket.messaging.options import Policy


def test_parse_id_orders_like_the_ids():
    assert parse_id("10-2") < parse_id("10-10") < parse_id("11-0")
    for bad in ["", "10", "a-1", "1-2-3", "-1", None, "1 -2"]:
        with pytest.raises(ValueError):
            parse_id(bad)


def test_ids_increase_within_one_millisecond():
    """Messages appended in the same millisecond get increasing sequence numbers."""
    store = LocalHistory()
    ids = [store.append("room", "k", b"t", b"x", Policy(100, None)) for _ in range(50)]
    assert [parse_id(i) for i in ids] == sorted({parse_id(i) for i in ids})


def test_a_ring_trims_by_size_and_then_reads_a_gap():
    """Past its size a ring forgets the oldest: reading after a forgotten id, or the origin, is a gap."""
    store = LocalHistory()
    ids = [store.append("room", "k", b"t", str(n).encode(), Policy(3, None)) for n in range(5)]
    assert [entry.data for entry in store.entries("room")] == [b"2", b"3", b"4"]
    assert store.read("room", ids[0]).gap and store.read("room", ORIGIN).gap
    reading = store.read("room", ids[2])
    assert [entry.id for entry in reading.entries] == ids[3:] and not reading.gap
    assert store.read("room", None).position == ids[-1]


def test_a_ring_expires_by_age():
    """Entries older than the policy's ttl are gone, and reading after one of them is a gap."""
    store = LocalHistory()
    old = store.append("room", "k", b"t", b"old", Policy(10, 0.05))
    time.sleep(0.1)
    new = store.append("room", "k", b"t", b"new", Policy(10, 0.05))
    assert [entry.data for entry in store.entries("room")] == [b"new"]
    assert store.read("room", old).gap and not store.read("room", new).gap


def test_an_unknown_channel_has_only_the_origin():
    """A channel never published to: the origin is no gap, any other id is."""
    store = LocalHistory()
    assert not store.read("none", ORIGIN).gap and store.read("none", "5-0").gap
    assert store.entries("none") == []
