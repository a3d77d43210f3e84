"""The client of ``bench/orm.py``: N sockets in closed loop against a "insert a row, reply its id" endpoint.

Every socket sends one 32-byte text message (``loadgen.CLIENT_FRAME``), waits for the reply — the
new row's id, as text — and sends the next one, for *warmup* + *duration* seconds. Replies are
parsed (unlike ``loadgen.py``'s echo, their length varies): each must be one text frame holding a
decimal id, and every id must be new. Server pings are answered; any other frame, or a close, is
an error. At the end nothing more is sent, the replies still due are awaited (bounded), and the
sockets are closed with a close handshake.

Prints one JSON object: ``writes`` and ``rate`` (replies per second in the measured seconds),
``p50_ms``/``p99_ms``/``max_ms`` (send → reply), per-socket counts in the measured seconds
(``per_socket_min``/``_median``/``_max``, ``sockets_writing``: how many got at least one reply),
``replies_total`` and ``distinct_ids`` over the whole run (warm-up and drain included: what the
database must have gained), CPU figures as ``loadgen.py`` reports them, and ``errors`` if any.

Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import loadgen  # noqa: E402
from bench.loadgen import IN, TICK, CpuClock, ScenarioError  # noqa: E402


class Conn:
    __slots__ = ("sock", "buf", "sent_at", "waiting", "measured", "total")

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock, self.buf = sock, bytearray(rest)
        self.sent_at, self.waiting = 0.0, False
        self.measured = self.total = 0


def parse(conn: Conn) -> list[tuple[int, bytes]]:
    """Every whole server frame buffered on *conn* as (opcode, payload), consumed from the buffer."""
    out, buf = [], conn.buf
    while len(buf) >= 2:
        if buf[1] & 0x80:
            raise ScenarioError("masked server frame")
        n, i = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, i = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, i = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < i + n:
            break
        if not buf[0] & 0x80:
            raise ScenarioError("fragmented reply")
        out.append((buf[0] & 0x0F, bytes(buf[i : i + n])))
        del buf[: i + n]
    return out


def run(port: int, path: str, sockets: int, warmup: float, duration: float, server_pid, server_cpu) -> dict:
    clock = CpuClock(server_pid, server_cpu)
    ep = select.epoll()
    conns: dict[int, Conn] = {}
    ids: set[int] = set()
    duplicates = 0
    lats: list[float] = []
    marks: dict[str, tuple] = {}
    perf = time.perf_counter
    try:
        for _ in range(sockets):
            sock, rest = loadgen.connect_and_upgrade(port, path, [], timeout=30.0, echo=False)
            conns[sock.fileno()] = Conn(sock, rest)
        t0 = perf()
        warm_end, end = t0 + warmup, t0 + warmup + duration
        for fd, c in conns.items():
            ep.register(fd, IN)
            c.sent_at, c.waiting = perf(), True
            c.sock.send(loadgen.CLIENT_FRAME)
        measuring = False
        sending = True
        drain_deadline = None
        while True:
            events = ep.poll(TICK)
            now = perf()
            if not measuring and now >= warm_end and sending:
                measuring = True
                marks["start"] = clock.read()
            if sending and now >= end:
                marks["end"] = clock.read()
                sending, measuring = False, False
                drain_deadline = now + 30.0
            if not sending and (not any(c.waiting for c in conns.values()) or now >= drain_deadline):
                break
            for fd, _ev in events:
                c = conns[fd]
                chunk = c.sock.recv(65536)
                if not chunk:
                    raise ScenarioError(f"server closed a socket mid-run after {c.total} writes")
                c.buf += chunk
                for opcode, payload in parse(c):
                    if opcode == 0x9:  # ping: RFC 6455 §5.5.2, answer with the same payload
                        c.sock.send(loadgen.client_frame(payload, opcode=0xA))
                        continue
                    if opcode == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        raise ScenarioError(f"server closed a socket ({code}, {payload[2:]!r})")
                    if opcode != 0x1 or not payload.isdigit() or not c.waiting:
                        raise ScenarioError(f"unexpected frame {opcode:#x} {payload[:40]!r}")
                    t = perf()
                    pk = int(payload)
                    if pk in ids:
                        duplicates += 1
                    ids.add(pk)
                    c.total += 1
                    c.waiting = False
                    if measuring:
                        lats.append(t - c.sent_at)
                        c.measured += 1
                    if sending:
                        c.sent_at, c.waiting = t, True
                        c.sock.send(loadgen.CLIENT_FRAME)
        unanswered = sum(c.waiting for c in conns.values())
    finally:
        loadgen._close_all([c.sock for c in conns.values()])
        ep.close()

    per = sorted(c.measured for c in conns.values())
    result = {"writes": len(lats), **CpuClock.usage(marks["start"], marks["end"])}
    result["rate"] = len(lats) / result["seconds"]
    result.update(loadgen.weighted_percentiles([(x, 1) for x in lats]))
    if "server_cpu_seconds" in result and lats:
        result["server_us_per_write"] = result["server_cpu_seconds"] / len(lats) * 1e6
    result.update(
        per_socket_min=per[0],
        per_socket_median=statistics.median(per),
        per_socket_max=per[-1],
        sockets_writing=sum(1 for n in per if n),
        replies_total=sum(c.total for c in conns.values()),
        distinct_ids=len(ids),
    )
    errors = {}
    if duplicates:
        errors[f"{duplicates} ids were sent twice"] = 1
    if unanswered:
        errors[f"{unanswered} sockets still waited for their reply 30 s after the run"] = 1
    if errors:
        result["errors"] = errors
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--server-cpu", type=int, default=0, help="-1: don't report other load on it")
    args = parser.parse_args(argv)
    server_cpu = args.server_cpu if args.server_cpu >= 0 else None
    try:
        result = run(
            args.port, args.path, args.sockets, args.warmup, args.duration, args.server_pid, server_cpu
        )
    except (ScenarioError, OSError) as exc:
        result = {"errors": {f"{type(exc).__name__}: {exc}": 1}}
    print(json.dumps(result))
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
