"""django_websocket.server: what the upgrade hands over, and a frame sent with the handshake.

Unit tests run on a gevent socket pair; the last test sends a handshake and its first frame in
one write to a real gunicorn worker, so the frame sits in the HTTP parser's buffer when the
view starts reading.
"""

from __future__ import annotations

import base64
import os
import socket as stdlib_socket

from gevent import socket

from django_websocket.server import buffered_bytes, socket_reader
from tests.servers import gunicorn


def test_buffered_bytes_takes_what_the_parser_read_ahead_and_never_waits():
    server, client = socket.socketpair()
    rfile = server.makefile("rb")
    client.sendall(b"GET / HTTP/1.1\r\n\r\nframe bytes")
    assert rfile.readline() == b"GET / HTTP/1.1\r\n"
    assert rfile.readline() == b"\r\n"
    assert buffered_bytes(rfile, server) == b"frame bytes"
    assert buffered_bytes(rfile, server) == b""  # nothing more, and no wait for it
    assert server.gettimeout() is None  # the socket is left blocking, as it was


def test_socket_reader_serves_the_leftover_first_then_the_socket():
    server, client = socket.socketpair()
    read = socket_reader(server, b"abcdef")
    assert read(4) == b"abcd"
    assert read(4) == b"ef"
    client.sendall(b"from the socket")
    assert read(65536) == b"from the socket"
    client.close()
    assert read(65536) == b""


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_frame_sent_with_the_handshake_is_not_lost(server_db):
    with gunicorn(env={"DJANGO_DB_PATH": server_db["path"]}) as server:
        key = base64.b64encode(os.urandom(16)).decode()
        handshake = (
            f"GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        with stdlib_socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(handshake + masked_text(b"early"))
            received = b""
            while b"early" not in received:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        assert received.endswith(b"\x81\x05early")
