"""django_websocket.messaging.redis_pubsub: the RESP2 encoder and parser of the hub's Redis connection."""

from __future__ import annotations

import pytest

from django_websocket.messaging.redis_pubsub import RespParser, encode_command

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
