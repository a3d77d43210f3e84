"""django_websocket.messaging.brokers.cluster: URLs and names, then a real six-node Redis Cluster."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest

from django_websocket.messaging.brokers.cluster import ClusterBroker, parse_cluster_url
from django_websocket.messaging.hub import Hub
from django_websocket.messaging.options import Options

_names = itertools.count()


def fresh(prefix: str = "room") -> str:
    return f"{prefix}-{next(_names)}-{time.monotonic_ns()}"


class Box:
    """A mailbox that records what it is given."""

    def __init__(self):
        self.messages, self.resyncs, self.presence = [], [], []

    def put_channel_messages(self, batch):
        self.messages.extend(batch.messages)

    def put_resync(self, event):
        self.resyncs.append(event)

    def put_presence_diff(self, diff):
        self.presence.append(diff)


def until(condition, timeout: float = 10.0) -> None:
    """Run the gevent loop (the hub's readers) until *condition()* holds."""
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.01)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis+cluster://a:7000,b:7001", ([("a", 7000), ("b", 7001)], None, None, False)),
        ("rediss+cluster://u:p%40ss@a:7000/0", ([("a", 7000)], "u", "p@ss", True)),
        ("redis+cluster://:secret@a:7000/", ([("a", 7000)], None, "secret", False)),
    ],
)
def test_cluster_urls(url, expected):
    """Seed nodes, credentials (URL-quoted) and TLS come from the URL."""
    assert parse_cluster_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis://a:7000",
        "redis+cluster://",
        "redis+cluster://a",
        "redis+cluster://a:0",
        "redis+cluster://a:1/2",
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url):
    """Another scheme, no seed, no or bad port, a database other than 0: ValueError."""
    with pytest.raises(ValueError):
        parse_cluster_url(url)


def test_keys_carry_the_channel_as_hash_tag():
    """All keys of a channel share its tag; the prefix is outside it; braces in names are refused."""
    broker = ClusterBroker("redis+cluster://127.0.0.1:1", Options())
    assert broker.key("room:1") == "django_websocket:{room:1}"
    assert broker.key("room:1", "@user:7") == "django_websocket:{room:1}@user:7"
    assert broker.channel("django_websocket:{room:1}@group:a}b") == "room:1"
    assert broker.stream_key("room:1") == "django_websocket:{room:1}~history"
    tagged = "django_websocket:{room:1}"
    assert broker.presence_keys("room:1") == [f"{tagged}~presence", f"{tagged}~members", tagged]
    for bad in ["a{b", "a}b", "a@b", ""]:
        with pytest.raises(ValueError):
            broker.key(bad)


def test_remember_markers_carry_their_scope_as_hash_tag(cluster):
    """A scope's markers are one shard's keys, set once across brokers."""
    first, second = ClusterBroker(cluster.url, Options()), ClusterBroker(cluster.url, Options())
    token = fresh("token")
    assert first.remember("acks:room", token, 30) is True
    assert second.remember("acks:room", token, 30) is False
    assert first.client.exists("django_websocket:{acks:room}~seen:" + token) == 1


@pytest.fixture(scope="module")
def cluster():
    from tests.redis_cluster import RedisClusterGroup

    with RedisClusterGroup() as running:
        yield running


def test_more_readers_than_connections_queue_for_one(cluster):
    """200 reads at once through one broker (16 connections per node) wait their turn; none fails.

    redis-py's cluster client raised "Too many connections" at the 17th: sockets resuming
    together after a deploy got gaps instead of their history.
    """
    broker = ClusterBroker(cluster.url, Options())
    channel = fresh()
    message_id, _ = broker.publish(channel, broker.key(channel), b"t", "x")
    with ThreadPoolExecutor(max_workers=200) as pool:
        readings = list(pool.map(lambda _: broker.read(channel, None), range(200)))
    assert {reading.position for reading in readings} == {message_id}


def test_channels_spread_over_every_shard(cluster):
    """A hundred channel names land on all three masters, none with more than half."""
    broker = ClusterBroker(cluster.url, Options())
    counts: dict[str, int] = {}
    for n in range(100):
        node, _ = broker.node_of(broker.key(f"room:{n}"))
        counts[node] = counts.get(node, 0) + 1
    assert len(counts) == 3 and max(counts.values()) <= 50


def test_publish_history_and_presence_on_the_cluster(cluster, request):
    """Sharded delivery to a hub, ids from the stream, presence: each channel's scripts in one slot."""
    broker = ClusterBroker(cluster.url, Options())
    hub = Hub(broker)
    request.addfinalizer(lambda: stop_reading(hub))
    rooms = [fresh() for _ in range(6)]
    boxes = {room: Box() for room in rooms}
    for room in rooms:
        hub.add(broker.key(room), boxes[room])
    ids = {room: broker.publish(room, broker.key(room), b"t", f"hello {room}")[0] for room in rooms}
    until(lambda: all(box.messages for box in boxes.values()))
    for room in rooms:
        assert [(m.data, m.id) for m in boxes[room].messages] == [(f"hello {room}", ids[room])]
        assert broker.read(room, None).position == ids[room]
    shard_channels = set()
    for master in cluster.masters():
        shard_channels |= {c.decode() for c in master.client().execute_command("PUBSUB", "SHARDCHANNELS")}
        assert master.client().execute_command("PUBSUB", "CHANNELS") == []
    assert {broker.key(room) for room in rooms} <= shard_channels
    member = {"conn": "h:1:1", "user": None, "name": "bo"}
    hub.add(broker.key(rooms[0]), boxes[rooms[0]])
    broker.join(rooms[0], member)
    assert broker.members(rooms[0]) == [member]
    until(lambda: boxes[rooms[0]].presence)
    broker.leave(rooms[0], "h:1:1")
    assert broker.members(rooms[0]) == []
    no_history = ClusterBroker(cluster.url, Options(history_size=0))
    assert no_history.publish(rooms[1], broker.key(rooms[1]), b"t", "plain") == ("", 1)
    until(lambda: len(boxes[rooms[1]].messages) == 2)


def test_a_master_failover_keeps_the_hub_delivering_without_loss(cluster, request):
    """SIGKILL the master of a room: the hub resubscribes on its replica and recovers from the history."""
    broker = ClusterBroker(cluster.url, Options())
    hub = Hub(broker)
    request.addfinalizer(lambda: stop_reading(hub))
    room = fresh("failover")
    box = Box()
    hub.add(broker.key(room), box)
    before = broker.publish(room, broker.key(room), b"t", "before")[0]
    until(lambda: box.messages)
    master = cluster.master_of(broker.key(room))
    # Another room on the same master, first subscribed to during the failover.
    late_room = next(
        name for name in map(fresh, itertools.repeat("late")) if on(cluster, broker, name, master)
    )
    master.client().execute_command("WAIT", 1, 2000)
    master.kill()
    late_box = Box()
    started = time.monotonic()
    hub.add(broker.key(late_room), late_box)
    # A view is not held for the election (nor for SUBSCRIBE_TIMEOUT): the hub's reader waits for it.
    assert time.monotonic() - started < 1.0
    # The hub's greenlets run during the election (kill_master_of() would block them in time.sleep).
    until(lambda: cluster.master_of(broker.key(room)).port != master.port, timeout=30)
    deadline = time.monotonic() + 20
    after = None
    while after is None:
        try:
            after = broker.publish(room, broker.key(room), b"t", "after")[0]
        except Exception:
            if time.monotonic() > deadline:
                raise
            gevent.sleep(0.2)
    until(lambda: any(m.data == "after" for m in box.messages), timeout=20)
    assert [m.id for m in box.messages] == [before, after]  # nothing lost, nothing twice
    until(lambda: late_box.resyncs)  # the late room's subscription was confirmed after the election
    late = broker.publish(late_room, broker.key(late_room), b"t", "late")[0]
    until(lambda: late_box.messages)
    assert [m.id for m in late_box.messages] == [late]
    # The lost connection, then at most one failed attempt (an election over FAILOVER_WAIT): the
    # subscriber waits for the replica, reading the slot map, instead of the hub backing off.
    assert 1 <= hub.reconnects <= 2


def test_probe_finds_every_master_new_enough(cluster):
    """probe(): None on Redis 7 masters (the sharded pub/sub check a worker runs at start)."""
    assert ClusterBroker(cluster.url, Options()).probe() is None


def on(cluster, broker: ClusterBroker, room: str, master) -> bool:
    """Whether *room*'s slot is served by *master* (a node of *cluster*)."""
    return cluster.master_of(broker.key(room)).port == master.port


def stop_reading(hub: Hub) -> None:
    """Stop *hub*'s reader: a hub left reading a stopped cluster retries (and logs) for the whole session."""
    if hub._reader is not None:
        hub._reader.kill()
