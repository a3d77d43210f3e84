"""django_websocket.messaging.brokers.local: publish, history and presence inside one process."""

from __future__ import annotations

import gevent

from django_websocket.events import Join, Leave
from django_websocket.messaging.brokers.local import LocalBroker
from django_websocket.messaging.history import ORIGIN
from django_websocket.messaging.hub import PRESENCE_BATCH, Hub
from django_websocket.messaging.options import Options


class Box:
    """A mailbox that records what it is given."""

    def __init__(self):
        self.messages, self.presence = [], []

    def put_channel_messages(self, batch):
        self.messages.extend(batch.messages)

    def put_resync(self, event):
        raise AssertionError("the in-process broker never loses messages")

    def put_presence_diff(self, diff):
        self.presence.append(diff)


def subscribed(broker: LocalBroker, channel: str) -> Box:
    box = Box()
    Hub(broker).add(broker.key(channel), box)
    return box


def test_publish_stores_then_hands_over_the_text_as_given():
    """The id comes from the history; the hub gets the str itself, no bytes in between."""
    broker = LocalBroker(Options())
    box = subscribed(broker, "room")
    message_id, receivers = broker.publish("room", broker.key("room"), b"j", '{"a":1}')
    assert receivers == 1 and message_id
    (message,) = box.messages
    assert (message.id, message.data, message.kind, message.json()) == (message_id, '{"a":1}', b"j", {"a": 1})
    assert [entry.data for entry in broker.entries("room")] == [b'{"a":1}']
    assert broker.read("room", None).position == message_id


def test_without_history_there_is_no_id_and_nothing_stored():
    """A channel whose policy keeps nothing: id "", no entry, still delivered."""
    broker = LocalBroker(Options(history_size=0))
    box = subscribed(broker, "room")
    assert broker.publish("room", broker.key("room"), b"b", b"\x00") == ("", 1)
    assert box.messages[0].id is None and box.messages[0].data == b"\x00"
    assert broker.entries("room") == []


def test_a_malformed_or_unknown_id_reads_as_a_gap():
    """Broker.read() turns an id that cannot be in the history into a gap at the position."""
    broker = LocalBroker(Options())
    last, _ = broker.publish("room", broker.key("room"), b"t", "x")
    reading = broker.read("room", "garbage")
    assert reading.gap and reading.position == last
    assert broker.read("room", "1-0").gap and not broker.read("room", ORIGIN).gap


def test_presence_joins_and_leaves_reach_members_as_objects():
    """join() and leave() keep the registry and reach the hub as objects, batched into diffs."""
    broker = LocalBroker(Options())
    box = subscribed(broker, "room")
    member = {"conn": "h:1:1", "user": None, "name": "bo"}
    broker.join("room", member)
    assert broker.members("room") == [member]
    gevent.sleep(PRESENCE_BATCH * 2)
    broker.leave("room", "h:1:1")
    broker.leave("room", "h:1:1")  # twice: one leave
    assert broker.members("room") == []
    gevent.sleep(PRESENCE_BATCH * 2)
    assert [(diff.joins, diff.leaves) for diff in box.presence] == [((member,), ()), ((), (member,))]
    assert [type(change) for diff in box.presence for change in diff.changes()] == [Join, Leave]


def test_remember_marks_a_token_once_per_scope_until_forgotten_or_expired():
    """remember() is True the first time only, per scope; forget() and the ttl free the token."""
    broker = LocalBroker(Options())
    assert broker.remember("acks", "page-1", 60) is True
    assert broker.remember("acks", "page-1", 60) is False
    assert broker.remember("other", "page-1", 60) is True
    broker.forget("acks", "page-1")
    broker.forget("acks", "never-seen")
    assert broker.remember("acks", "page-1", 60) is True
    assert broker.remember("acks", "short", -1) is True  # expired at once
    assert broker.remember("acks", "short", 60) is True


def test_remember_keeps_a_bounded_number_of_markers(monkeypatch):
    """Past REMEMBER_LIMIT markers the oldest are forgotten first."""
    monkeypatch.setattr("django_websocket.messaging.brokers.local.REMEMBER_LIMIT", 3)
    broker = LocalBroker(Options())
    for token in "abcd":
        assert broker.remember("acks", token, 60)
    assert [broker.remember("acks", token, 60) for token in "bcd"] == [False, False, False]
    assert broker.remember("acks", "a", 60) is True
