"""Memory per idle socket: a regression guard, not the benchmark (``bench/memory.py`` is that).

One real gunicorn worker holds 2,000 idle websockets opened through the default middleware
(sessions, auth, CSRF, messages) with keepalive pings on; the growth of its resident memory,
divided by the sockets, must stay under a bound about 1.5 times what it measures today
(18.0 KB on Python 3.13 / Django 6.1, with an access log; 21.2 KB while the access log kept
each socket's pywsgi handler, 32.5 KB before the view got a greenlet of its own, 50.5 KB
before the per-socket read buffer and keepalive greenlet went),
so a change that doubles it fails. Every socket must still echo after the measurement.
"""

from __future__ import annotations

import base64
import os
import re
import selectors
import socket
import time
from pathlib import Path

from tests.servers import Server, gunicorn

SOCKETS = 2_000
#: Bytes of resident memory per idle socket that fail the test.
BOUND = 27 * 1024
IN_FLIGHT = 50


def resident_bytes(pid: int) -> int:
    """The process's resident set size (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def handshake_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
    ).encode()


def open_sockets(port: int, count: int) -> list[socket.socket]:
    """*count* websockets past their 101, *IN_FLIGHT* handshakes at a time."""
    opened: list[socket.socket] = []
    pending: dict[socket.socket, bytes] = {}
    selector = selectors.DefaultSelector()
    started = 0
    deadline = time.monotonic() + 120
    while len(opened) < count:
        assert time.monotonic() < deadline, f"only {len(opened)} of {count} handshakes done"
        while started < count and len(pending) < IN_FLIGHT:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(handshake_request(port))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
            started += 1
        for key, _ in selector.select(timeout=5):
            sock = key.fileobj
            data = sock.recv(4096)
            assert data, "connection closed during the handshake"
            pending[sock] += data
            if b"\r\n\r\n" in pending[sock]:
                assert pending.pop(sock).startswith(b"HTTP/1.1 101"), "handshake refused"
                selector.unregister(sock)
                opened.append(sock)
    selector.close()
    return opened


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def assert_echoes(sock: socket.socket, payload: bytes) -> None:
    """Send a text frame on *sock* and read its echo, skipping the server's pings."""
    sock.setblocking(True)
    sock.settimeout(10)
    sock.sendall(masked_text(payload))
    expected = bytes([0x81, len(payload)]) + payload
    received = b""
    while True:
        received += sock.recv(4096)
        while received[:1] == b"\x89" and len(received) >= 2 + received[1]:
            received = received[2 + received[1] :]  # a keepalive ping (unanswered: harmless here)
        if len(received) >= len(expected):
            assert received[: len(expected)] == expected
            return


def worker_pid(server: Server) -> int:
    return int(re.findall(r"Booting worker with pid: (\d+)", server.log)[-1])


def test_idle_socket_memory_stays_bounded() -> None:
    args = ["--worker-connections", str(SOCKETS + 500)]
    with gunicorn(env={"WEBSOCKET_MAX_CONNECTIONS": str(SOCKETS + 100)}, extra_args=args) as server:
        pid = worker_pid(server)
        for sock in open_sockets(server.port, 200):  # imports, caches and pools: before the measure
            sock.close()
        time.sleep(1.0)  # let the worker finish closing them (not synchronisation of the result)
        before = resident_bytes(pid)
        sockets = open_sockets(server.port, SOCKETS)
        try:
            time.sleep(1.0)
            per_socket = (resident_bytes(pid) - before) / SOCKETS
            print(f"{per_socket / 1024:.1f} KB per idle socket, {SOCKETS} sockets (bound {BOUND // 1024} KB)")
            for index, sock in enumerate(sockets):
                assert_echoes(sock, b"still here %d" % index)
            assert per_socket < BOUND
        finally:
            for sock in sockets:
                sock.close()
