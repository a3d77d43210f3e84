"""Our gunicorn worker with nothing of Django in the request: the worker's own part of a handshake.

Served by ``gunicorn -k django_websocket.workers.GeventWebSocketWorker bench.upgrade_only:app``
(``python bench/run.py --only worker-only``). Every handshake is accepted through the worker's
upgrade, as our handler does it after Django said yes: the 101 the worker writes, the socket handed
over, the connection detached to a greenlet of its own. What runs then is a bare echo of
unfragmented frames, until the client's close frame, which is answered, then the TCP close. No
validation, no middleware, no ``WebSocket`` object: ours minus this is what Django's request and
our handler cost per handshake. A benchmark fixture, not a server to expose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import django

# The worker's start-up reads Django's settings and app registry (outbox relay, metrics), as it
# does for test_project's application; this application itself uses none of Django.
django.setup()

from django_websocket.handshake import accept_key  # noqa: E402
from django_websocket.server import DETACH_ENVIRON_KEY, UPGRADE_ENVIRON_KEY  # noqa: E402

CLOSE, PING, PONG = 0x8, 0x9, 0xA


def app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    upgrade = environ.get(UPGRADE_ENVIRON_KEY)
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY")
    if upgrade is None or key is None:
        start_response("426 Upgrade Required", [("Content-Type", "text/plain"), ("Upgrade", "websocket")])
        return [b"WebSocket echo only.\n"]
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    sock, read = upgrade(headers)
    environ[DETACH_ENVIRON_KEY](echo, sock, read)
    return []


def echo(sock: Any, read: Callable[[int], bytes]) -> None:
    """Echo data frames, answer pings; answer the close frame and close the connection."""
    try:
        for opcode, payload in frames(read):
            if opcode == CLOSE:
                sock.sendall(frame(CLOSE, payload[:2]))
                return
            if opcode == PING:
                sock.sendall(frame(PONG, payload))
            elif opcode != PONG:
                sock.sendall(frame(opcode, payload))
    except OSError:
        pass
    finally:
        sock.close()


def frames(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """``(opcode, unmasked payload)`` of each client frame, until the end of the stream."""
    data = b""
    while True:
        parsed = parse(data)
        if parsed is None:
            chunk = read(65536)
            if not chunk:
                return
            data += chunk
            continue
        opcode, payload, used = parsed
        data = data[used:]
        yield opcode, payload


def parse(data: bytes) -> tuple[int, bytes, int] | None:
    """The first masked frame of *data* as ``(opcode, payload, bytes used)``; ``None`` if incomplete."""
    if len(data) < 2:
        return None
    length, start = data[1] & 0x7F, 2
    if length >= 126:
        start = 4 if length == 126 else 10
        if len(data) < start:
            return None
        length = int.from_bytes(data[2:start], "big")
    end = start + 4 + length
    if len(data) < end:
        return None
    mask = data[start : start + 4]
    masked = data[start + 4 : end]
    key = (mask * (length // 4 + 1))[:length]
    payload = (int.from_bytes(masked, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return data[0] & 0x0F, payload, end


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked, final server frame."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")
    return header + payload
