"""The generator's ceiling: a trivial epoll echo server that does almost no WebSocket work.

It answers the upgrade, then for every run of identical 38-byte client frames it receives it sends
back the same number of 34-byte echoes in one ``send`` — no unmasking, no UTF-8 check, no
greenlets. Whatever rate the load generator reaches against it is a lower bound on what the
generator can push, so a real server measured well below that rate is not limited by the generator.
Not a WebSocket server: it understands only what ``loadgen.py`` sends.

Run: ``python bench/ceiling_echo.py`` (binds 127.0.0.1:0 and prints gunicorn's "Listening at" line,
so ``run.py`` starts it like the gunicorn servers). Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import signal
import socket
import struct
import sys

if __package__ in (None, ""):
    sys.path.insert(0, __file__.rsplit("/", 2)[0])
from bench.loadgen import CLIENT_FRAME, GUID, SERVER_FRAME, TX  # noqa: E402

SERVER_CLOSE = bytes((0x88, 2)) + struct.pack("!H", 1000)
MAX_HEAD = 16384  # a request head longer than this is not from loadgen.py


def accept_key(head: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + GUID).digest())
    raise ValueError("no Sec-WebSocket-Key")


def serve(listener: socket.socket, stop: list[bool]) -> None:
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, list] = {}  # fd -> [sock, upgraded, buffer]

    def drop(fd: int) -> None:
        sock = conns.pop(fd)[0]
        ep.unregister(fd)
        sock.close()

    try:
        while not stop[0]:
            for fd, _ in ep.poll(0.2):
                if fd == listener.fileno():
                    for _ in range(64):  # accept a burst, bounded
                        try:
                            sock, _ = listener.accept()
                        except BlockingIOError:
                            break
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conns[sock.fileno()] = [sock, False, b""]
                        ep.register(sock.fileno(), select.EPOLLIN)
                    continue
                conn = conns[fd]
                try:
                    data = conn[0].recv(65536)
                except OSError:
                    data = b""
                if not data:
                    drop(fd)
                    continue
                buf = conn[2] + data
                if not conn[1]:
                    if b"\r\n\r\n" not in buf:
                        conn[2] = buf
                        if len(buf) > MAX_HEAD:
                            drop(fd)
                        continue
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    conn[0].sendall(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Accept: " + accept_key(head) + b"\r\n\r\n"
                    )
                    conn[1] = True
                k = len(buf) // TX
                if k and buf[: k * TX] == CLIENT_FRAME * k:
                    conn[0].sendall(SERVER_FRAME * k)
                    buf = buf[k * TX :]
                if buf[:1] == b"\x88":
                    conn[0].sendall(SERVER_CLOSE)
                    drop(fd)
                    continue
                if len(buf) >= TX:
                    drop(fd)  # something loadgen.py never sends
                    continue
                conn[2] = buf
    finally:
        for fd in list(conns):
            drop(fd)
        ep.close()


def main() -> None:
    stop = [False]

    def on_signal(signum, frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    # The same line gunicorn prints, so one launcher starts every server.
    print(f"Listening at: http://127.0.0.1:{port} (ceiling)", flush=True)
    print(f"Booting worker with pid: {os.getpid()}", flush=True)
    try:
        serve(listener, stop)
    finally:
        listener.close()


if __name__ == "__main__":
    main()
