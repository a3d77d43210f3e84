"""Unit tests of django_websocket.connection: the websocket object over a socket pair."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import gevent
import gevent.socket
import pytest
from websockets.frames import Opcode
from websockets.protocol import OPEN, Protocol, Side

from django_websocket.connection import ServerProtocol, WebSocket, protocol_logger
from django_websocket.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK


class Peer:
    """The client end: a sans-I/O client protocol on a gevent socket."""

    def __init__(self, sock):
        self.sock = sock
        self.protocol = Protocol(Side.CLIENT, state=OPEN, max_size=None)
        self.frames = []

    def send(self, method, *args):
        getattr(self.protocol, method)(*args)
        self.flush()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def flush(self):
        data = b"".join(self.protocol.data_to_send())
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the server already dropped the connection, as it does after failing it

    def read_until(self, predicate, timeout=3.0):
        """Read frames until predicate(frames) holds or the stream ends; return the frames."""
        with gevent.Timeout(timeout):
            while not predicate(self.frames):
                data = self.sock.recv(65536)
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                self.frames += self.protocol.events_received()
                self.flush()
                if not data:
                    break
        return self.frames

    def close_frame(self):
        frames = self.read_until(lambda frames: any(f.opcode is Opcode.CLOSE for f in frames))
        close = [f for f in frames if f.opcode is Opcode.CLOSE]
        assert close, f"no close frame in {frames}"
        data = bytes(close[0].data)
        return struct.unpack("!H", data[:2])[0], data[2:].decode()


@pytest.fixture
def pair():
    server_sock, client_sock = gevent.socket.socketpair()
    rfile = server_sock.makefile("rb", -1)
    websocket = WebSocket(server_sock, rfile.read1, max_message_size=1024, close_timeout=1)
    yield websocket, Peer(client_sock)
    server_sock.close()
    client_sock.close()


def masked_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """A client frame header claiming *length* bytes of payload (mask key zero)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes([first, 0x80 | length]) + b"\0\0\0\0"
    if length < 2**16:
        return bytes([first, 0x80 | 126]) + struct.pack("!H", length) + b"\0\0\0\0"
    return bytes([first, 0x80 | 127]) + struct.pack("!Q", length) + b"\0\0\0\0"


@pytest.mark.parametrize("max_size", [2**20, None, 7])
def test_an_opened_protocol_is_what_protocol_init_makes_but_its_own(max_size):
    """ServerProtocol.opened() skips Protocol.__init__: the same attributes, equal values, and
    nothing mutable shared between two connections (a websockets upgrade that adds one fails here)."""
    made = Protocol(Side.SERVER, state=OPEN, max_size=max_size, logger=protocol_logger)
    first = ServerProtocol.opened(max_size, protocol_logger)
    second = ServerProtocol.opened(max_size, protocol_logger)
    assert set(vars(first)) == set(vars(made)) - {"id"}
    immutable = (type(None), bool, int, str, Side, type(OPEN))
    for name, value in vars(made).items():
        if name in ("id", "parser", "reader", "logger"):
            continue
        assert type(getattr(first, name)) is type(value), name
        if isinstance(value, immutable):
            assert getattr(first, name) == value, name
        else:
            assert getattr(first, name) is not getattr(second, name), f"{name} is shared"
    assert first.reader is not second.reader and first.parser is not second.parser
    assert first.logger is made.logger
    assert first.id != second.id and first.id == first.id  # made when first read, then kept


def test_an_opened_protocol_parses_and_answers_as_a_made_one():
    """A masked text frame then a close: the same events and the same bytes to send."""
    frames = bytes((0x81, 0x82)) + b"\x01\x02\x03\x04" + bytes((ord("h") ^ 1, ord("i") ^ 2))
    frames += bytes((0x88, 0x82)) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000)
    results = []
    for protocol in (
        ServerProtocol(Side.SERVER, state=OPEN, max_size=2**20, logger=protocol_logger),
        ServerProtocol.opened(2**20, protocol_logger),
    ):
        protocol.receive_data(frames)
        events = [(frame.opcode, bytes(frame.data)) for frame in protocol.events_received()]
        results.append((events, protocol.data_to_send(), protocol.state))
    assert results[0] == results[1]
    assert results[1][0][0] == (Opcode.TEXT, b"hi")


def test_text_and_binary_keep_their_type(pair):
    """str arrives as str, bytes as bytes, and send() picks the opcode by type."""
    websocket, peer = pair
    peer.send("send_text", "héllo".encode())
    peer.send("send_binary", b"\x00\xff")
    assert websocket.receive() == "héllo"
    assert websocket.receive() == b"\x00\xff"
    websocket.send("text")
    websocket.send(b"bin")
    frames = peer.read_until(lambda frames: len(frames) >= 2)
    assert [(f.opcode, bytes(f.data)) for f in frames] == [(Opcode.TEXT, b"text"), (Opcode.BINARY, b"bin")]


def test_json_helpers(pair):
    """send_json / receive_json round-trip JSON text messages."""
    websocket, peer = pair
    peer.send("send_text", b'{"a": [1, 2]}')
    assert websocket.receive_json() == {"a": [1, 2]}
    websocket.send_json({"b": None})
    frames = peer.read_until(lambda frames: frames)
    assert bytes(frames[0].data) == b'{"b":null}'


def test_utf8_split_across_fragments_is_delivered_intact(pair):
    """A code point split between two fragments is reassembled, not rejected."""
    websocket, peer = pair
    data = "€uro".encode()
    peer.send("send_text", data[:2], False)
    peer.send("send_continuation", data[2:], True)
    assert websocket.receive() == "€uro"


def test_empty_messages(pair):
    """Empty text and binary messages are delivered as "" and b""."""
    websocket, peer = pair
    peer.send("send_text", b"")
    peer.send("send_binary", b"")
    assert websocket.receive() == ""
    assert websocket.receive() == b""


def test_invalid_utf8_closes_1007_without_waiting_for_the_end(pair):
    """Invalid UTF-8 in a first fragment fails the connection with 1007 at once."""
    websocket, peer = pair
    peer.send("send_text", b"\xff\xfe", False)
    with pytest.raises(ConnectionClosedError) as caught:
        websocket.receive()
    assert caught.value.code == 1007
    assert peer.close_frame()[0] == 1007


def test_oversized_frame_closes_1009_before_the_payload(pair):
    """A header declaring more than the limit closes 1009 without the payload ever being sent."""
    websocket, peer = pair
    peer.send_raw(masked_header(0x2, 10 * 2**20))
    with pytest.raises(ConnectionClosedError) as caught:
        websocket.receive()
    assert caught.value.code == 1009
    assert peer.close_frame()[0] == 1009


def test_oversized_fragmented_message_closes_1009_when_the_total_crosses(pair):
    """Fragments each under the limit close 1009 as soon as their running total crosses it."""
    websocket, peer = pair
    peer.send("send_binary", b"x" * 600, False)
    peer.send_raw(masked_header(0x0, 600, fin=False))  # header only: the total already exceeds 1024
    with pytest.raises(ConnectionClosedError) as caught:
        websocket.receive()
    assert caught.value.code == 1009


def test_unmasked_client_frame_closes_1002(pair):
    """RFC 6455 §5.1: a client frame without a mask is a protocol error."""
    websocket, peer = pair
    peer.send_raw(b"\x81\x02hi")
    with pytest.raises(ConnectionClosedError) as caught:
        websocket.receive()
    assert caught.value.code == 1002
    assert peer.close_frame()[0] == 1002


def test_close_puts_code_and_reason_on_the_wire(pair):
    """close(4001, "custom reason") sends exactly that code and reason."""
    websocket, peer = pair
    closer = gevent.spawn(websocket.close, 4001, "custom reason")
    assert peer.close_frame() == (4001, "custom reason")
    closer.join(timeout=3)
    assert closer.successful()
    assert websocket.closed
    with pytest.raises(ConnectionClosed) as caught:
        websocket.send("late")
    assert caught.value.code == 4001


def test_close_rejects_codes_that_may_not_be_sent(pair):
    """1005 and 1006 are never sent on the wire."""
    websocket, _peer = pair
    with pytest.raises(ValueError):
        websocket.close(1006)


def test_peer_close_ends_iteration_after_pending_messages(pair):
    """Messages before the peer's close frame are delivered, then iteration ends."""
    websocket, peer = pair
    peer.send("send_text", b"one")
    peer.send("send_text", b"two")
    peer.send("send_close", 1000, "bye")
    assert list(websocket) == ["one", "two"]
    with pytest.raises(ConnectionClosedOK) as caught:
        websocket.receive()
    assert (caught.value.code, caught.value.reason) == (1000, "bye")
    assert peer.close_frame() == (1000, "bye")  # echoed


def test_dropped_connection_is_1006(pair):
    """A peer that disappears without a close frame gives ConnectionClosedError(1006)."""
    websocket, peer = pair
    peer.sock.close()
    with pytest.raises(ConnectionClosedError) as caught:
        websocket.receive()
    assert caught.value.code == 1006


def test_send_rejects_other_types(pair):
    """send() takes str or bytes only."""
    websocket, _peer = pair
    with pytest.raises(TypeError):
        websocket.send(123)


def test_concurrent_senders_never_interleave(pair):
    """Big and small frames sent from two greenlets at once arrive whole and in per-greenlet order."""
    websocket, peer = pair
    big = bytes(range(256)) * 256

    def send_big():
        for _ in range(10):
            websocket.send(big)

    def send_small():
        for index in range(200):
            websocket.send(f"small {index}")

    senders = [gevent.spawn(send_big), gevent.spawn(send_small)]
    frames = peer.read_until(lambda frames: len(frames) >= 210, timeout=10)
    gevent.joinall(senders, raise_error=True)
    binary = [bytes(f.data) for f in frames if f.opcode is Opcode.BINARY]
    text = [bytes(f.data).decode() for f in frames if f.opcode is Opcode.TEXT]
    assert binary == [big] * 10
    assert text == [f"small {index}" for index in range(200)]


def test_pings_are_answered(pair):
    """A client ping gets a pong with the same payload while the server is receiving."""
    websocket, peer = pair
    peer.send("send_ping", b"are you there")
    peer.send("send_text", b"after ping")
    assert websocket.receive() == "after ping"
    frames = peer.read_until(lambda frames: frames)
    assert (frames[0].opcode, bytes(frames[0].data)) == (Opcode.PONG, b"are you there")


def test_big_frames_are_sent_whole(pair):
    """A 200 KiB message (header and payload written separately) arrives intact."""
    websocket, peer = pair
    big = bytes(range(256)) * 800
    sender = gevent.spawn(websocket.send, big)
    frames = peer.read_until(lambda frames: frames, timeout=5)
    sender.join(timeout=5)
    assert bytes(frames[0].data) == big


# Message rate limit (WEBSOCKET_MESSAGE_RATE_LIMIT): a token bucket per connection


@pytest.fixture
def limited():
    """A connection limited to bursts of 3 messages, refilled at 3 per 0.3 s (10 a second)."""
    server_sock, client_sock = gevent.socket.socketpair()
    rfile = server_sock.makefile("rb", -1)
    websocket = WebSocket(
        server_sock, rfile.read1, max_message_size=1024, close_timeout=1, message_rate_limit=(3, 0.3)
    )
    yield websocket, Peer(client_sock)
    server_sock.close()
    client_sock.close()


def test_rate_limit_burst_passes_then_closes_1008(limited, caplog):
    """3 messages at once pass; the 4th closes 1008 "rate limit exceeded", after the 3 are delivered."""
    websocket, peer = limited
    for index in range(5):
        peer.send("send_text", f"m{index}".encode())
    with caplog.at_level("WARNING", logger="django_websocket"):
        assert [websocket.receive() for _ in range(3)] == ["m0", "m1", "m2"]
        with pytest.raises(ConnectionClosedError) as caught:
            websocket.receive()
    assert (caught.value.code, caught.value.reason) == (1008, "rate limit exceeded")
    assert peer.close_frame() == (1008, "rate limit exceeded")
    assert "websocket rate limit exceeded" in caplog.text
    assert "more than 3 messages in 0.3 s" in caplog.text


def test_rate_limit_refills_over_time(limited):
    """A client that keeps to the rate is never closed: the bucket refills between bursts."""
    websocket, peer = limited
    for burst in range(3):
        for index in range(3):
            peer.send("send_text", f"{burst}.{index}".encode())
        assert [websocket.receive() for _ in range(3)] == [f"{burst}.{index}" for index in range(3)]
        gevent.sleep(0.35)  # 3 tokens back
    assert not websocket.closed


def test_rate_limit_ignores_control_frames(limited):
    """Pings (and pongs) are free: 20 pings, then 3 messages, all pass and every ping is answered."""
    websocket, peer = limited
    for index in range(20):
        peer.send("send_ping", f"p{index}".encode())
    for index in range(3):
        peer.send("send_text", f"m{index}".encode())
    assert [websocket.receive() for _ in range(3)] == ["m0", "m1", "m2"]
    frames = peer.read_until(lambda frames: len(frames) >= 20)
    assert [f.opcode for f in frames] == [Opcode.PONG] * 20
    assert not websocket.closed


def test_rate_limit_counts_a_fragmented_message_once(limited):
    """A message in 10 fragments takes one token: it and 2 more pass, the next one closes 1008."""
    websocket, peer = limited
    peer.send("send_text", b"f0", False)
    for index in range(1, 9):
        peer.send("send_continuation", f"f{index}".encode(), False)
    peer.send("send_continuation", b"f9", True)
    peer.send("send_binary", b"two")
    peer.send("send_binary", b"three")
    assert websocket.receive() == "".join(f"f{index}" for index in range(10))
    assert websocket.receive() == b"two"
    assert websocket.receive() == b"three"
    peer.send("send_text", b"four")
    with pytest.raises(ConnectionClosedError) as caught:
        websocket.receive()
    assert caught.value.code == 1008


def test_no_rate_limit_by_default_in_the_socket_layer(pair):
    """Without message_rate_limit (the handler passes the setting), 2,000 messages at once pass."""
    websocket, peer = pair
    sender = gevent.spawn(lambda: [peer.send("send_text", b"x") for _ in range(2000)])
    assert [websocket.receive() for _ in range(2000)] == ["x"] * 2000
    sender.join(timeout=5)
    assert not websocket.closed


def test_rate_limit_log_names_the_path_user_and_peer(limited, caplog):
    """The warning carries the request's path, the user the handler recorded and REMOTE_ADDR."""
    websocket, peer = limited

    class Request:
        path = "/ws/flood/"
        META = {"REMOTE_ADDR": "203.0.113.7"}

    websocket.request = Request()
    websocket.user_id = 42
    for index in range(4):
        peer.send("send_text", f"m{index}".encode())
    with caplog.at_level("WARNING", logger="django_websocket"), pytest.raises(ConnectionClosedError):
        while True:
            websocket.receive()
    assert "/ws/flood/ (user 42, peer 203.0.113.7)" in caplog.text


# Keepalive pings (WEBSOCKET_PING_INTERVAL / WEBSOCKET_PING_TIMEOUT)


@pytest.fixture
def keepalive():
    """A connection pinging every 0.05 s, with 0.3 s for each pong, and the raw client socket."""
    server_sock, client_sock = gevent.socket.socketpair()
    rfile = server_sock.makefile("rb", -1)
    websocket = WebSocket(server_sock, rfile.read1, close_timeout=0.5, ping_interval=0.05, ping_timeout=0.3)
    yield websocket, client_sock
    websocket._abort()
    server_sock.close()
    client_sock.close()


def count_rounds_in_greenlets(monkeypatch) -> list:
    """Record every keepalive round that runs in a greenlet of its own (the fallback)."""
    rounds: list = []
    fallback = WebSocket._ping_round
    monkeypatch.setattr(WebSocket, "_ping_round", lambda self: rounds.append(self) or fallback(self))
    return rounds


def test_pong_cancels_the_deadline_and_the_next_ping_comes(keepalive, monkeypatch):
    """With the view reading, each pong ends its round: pings keep coming, none in a greenlet."""
    rounds = count_rounds_in_greenlets(monkeypatch)
    overdue: list = []
    monkeypatch.setattr(WebSocket, "_pong_overdue", lambda self, payload: overdue.append(payload))
    websocket, client_sock = keepalive
    reader = gevent.spawn(websocket.receive)
    peer = Peer(client_sock)  # its protocol answers every ping with a pong
    # 12 rounds take over 0.6 s, past a pong's deadline (0.3 s): one left armed would close 1011.
    peer.read_until(lambda frames: sum(f.opcode is Opcode.PING for f in frames) >= 12)
    assert not websocket.closed
    assert rounds == []
    assert overdue == []  # every deadline was cancelled by its pong: none fired
    peer.send("send_text", b"hello")
    assert reader.get(timeout=3) == "hello"


def test_no_pong_closes_1011_and_logs(keepalive, caplog):
    """A client that reads but never answers is closed with 1011 after the timeout, logged."""
    websocket, client_sock = keepalive
    reader = gevent.spawn(websocket.receive)
    peer = Peer(client_sock)
    peer.flush = lambda: None  # reads the pings, answers nothing
    assert peer.close_frame() == (1011, "keepalive ping timeout")
    with pytest.raises(ConnectionClosedError) as raised:
        reader.get(timeout=3)
    assert raised.value.code == 1011
    assert "websocket closed: no pong within 0.3 s" in caplog.text


def test_view_not_reading_pings_still_answered_and_kept_alive(keepalive, monkeypatch):
    """When the view does not read, a round reads the pong itself: messages wait for receive()."""
    rounds = count_rounds_in_greenlets(monkeypatch)
    websocket, client_sock = keepalive
    peer = Peer(client_sock)
    peer.send("send_text", b"kept")
    peer.read_until(lambda frames: sum(f.opcode is Opcode.PING for f in frames) >= 8)
    assert not websocket.closed
    assert len(rounds) >= 8  # the fallback: nobody else would read the pongs
    assert websocket.receive() == "kept"


def test_pong_the_view_left_unread_still_counts(keepalive, monkeypatch):
    """The view stops reading with a ping in flight: the deadline finds the pong unread, not late."""
    late: list = []
    check = WebSocket._ping_late
    monkeypatch.setattr(
        WebSocket, "_ping_late", lambda self, payload: late.append(payload) or check(self, payload)
    )
    websocket, client_sock = keepalive
    websocket._ping_interval = 1.0  # one round at a time; the first ping is already scheduled
    reader = gevent.spawn(websocket.receive)
    peer = Peer(client_sock)
    peer.flush = lambda: None  # answer nothing by itself
    [ping] = peer.read_until(lambda frames: frames)
    assert ping.opcode is Opcode.PING
    list(peer.protocol.data_to_send())  # drop the pong the client protocol queued at once
    assert websocket._ping_payload  # in flight, with the deadline armed
    peer.protocol.send_text(b"busy now")
    client_sock.sendall(b"".join(peer.protocol.data_to_send()))
    assert reader.get(timeout=3) == "busy now"  # the view no longer reads
    peer.protocol.send_pong(bytes(ping.data))
    client_sock.sendall(b"".join(peer.protocol.data_to_send()))
    with gevent.Timeout(3):  # until the deadline's check has run and ended the round
        while not late or websocket._ping_payload:
            gevent.sleep(0.01)
    assert len(late) == 1  # the pong was read by the late check, not by the view
    assert not websocket.closed
    assert websocket._ping_payload == b""  # the round ended, the next is scheduled
    assert websocket._ping_timer.active


def test_closing_leaves_no_timer_armed(keepalive):
    """Closed between rounds or with a ping in flight, the connection keeps no timer of the loop."""
    websocket, client_sock = keepalive
    gevent.spawn(websocket.receive)
    assert websocket._ping_timer.active  # waiting for the first ping
    client_sock.recv(65536)  # the ping, unanswered: its deadline is armed
    assert websocket._ping_payload
    deadline = websocket._ping_timer
    assert deadline.active
    client_sock.close()
    assert websocket._closed.wait(timeout=3)
    assert not deadline.active
    assert not websocket._ping_timer.active


def test_closing_between_rounds_leaves_no_timer_armed():
    """A connection closed while waiting for its next ping disarms that timer."""
    server_sock, client_sock = gevent.socket.socketpair()
    websocket = WebSocket(server_sock, server_sock.recv, close_timeout=0.1, ping_interval=10.0)
    timer = websocket._ping_timer
    assert timer.active
    websocket._abort()
    assert not timer.active
    client_sock.close()


def close_handshake_from_the_peer(websocket, peer):
    peer.send("send_close", 1000, "done")
    with pytest.raises(ConnectionClosedOK):
        websocket.receive()


def test_after_the_closing_handshake_the_descriptor_is_closed_and_the_peer_gets_eof():
    server_sock, client_sock = gevent.socket.socketpair()
    websocket = WebSocket(server_sock, server_sock.recv, close_timeout=1)
    peer = Peer(client_sock)
    close_handshake_from_the_peer(websocket, peer)
    assert websocket.protocol.eof_sent and server_sock.fileno() == -1
    assert peer.close_frame() == (1000, "done")
    with gevent.Timeout(3):
        assert client_sock.recv(10) == b""
    client_sock.close()


def test_a_socket_something_else_still_references_is_shut_down_after_the_closing_handshake(pair):
    """close() cannot close the descriptor while a makefile() reader holds it (the pair fixture's):
    then the connection is shut down as before, its read side included."""
    websocket, peer = pair
    close_handshake_from_the_peer(websocket, peer)
    assert websocket.socket.fileno() != -1  # the reader's hold
    raw = websocket.socket._sock
    assert raw.recv(10) == b""  # SHUT_RD: an end of stream though the peer sent none
    assert peer.close_frame() == (1000, "done")


def test_closing_after_our_eof_wakes_a_greenlet_blocked_on_the_socket():
    server_sock, client_sock = gevent.socket.socketpair()
    websocket = WebSocket(server_sock, server_sock.recv, close_timeout=1)
    blocked = gevent.spawn(server_sock.recv, 10)
    gevent.sleep(0.01)  # it waits for data that will not come
    websocket.protocol.fail(1011, "going")  # a close frame, then (a server's) EOF
    with websocket._write_lock:
        websocket._flush()
    assert websocket.protocol.eof_sent
    websocket._abort()
    with pytest.raises(OSError):
        blocked.get(timeout=1)
    assert server_sock.fileno() == -1
    assert Peer(client_sock).close_frame() == (1011, "going")
    with gevent.Timeout(3):
        assert client_sock.recv(10) == b""
    client_sock.close()


#: A client in another process that keeps its socket full: masked 32-byte text frames, written
#: in 64 KiB blocks for argv[1] seconds to the socket of descriptor argv[2].
FLOODER = """
import os, select, sys, time
frame = bytes((0x81, 0x80 | 32)) + bytes(4) + b"x" * 32
block = frame * (65536 // len(frame))
deadline, fd = time.monotonic() + float(sys.argv[1]), int(sys.argv[2])
pending = block
while time.monotonic() < deadline:
    select.select([], [fd], [], 0.1)  # the descriptor is non-blocking (gevent's, shared)
    try:
        pending = pending[os.write(fd, pending):] or block
    except BlockingIOError:
        pass
"""


def test_a_client_that_keeps_its_socket_full_does_not_keep_the_worker():
    """A view reading a socket that always has data lets the other greenlets run (TURN_SLICE)."""
    server_sock, client_sock = gevent.socket.socketpair()
    fd = client_sock.fileno()
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, "3", str(fd)], pass_fds=[fd])
    reader = None
    try:
        websocket = WebSocket(server_sock, server_sock.recv, max_message_size=None, close_timeout=1)
        read = []

        def view():
            for message in websocket:
                read.append(message)

        reader = gevent.spawn(view)
        while not read:  # the flood has begun: the socket is full from here on
            gevent.sleep(0.01)
        assert flooder.poll() is None, "the flooded view kept the worker until the flood ended"
        started = time.monotonic()
        gevent.sleep(0.01)  # another greenlet's turn: a timer's
        waited = time.monotonic() - started
        assert waited < 0.25, f"the timer waited {waited:.2f} s behind the flooded view"
        assert flooder.poll() is None  # the turn came during the flood
    finally:
        flooder.kill()
        flooder.wait()
        if reader is not None:
            reader.kill()
        server_sock.close()
        client_sock.close()
