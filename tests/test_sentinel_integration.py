"""Integration: a Redis Sentinel failover under live sockets (issue 12, item 2).

Each test starts its own Sentinel group (``tests/redis_sentinel.py``: a primary, a replica,
three sentinels, free ports on 127.0.0.1; a failover uses up the replica) and gunicorn
with ``REDIS_URL`` set to the group's ``redis+sentinel://`` URL. The primary is SIGKILLed;
the sentinels promote the replica within a few seconds. Clients are ``websockets``
clients: ``room/<name>/`` sockets (``tests/websocket_urls.py``: a hello naming the worker,
then every message published to the room; what a client sends is published to everyone),
and resume-protocol clients on ``resume-room/<name>/`` (``tests/test_history_integration.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.test import override_settings
from websockets.sync.client import ClientConnection

from django_websocket import publish
from django_websocket.exceptions import PublishError
from tests.redis_sentinel import SentinelGroup
from tests.redis_server import wait_until
from tests.resume_client import Client
from tests.servers import gunicorn
from tests.test_fanout_integration import Clients

#: Sockets on the broadcast room, spread over both workers.
CROWD = 20


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as running:
        yield running


@pytest.fixture
def publishing_to(group: SentinelGroup) -> Iterator[str]:
    """publish() in this process goes to the group's primary, through the sentinels."""
    with override_settings(WEBSOCKET_REDIS_URL=group.url()):
        yield group.url()


class Publisher(threading.Thread):
    """publish({"n": n}) to *channel* every 10 ms: ``sent`` maps n to the id, or None if it raised."""

    def __init__(self, channel: str) -> None:
        super().__init__(daemon=True)
        self.channel = channel
        self.sent: dict[int, str | None] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(0.01):
            try:
                self.sent[n] = str(publish(self.channel, {"n": n}))
            except PublishError:
                self.sent[n] = None  # during the election: loud, never retried behind our back
            n += 1

    def delivered(self) -> list[int]:
        """The numbers whose publish() returned an id."""
        return [n for n, message_id in list(self.sent.items()) if message_id is not None]

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def read_until(websocket: ClientConnection, text: str, timeout: float = 10.0) -> None:
    """Read *websocket* until it receives *text* (other frames are skipped); fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while websocket.recv(timeout=max(0.01, deadline - time.monotonic())) != text:
        pass


def crowd_on_both_workers(clients: Clients, path: str) -> list[ClientConnection]:
    """``CROWD`` sockets on *path*, at least one on each of the two workers."""
    crowd = clients.on_each_worker(path)
    crowd += [clients.join(path)[0] for _ in range(CROWD - len(crowd))]
    return crowd


def assert_exactly_once_or_gap(client: Client, publisher: Publisher) -> None:
    """Every message arrived at most once, in order; all published after the last gap arrived."""
    received = [frame["data"]["n"] for frame in client.messages]
    assert received == sorted(set(received)), "a message arrived twice or out of order"
    gaps = [frame for frame in client.other if frame["ws"] == "gap"]
    delivered = publisher.delivered()
    if gaps:
        after = {n for n in delivered if _order(publisher.sent[n]) > _order(gaps[-1]["id"])}
        assert after <= set(received), f"published after the gap but missing: {sorted(after - set(received))}"
    else:
        missing = sorted(set(delivered) - set(received))
        assert not missing, f"lost without a gap: {missing}"
    print(f"{len(received)} of {len(publisher.sent)} messages, {len(gaps)} gaps")


def _order(message_id: str | None) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    milliseconds, _, sequence = (message_id or "0-0").partition("-")
    return int(milliseconds), int(sequence)


def test_failover_keeps_every_socket_and_loses_nothing_silently(group, publishing_to, server_db):
    """SIGKILL the primary under two workers, 20 room sockets and a resuming client: all survive."""
    env = {"REDIS_URL": publishing_to, "DJANGO_DB_PATH": server_db["path"]}
    with gunicorn(workers=2, env=env) as server, Clients(server) as clients:
        crowd = crowd_on_both_workers(clients, "/room/failover/")
        chat = Client(server, "failover-chat", "ann")
        publisher = Publisher("room:failover-chat")
        try:
            chat.subscribed()
            publisher.start()
            while len(chat.messages) < 20:
                chat.frame()
            group.kill_primary()
            killed = time.monotonic()
            group.wait_for_failover(timeout=30)
            print(f"the sentinels promoted the replica {time.monotonic() - killed:.1f} s after the SIGKILL")
            wait_until(lambda: len(publisher.delivered()) >= 70, 20, "publishes on the new primary")
        finally:
            publisher.stop()
        last = publisher.sent[publisher.delivered()[-1]]
        while not chat.messages or chat.messages[-1]["id"] != last:
            chat.frame(timeout=15)
        assert_exactly_once_or_gap(chat, publisher)
        print(f"{list(publisher.sent.values()).count(None)} publish() calls raised during the election")

        crowd[0].send("broadcast after the failover")
        for websocket in crowd:
            read_until(websocket, "broadcast after the failover")
        assert publish("room:failover", "from Django").receivers == 2  # both workers' hubs
        for websocket in crowd:
            read_until(websocket, "from Django")
        chat.close()
        assert "reconnected to Redis" in server.log


def test_messages_replication_lost_become_a_gap_frame(group, publishing_to, server_db):
    """The replica misses the last 5 messages (link cut), then is promoted: clients get a gap, not silence.

    The replica's link to the primary is cut with ``CLIENT KILL TYPE master`` after giving it a
    user that does not exist, so it cannot reconnect: deterministic asynchronous-replication loss.
    """
    env = {"REDIS_URL": publishing_to, "DJANGO_DB_PATH": server_db["path"]}
    with gunicorn(workers=1, env=env) as server:
        client = Client(server, "lost", "bea")
        client.subscribed()
        kept = [publish("room:lost", f"kept {n}") for n in range(3)]
        replica = group.replica
        assert replica is not None
        with replica.client() as redis:
            wait_until(lambda: redis.info("replication")["master_repl_offset"] > 0, 5, "replication")
            redis.config_set("masteruser", "nobody-here")
            redis.config_set("masterauth", "wrong")
            redis.client_kill_filter(_type="master")
        with group.primary.client() as redis:
            wait_until(lambda: redis.info("replication")["connected_slaves"] == 0, 5, "the link cut")
        lost = [publish("room:lost", f"lost {n}") for n in range(5)]
        for message_id in [*kept, *lost]:
            assert client.until("message")["id"] == message_id  # delivered live, before the loss
        group.kill_primary()
        group.wait_for_failover(timeout=30)
        with group.primary.client() as redis:
            assert redis.xrange("django_websocket:room:lost~history")[-1][0].decode() == kept[-1]
        gap = client.until("gap", timeout=15)
        assert gap == {"ws": "gap", "channel": "room:lost", "id": kept[-1]}
        after = publish("room:lost", "after")
        assert client.until("message", timeout=10)["id"] == after
        resumed = Client(server, "lost", "cy", since=lost[2])  # an id only the dead primary had
        assert resumed.frame() == {"ws": "gap", "channel": "room:lost", "id": after}
        resumed.close()
        client.close()
        server.wait_for_log(r"messages of room:lost after \S+ are no longer in its history: gap")


def test_an_unknown_service_name_is_one_log_line_at_worker_start(group, server_db):
    """A Sentinel service nobody monitors: the worker says so once at start, naming the known ones."""
    url = group.url().replace("/mymaster/", "/nosuchservice/")
    with gunicorn(workers=1, env={"REDIS_URL": url, "DJANGO_DB_PATH": server_db["path"]}) as server:
        line = server.wait_for_log(r".*monitors a service named 'nosuchservice'.*", timeout=10).group(0)
        assert "they monitor: mymaster" in line and "will fail until it is fixed" in line
        assert len([entry for entry in server.log.splitlines() if "nosuchservice" in entry]) == 1
