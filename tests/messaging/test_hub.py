"""django_websocket.messaging.hub with in-memory mailboxes: no sockets, no settings (Redis where named)."""

from __future__ import annotations

import socket
import time
from unittest import mock

import gevent
import pytest

from django_websocket.events import ChannelMessage, Gap
from django_websocket.exceptions import PublishError
from django_websocket.messaging import hub as hub_module
from django_websocket.messaging.brokers.local import LocalBroker
from django_websocket.messaging.brokers.redis import RedisBroker
from django_websocket.messaging.hub import PRESENCE_BATCH, Hub, read_patiently
from django_websocket.messaging.options import Options
from django_websocket.messaging.redis_pubsub import RedisSubscriber
from django_websocket.messaging.wire import encode_payload

OPTIONS = Options()
channel_key = OPTIONS.key


def local_hub() -> Hub:
    return Hub(LocalBroker(OPTIONS))


class FakeMailbox:
    """Records what the hub delivers."""

    def __init__(self):
        self.messages = []
        self.resyncs = []

    def put_channel_messages(self, batch):
        self.messages.extend(batch.messages)

    def put_resync(self, event):
        self.resyncs.append(event)


def test_deliver_reaches_every_mailbox_with_one_shared_message():
    """One payload becomes one ChannelMessage object handed to every mailbox."""
    hub = local_hub()
    boxes = [FakeMailbox() for _ in range(3)]
    key = channel_key("room")
    for box in boxes:
        hub.add(key, box)
    assert hub.deliver(key, encode_payload("hi")) == 3
    assert {id(box.messages[0]) for box in boxes} == {id(boxes[0].messages[0])}
    assert boxes[0].messages[0].channel == "room"
    assert boxes[0].messages[0].data == "hi"
    assert hub.deliveries == 3


def test_audience_keys_map_back_to_the_channel():
    """A message on room@user:1 is a ChannelMessage of channel "room"."""
    hub = local_hub()
    box = FakeMailbox()
    key = channel_key("room", "@user:1")
    hub.add(key, box)
    hub.deliver(key, encode_payload(b"x"))
    assert (box.messages[0].channel, box.messages[0].data) == ("room", b"x")


def test_discard_ends_subscriptions():
    """After the last mailbox leaves, the channel is forgotten."""
    hub = local_hub()
    box = FakeMailbox()
    key = channel_key("room")
    hub.add(key, box)
    hub.discard(key, box)
    hub.discard(key, box)  # idempotent
    assert hub.mailboxes == {}
    assert hub.deliver(key, encode_payload("x")) == 0


def test_resync_groups_channels_per_mailbox():
    """Each mailbox gets one Resync naming all its channels."""
    hub = local_hub()
    box = FakeMailbox()
    keys = [channel_key("a"), channel_key("b"), channel_key("a", "@session:s")]
    for key in keys:
        hub.add(key, box)
    hub.resync(keys)
    assert [event.channels for event in box.resyncs] == [("a", "b")]


def test_local_delivery_hands_the_message_object_to_this_threads_hub():
    """The in-process broker gives the hub of the current gevent hub the very object it published."""
    broker = LocalBroker(OPTIONS)
    hub = Hub(broker)
    box = FakeMailbox()
    key = channel_key("local-test")
    hub.add(key, box)
    message = ChannelMessage("local-test", "x")
    assert broker.deliver(key, message) == 1
    assert box.messages == [message]
    assert broker.publish("local-test", key, b"t", "y")[1] == 1
    assert box.messages[1].data == "y" and box.messages[1].id is not None  # history is on by default


def test_local_delivery_to_another_threads_hub():
    """A hub in another thread gets the message through its own loop."""
    import threading

    received = threading.Event()
    ready = threading.Event()
    done = threading.Event()
    key = channel_key("cross-thread")

    class ThreadMailbox(FakeMailbox):
        def put_channel_messages(self, batch):
            super().put_channel_messages(batch)
            received.set()

    broker = LocalBroker(OPTIONS)

    def other_thread():
        hub = Hub(broker)
        box = ThreadMailbox()
        hub.add(key, box)
        ready.set()
        while not done.is_set():
            gevent.sleep(0.01)  # keep this thread's loop running
        hub.discard(key, box)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert ready.wait(5)
        assert broker.deliver(key, ChannelMessage("cross-thread", "x")) == 1
        assert received.wait(5)
    finally:
        done.set()
        thread.join(5)


def test_subscribing_during_an_outage_does_not_stall_and_resyncs(redis_server):
    """While Redis is down, add() returns at once; the late confirmation brings a Resync."""
    hub = Hub(RedisBroker(redis_server.url, OPTIONS))
    first = FakeMailbox()
    hub.add(channel_key("outage-a"), first)  # connected and confirmed
    redis_server.kill()
    with gevent.Timeout(10):
        while hub._subscriber is not None:
            gevent.sleep(0.01)  # the reader noticed the loss
    late = FakeMailbox()
    started = gevent.get_hub().loop.now()
    hub.add(channel_key("outage-b"), late)
    assert gevent.get_hub().loop.now() - started < 1.0
    redis_server.start()
    with gevent.Timeout(10):
        while not late.resyncs or not first.resyncs:
            gevent.sleep(0.01)
    assert late.resyncs[0].channels == ("outage-b",)
    assert_live(redis_server, "outage-b", late)
    hub._reader.kill()


def assert_live(redis_server, name: str, mailbox: FakeMailbox) -> None:
    """A message published to channel *name* now reaches *mailbox*."""
    redis_server.client().publish(channel_key(name), b"tafter")
    wait_for(lambda: mailbox.messages, timeout=5)
    assert [message.data for message in mailbox.messages] == ["after"]


class FailingOver(RedisSubscriber):
    """Refuses the first subscribe to a channel named "refused", as a cluster master failing over
    does; reconnecting then takes ``RECONNECT_SECONDS``, as waiting out the election does."""

    RECONNECT_SECONDS = 2.0

    def __init__(self, broker: FailingOverBroker) -> None:
        super().__init__(broker.url, broker.options.timeout)
        self.broker = broker

    def connect(self, channels=()):
        self.broker.connects += 1
        if self.broker.connects > 1:
            gevent.sleep(self.RECONNECT_SECONDS)
        super().connect(channels)

    def subscribe(self, channels):
        channels = list(channels)
        if not self.broker.refused and any(key.endswith("refused") for key in channels):
            self.broker.refused = True
            self.sock.shutdown(socket.SHUT_RDWR)  # batches() ends: the reader reconnects
            raise ConnectionError("the master serving it refused the connection")
        super().subscribe(channels)


class FailingOverBroker(RedisBroker):
    connects = 0
    refused = False

    def subscriber(self):
        return FailingOver(self)


def test_a_refused_subscribe_does_not_hold_the_view_and_resyncs(redis_server):
    """A view's subscribe refused (a cluster master failing over): add() returns at once, while
    the reader reconnects; the late confirmation brings a Resync, then messages."""
    hub = Hub(FailingOverBroker(redis_server.url, OPTIONS))
    first = FakeMailbox()
    hub.add(channel_key("steady"), first)  # connected and confirmed
    late = FakeMailbox()
    started = time.monotonic()
    hub.add(channel_key("refused"), late)
    assert time.monotonic() - started < 1.0  # not the reconnection's 2 s, nor SUBSCRIBE_TIMEOUT
    wait_for(lambda: late.resyncs)
    assert time.monotonic() - started >= FailingOver.RECONNECT_SECONDS
    assert late.resyncs[0].channels == ("refused",)
    assert_live(redis_server, "refused", late)
    hub._reader.kill()


class RefusingReads(RedisBroker):
    """A Redis broker whose next *refusals* history reads fail, as a re-forming cluster's do."""

    refusals = 0

    def read(self, channel, position):
        if self.refusals:
            self.refusals -= 1
            raise PublishError("CLUSTERDOWN The cluster is down")
        return super().read(channel, position)


def wait_for(condition, timeout: float = 10.0) -> None:
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.01)


def test_a_refused_history_read_is_tried_again_not_a_gap(redis_server):
    """Two refused reads after resubscribing: the third recovers what was missed; no Gap."""
    broker = RefusingReads(redis_server.url, OPTIONS)
    hub, box, key = Hub(broker), FakeMailbox(), broker.key("refused")
    try:
        hub.add(key, box)
        hub.track("refused")
        before = broker.publish("refused", key, b"t", "before")[0]
        wait_for(lambda: box.messages)
        broker.refusals = 2
        with redis_server.client() as redis:
            redis.client_kill_filter(_type="pubsub")
        missed = broker.publish("refused", key, b"t", "missed")[0]
        wait_for(lambda: hub.recoveries >= 1)
        wait_for(lambda: len(box.messages) >= 2)
        gevent.sleep(0.1)  # a duplicate would arrive now
        assert [m.id for m in box.messages] == [before, missed]
        assert broker.refusals == 0 and not [e for e in box.resyncs if isinstance(e, Gap)]
    finally:
        hub._reader.kill()


def test_a_history_refused_for_longer_than_the_patience_is_a_gap(redis_server, monkeypatch):
    """Reads refused past RECOVERY_PATIENCE: the channel's sockets get a Gap, never silence."""
    monkeypatch.setattr(hub_module, "RECOVERY_PATIENCE", 0.3)
    broker = RefusingReads(redis_server.url, OPTIONS)
    hub, box, key = Hub(broker), FakeMailbox(), broker.key("refused-long")
    try:
        hub.add(key, box)
        hub.track("refused-long")
        broker.publish("refused-long", key, b"t", "before")
        wait_for(lambda: box.messages)
        broker.refusals = 1000
        with redis_server.client() as redis:
            redis.client_kill_filter(_type="pubsub")
        wait_for(lambda: hub.recoveries >= 1)
        assert [type(e) for e in box.resyncs] == [Gap] and 2 <= 1000 - broker.refusals <= 5
    finally:
        hub._reader.kill()


def test_read_patiently_gives_up_at_once_when_no_longer_wanted():
    """stop() true: the first refusal is raised, nothing is tried again."""
    broker = mock.Mock(read=mock.Mock(side_effect=PublishError("CLUSTERDOWN")))
    started = time.monotonic()
    with pytest.raises(PublishError):
        read_patiently(broker, "gone", None, started + 5, stop=lambda: True)
    assert broker.read.call_count == 1 and time.monotonic() - started < 0.1


def test_read_patiently_tries_until_the_deadline_then_raises():
    broker = mock.Mock(read=mock.Mock(side_effect=PublishError("no primary")))
    started = time.monotonic()
    with pytest.raises(PublishError):
        read_patiently(broker, "down", "1-0", started + 0.35)
    assert 3 <= broker.read.call_count <= 4 and time.monotonic() - started < 0.35


def test_one_read_of_several_messages_is_one_batch_per_channel():
    """Consecutive messages of a channel in one read reach each mailbox as one ordered batch."""
    hub = local_hub()
    box_a, box_b = FakeMailbox(), FakeMailbox()
    batches = []
    box_a.put_channel_messages = lambda batch: batches.append(batch)  # type: ignore[method-assign]
    key_a, key_b = channel_key("a"), channel_key("b")
    hub.add(key_a, box_a)
    hub.add(key_b, box_b)
    hub._handle(
        [
            ("message", key_a.encode(), encode_payload("1")),
            ("message", key_a.encode(), encode_payload("2")),
            ("message", key_b.encode(), encode_payload("x")),
            ("message", key_a.encode(), encode_payload("3")),
        ]
    )
    assert [[m.data for m in batch.messages] for batch in batches] == [["1", "2"], ["3"]]
    assert batches[0].frames == b"\x81\x011\x81\x012"
    assert [m.data for m in box_b.messages] == ["x"]


def test_joins_and_leaves_of_a_window_reach_each_member_as_one_diff():
    """Within PRESENCE_BATCH: many joins and leaves become one diff per mailbox, net per connection."""
    broker = LocalBroker(OPTIONS)
    hub = Hub(broker)
    diffs = []

    class Member(FakeMailbox):
        def put_presence_diff(self, diff):
            diffs.append(diff)

    key = channel_key("crowd")
    hub.add(key, Member())
    members = [{"conn": f"h:1:{n}", "user": None, "name": f"m{n}"} for n in range(20)]
    for member in members:
        broker.join("crowd", member)
    broker.leave("crowd", "h:1:0")  # joined and left in the same window: its latest change, a leave
    gevent.sleep(PRESENCE_BATCH * 2)
    (diff,) = diffs
    assert diff.joins == tuple(members[1:]) and diff.leaves == (members[0],)
    assert diff.text.startswith('{"ws":"presence_diff","channel":"crowd","joins":[{')
