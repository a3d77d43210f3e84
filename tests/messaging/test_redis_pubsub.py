"""django_websocket.messaging.redis_pubsub: the RESP2 encoder and parser of the hub's Redis connection."""

from __future__ import annotations

import time

import pytest

from django_websocket.messaging import redis_pubsub
from django_websocket.messaging.redis_pubsub import (
    FAILOVER_POLL,
    RespParser,
    ShardedSubscriber,
    encode_command,
)
from tests.redis_server import RedisServer, free_port

MESSAGE = b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$6\r\nthello\r\n"
CONFIRM = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n"


def test_encode_command():
    """Commands are RESP arrays of bulk strings."""
    assert encode_command("SUBSCRIBE", "a", b"bc") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"


def test_parses_confirmations_and_messages():
    """A confirmation and a message in one read are two events."""
    assert RespParser().feed(CONFIRM + MESSAGE) == [
        ("subscribe", b"room", 1),
        ("message", b"room", b"thello"),
    ]


def test_parses_across_arbitrary_splits():
    """Events split anywhere across reads (even inside \\r\\n) come out whole, once."""
    stream = CONFIRM + MESSAGE * 3
    for cut in range(1, len(stream)):
        parser = RespParser()
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert events == [("subscribe", b"room", 1)] + [("message", b"room", b"thello")] * 3


def test_binary_payloads_with_crlf_inside():
    """Bulk strings are length-delimited: \\r\\n inside a payload is data."""
    payload = b"b\r\n\x00\r\n"
    data = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$%d\r\n%s\r\n" % (len(payload), payload)
    assert RespParser().feed(data) == [("message", b"c", payload)]


def test_error_reply_raises_connection_error():
    """An error reply ends the connection (the hub reconnects)."""
    with pytest.raises(ConnectionError):
        RespParser().feed(b"-ERR unknown command\r\n")


def test_unix_socket_url(tmp_path):
    """unix:// URLs connect to the socket path (not to localhost:6379)."""
    import subprocess

    import gevent

    from django_websocket.messaging.redis_pubsub import RedisSubscriber

    path = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        subscriber = RedisSubscriber(f"unix://{path}")
        with gevent.Timeout(5):
            while True:
                try:
                    subscriber.connect()
                    break
                except ConnectionError:
                    gevent.sleep(0.05)  # redis-server is still starting
            subscriber.subscribe(["chan"])
            assert next(subscriber.batches()) == [("subscribe", b"chan", 1)]
        subscriber.close()
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def redis_server():
    with RedisServer() as running:
        yield running


class SlotMap:
    """A fake cluster slot map naming *dead* for a channel until it has been read *reads* times more."""

    def __init__(self, dead: str, live: str, reads: int) -> None:
        self.dead, self.live, self.reads_left, self.reads = dead, live, reads, 0

    def refresh(self) -> None:
        self.reads += 1
        self.reads_left -= 1

    def node_of(self, channel: str) -> tuple[str, int]:
        return (self.dead if self.reads_left > 0 else self.live), 7


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connections are refused


def test_sharded_connect_polls_the_slot_map_until_a_master_accepts(redis_server):
    """A refused master: connect() reads the slot map every FAILOVER_POLL s until a live one serves it."""
    slots = SlotMap(dead_url(), redis_server.url, reads=4)
    subscriber = ShardedSubscriber(slots.refresh, slots.node_of, timeout=1.0)
    started = time.monotonic()
    subscriber.connect(["chan"])
    assert slots.reads == 4
    assert time.monotonic() - started >= 3 * FAILOVER_POLL
    assert list(subscriber.shards) == [redis_server.url]
    subscriber.subscribe(["chan"])  # on the shard connect() opened
    assert next(subscriber.batches()) == [("subscribe", b"chan", 1)]
    subscriber.close()


def test_sharded_connect_gives_up_after_the_failover_wait(monkeypatch):
    """A master that stays down: connect() raises ConnectionError after FAILOVER_WAIT."""
    monkeypatch.setattr(redis_pubsub, "FAILOVER_WAIT", 0.2)
    dead = dead_url()
    slots = SlotMap(dead, dead, reads=10**6)
    subscriber = ShardedSubscriber(slots.refresh, slots.node_of, timeout=1.0)
    with pytest.raises(ConnectionError, match="refused connections"):
        subscriber.connect(["chan", "other"])
    assert slots.reads > 2
    assert subscriber.shards == {}
    subscriber.close()


def test_sharded_subscribe_does_not_wait_for_a_failover(redis_server):
    """A view's subscribe() to a refused master raises at once, and batches() raises for the reader."""
    slots = SlotMap(dead_url(), redis_server.url, reads=10**6)
    subscriber = ShardedSubscriber(slots.refresh, slots.node_of, timeout=1.0)
    subscriber.connect()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach Redis"):
        subscriber.subscribe(["chan"])
    assert time.monotonic() - started < FAILOVER_POLL
    assert slots.reads == 1  # connect()'s only
    with pytest.raises(ConnectionError):
        next(subscriber.batches())
    subscriber.close()
