"""Integration: a real six-node Redis Cluster behind two gunicorn workers.

Rooms spread over the three shards; every worker reads each shard over one connection
with ``SSUBSCRIBE`` (sharded pub/sub); a channel's history stream and presence keys share
its slot. A master is SIGKILLed: its replica takes over, sockets stay open, the hub
resubscribes and recovers from the history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_websocket import publish
from django_websocket.brokers import get_broker
from django_websocket.publishing import presence
from tests.redis_cluster import RedisClusterGroup
from tests.resume_client import Client, close_clients
from tests.servers import Server, gunicorn
from tests.test_fanout_integration import Clients, expect


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterGroup]:
    with RedisClusterGroup() as running:
        yield running


@pytest.fixture(scope="module")
def cluster_server(cluster: RedisClusterGroup, server_db: dict[str, str]) -> Iterator[Server]:
    env = {"REDIS_URL": cluster.url, "DJANGO_DB_PATH": server_db["path"]}
    with gunicorn(env=env, workers=2) as running:
        yield running


@pytest.fixture(autouse=True)
def publishing_to(cluster: RedisClusterGroup) -> Iterator[None]:
    """publish() in this process goes to the cluster; clients are closed after each test."""
    with override_settings(WEBSOCKET_REDIS_URL=cluster.url):
        try:
            yield
        finally:
            close_clients()


@pytest.fixture
def clients(cluster_server: Server) -> Iterator[Clients]:
    with Clients(cluster_server) as opened:
        yield opened


def rooms_on_every_shard(cluster: RedisClusterGroup) -> dict[int, str]:
    """One room name per master (by port): ``{port: "room name"}``."""
    broker = get_broker()
    found: dict[int, str] = {}
    for n in range(300):
        name = f"shard-{n}"
        port = cluster.master_of(broker.key(f"room:{name}")).port
        found.setdefault(port, name)
        if len(found) == 3:
            return found
    raise AssertionError(f"300 rooms landed on {len(found)} shards only")


def test_rooms_on_every_shard_deliver_across_workers(cluster, clients):
    """A room on each shard: a message sent on one worker reaches the other; only shard channels are used."""
    rooms = rooms_on_every_shard(cluster)
    for name in rooms.values():
        first, second = clients.on_each_worker(f"/room/{name}/")
        first.send(f"hello {name}")
        expect(second, f"hello {name}")
        expect(first, f"hello {name}")
    broker = get_broker()
    for port, name in rooms.items():
        master = next(node for node in cluster.masters() if node.port == port)
        shard_channels = {c.decode() for c in master.client().execute_command("PUBSUB", "SHARDCHANNELS")}
        assert broker.key(f"room:{name}") in shard_channels
        numsub = master.client().execute_command("PUBSUB", "SHARDNUMSUB", broker.key(f"room:{name}"))
        assert numsub[1] == 2  # one connection per worker for this shard, however many sockets
        assert master.client().execute_command("PUBSUB", "CHANNELS") == []


def test_chat_history_and_presence_on_the_cluster(cluster_server):
    """Resume after an id, presence joins and the presence list, all on the room's shard."""
    first = Client(cluster_server, "cluster-chat", "ann")
    first.subscribed()
    first.until("presence")
    seen = [publish("room:cluster-chat", f"m{n}") for n in range(5)]
    for message_id in seen:
        assert first.until("message")["id"] == message_id
    second = Client(cluster_server, "cluster-chat", "ben", since=seen[1])
    subscribed = second.subscribed()
    assert [frame["id"] for frame in second.messages] == seen[2:] and subscribed["replayed"] == 3
    first.until("join", name="ben")
    assert [member["name"] for member in presence("room:cluster-chat")] == ["ann", "ben"]


def test_a_master_failover_keeps_sockets_and_delivers_later_messages(cluster, cluster_server, clients):
    """SIGKILL a room's master: sockets stay open, later messages arrive, a resuming client misses none."""
    broker = get_broker()
    name = next(iter(rooms_on_every_shard(cluster).values()))
    sockets = clients.on_each_worker(f"/room/{name}/")
    resuming = Client(cluster_server, name, "cat")
    resuming.subscribed()
    before = publish(f"room:{name}", "before")
    for websocket in sockets:
        expect(websocket, "before")
    assert resuming.until("message")["id"] == before
    master = cluster.master_of(broker.key(f"room:{name}"))
    master.client().execute_command("WAIT", 1, 2000)  # the replica has "before": no gap to expect
    killed = time.monotonic()
    cluster.kill_master_of(broker.key(f"room:{name}"))
    after = None
    deadline = time.monotonic() + 20
    while after is None:
        try:
            after = publish(f"room:{name}", "after")
        except Exception:  # PublishError while the cluster elects the replica
            assert time.monotonic() < deadline, "publish() never worked again after the failover"
            time.sleep(0.2)
    for websocket in sockets:
        expect(websocket, "after", timeout=20)
    assert resuming.until("message", timeout=20)["id"] == after
    print(f"first message delivered {time.monotonic() - killed:.1f} s after the SIGKILL")
    assert [frame["id"] for frame in resuming.messages] == [before, after]
    assert not [frame for frame in resuming.other if frame["ws"] == "gap"]
    for websocket in sockets:  # never closed: each still sends, and hears both
        websocket.send("still open")
    for websocket in sockets:
        expect(websocket, "still open", "still open", timeout=10)
