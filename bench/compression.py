"""What permessage-deflate costs and saves on echo: ``python bench/compression.py`` (``--quick``).

Our server only (``gunicorn -k django_websocket.workers.GeventWebSocketWorker
test_project.wsgi:websocket``, one worker pinned to CPU 0, DJANGO_DEBUG=0, a throwaway database;
the client pinned to CPU 1, as in ``bench/run.py``). 100 connections each keep 8 messages in flight
to ``/echo/``; every message is the same 1 KiB JSON-like text. Two modes, in the same run, in
alternating order from round to round:

* ``plain``   — no extension offered;
* ``deflate`` — ``Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover;
  server_no_context_takeover``. With both no_context_takeover parameters every message is
  compressed on its own, so the client sends one pre-built frame (raw deflate, wbits -15, the
  trailing ``00 00 ff ff`` stripped, RSV1 set, masked) and every reply has the same size: the
  first reply, per connection, is read, checked (RSV1 set, inflates back to the payload) and
  sized; after that, bytes are counted. The 101 must name permessage-deflate.

The server's compression threshold is 128 bytes, so 1 KiB replies are compressed.

Reported per mode: msgs/s, the worker's CPU µs per message (``/proc/PID/stat``), bytes per reply
and per request on the wire; and deflate/plain. Exit status: 0 if every run was clean, 1 if any
errored (wrong echo, missing extension, a dropped connection…), 2 if the server did not start or
failed the probe. Slowness is never an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shlex
import socket
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import loadgen  # noqa: E402
from bench.run import (  # noqa: E402
    GUNICORN,
    LOADGEN_CPU,
    OUR_WORKER,
    PY,
    SERVER_CPU,
    Stack,
    finish,
    fmt,
    note_server_exit,
    pinned,
    run_client_process,
    serve,
    versions,
    wait_for_quiet,
)

SCRIPT = str(Path(__file__).resolve())
MODES = ("plain", "deflate")
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover"
SIZE = 1024


def json_payload(size: int = SIZE) -> bytes:
    """A deterministic JSON document of exactly *size* bytes, shaped like an app's update message."""
    items = [
        {"id": 1000 + i, "name": f"item-{i}", "price": round(9.99 + i * 1.25, 2), "in_stock": i % 3 != 0}
        for i in range(12)
    ]
    doc = {"type": "update", "channel": "prices", "seq": 123456, "items": items, "pad": ""}
    text = json.dumps(doc, separators=(",", ":"))
    while len(text) > size - 20:
        doc["items"].pop()
        text = json.dumps(doc, separators=(",", ":"))
    doc["pad"] = "x" * (size - len(text))
    out = json.dumps(doc, separators=(",", ":")).encode()
    assert len(out) == size, len(out)
    json.loads(out)
    return out


def masked_frame(payload: bytes, rsv1: bool = False, opcode: int = 0x1) -> bytes:
    """One final, masked client frame of any length (RSV1 set if *rsv1*)."""
    n = len(payload)
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
    key = (loadgen.MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + loadgen.MASK + masked


def deflate(payload: bytes) -> bytes:
    """RFC 7692 §7.2.1: raw deflate, sync-flushed, with the trailing 00 00 ff ff removed."""
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    return d.decompress(data + b"\x00\x00\xff\xff") + d.flush()


def frame_length(buf: bytes) -> int | None:
    """Total length of the server frame at the start of *buf*, or None if its header is incomplete."""
    if len(buf) < 2:
        return None
    n = buf[1] & 0x7F
    if n == 126:
        return None if len(buf) < 4 else 4 + struct.unpack("!H", buf[2:4])[0]
    if n == 127:
        return None if len(buf) < 10 else 10 + struct.unpack("!Q", buf[2:10])[0]
    return 2 + n


def payload_of(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    return frame[{126: 4, 127: 10}.get(n, 2) :]


# ---------------------------------------------------------------------------------------------------
# the client (its own process, pinned to CPU 1)


def open_connection(
    port: int, path: str, mode: str, frame: bytes, payload: bytes
) -> tuple[socket.socket, int]:
    """Upgrade (offering the extension in deflate mode), check one echo; return the socket and reply size."""
    deadline = time.monotonic() + 5
    sock = socket.create_connection((loadgen.HOST, port), timeout=5)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(loadgen.upgrade_request(port, path, [OFFER] if mode == "deflate" else []))
        buf = loadgen.recv_until(sock, lambda b: b"\r\n\r\n" in b, deadline)
        head, _, rest = buf.partition(b"\r\n\r\n")
        loadgen.check_101(head)
        agreed = [
            value.strip().lower()
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
            if name.strip().lower() == b"sec-websocket-extensions"
        ]
        if mode == "deflate" and not any(v.startswith(b"permessage-deflate") for v in agreed):
            raise loadgen.ScenarioError(f"101 without permessage-deflate (extensions: {agreed!r})")
        if mode == "plain" and agreed:
            raise loadgen.ScenarioError(f"extension agreed though none was offered: {agreed!r}")
        sock.sendall(frame)
        buf = loadgen.recv_until(
            sock, lambda b: (n := frame_length(b)) is not None and len(b) >= n, deadline, rest
        )
        size = frame_length(buf)
        reply, extra = buf[:size], buf[size:]
        if extra:
            raise loadgen.ScenarioError(f"{len(extra)} unexpected bytes after the first echo")
        if reply[0] & 0x0F != 0x1 or not reply[0] & 0x80 or reply[1] & 0x80:
            raise loadgen.ScenarioError(f"first echo is not one unmasked final text frame: {reply[:4]!r}")
        compressed = bool(reply[0] & 0x40)
        if compressed != (mode == "deflate"):
            raise loadgen.ScenarioError(f"first echo RSV1={compressed} in {mode} mode")
        data = payload_of(reply)
        if compressed:
            data = inflate(data)
        if data != payload:
            raise loadgen.ScenarioError(f"first echo is not the message ({len(data)} bytes)")
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, size


def run_client(port, path, mode, connections, window, warmup, duration, server_pid, server_cpu) -> dict:
    payload = json_payload()
    frame = masked_frame(deflate(payload), rsv1=True) if mode == "deflate" else masked_frame(payload)
    tx = len(frame)
    clock = loadgen.CpuClock(server_pid, server_cpu)
    ep = select.epoll()
    socks: list[socket.socket] = []
    try:
        sizes = set()
        for _ in range(connections):
            sock, size = open_connection(port, path, mode, frame, payload)
            socks.append(sock)
            sizes.add(size)
        if len(sizes) != 1:
            raise loadgen.ScenarioError(f"first replies differ in size across connections: {sorted(sizes)}")
        rx = sizes.pop()
        result = _loop(ep, socks, frame, tx, rx, window, warmup, duration, clock)
        result.update(reply_bytes=rx, request_bytes=tx, payload_bytes=len(payload))
        return result
    finally:
        loadgen._close_all(socks)
        ep.close()


def _loop(ep, socks, frame, tx, rx, window, warmup, duration, clock) -> dict:
    """``loadgen._echo_loop`` for frames of any fixed sizes, without the latency bookkeeping."""
    block = frame * window
    buf = bytearray(1 << 18)
    conns = {}  # fd -> [sock, frames sent, bytes received, replies counted, unsent bytes]
    for s in socks:
        state = [s, window, 0, 0, b""]
        conns[s.fileno()] = state
        loadgen._send(ep, state, block)
        ep.register(s.fileno(), loadgen.IN | (select.EPOLLOUT if state[4] else 0))
    perf = time.perf_counter
    t0 = perf()
    warm_end, end = t0 + warmup, t0 + warmup + duration
    completed, at_start, marks = 0, None, {}
    while True:
        events = ep.poll(loadgen.TICK)
        now = perf()
        if at_start is None and now >= warm_end:
            at_start, marks["start"] = completed, clock.read()
        if now >= end:
            marks["end"] = clock.read()
            break
        for fd, ev in events:
            state = conns[fd]
            if ev & select.EPOLLOUT and state[4]:
                loadgen._flush(ep, fd, state)
            if not ev & loadgen.IN:
                continue
            n = state[0].recv_into(buf)
            if not n:
                raise loadgen.ScenarioError("server closed an echo connection mid-run")
            state[2] += n
            done = state[2] // rx - state[3]
            if not done:
                continue
            state[3] += done
            state[1] += done
            completed += done
            loadgen._send(ep, state, block[: done * tx], fd)
    msgs = completed - at_start
    result = {"messages": msgs, **loadgen.CpuClock.usage(marks["start"], marks["end"])}
    result["rate"] = msgs / result["seconds"]
    if "server_cpu_seconds" in result and msgs:
        result["server_us_per_msg"] = result["server_cpu_seconds"] / msgs * 1e6
    _drain_and_check(ep, conns, buf, rx)
    return result


def _drain_and_check(ep, conns, buf, rx, timeout=10.0) -> None:
    """Wait for every reply still in flight, then require exactly *rx* bytes per frame sent."""
    deadline = time.monotonic() + timeout
    waiting = {fd for fd, st in conns.items() if st[2] < st[1] * rx or st[4]}
    while waiting and time.monotonic() < deadline:
        for fd, ev in ep.poll(loadgen.TICK):
            state = conns[fd]
            if ev & select.EPOLLOUT and state[4]:
                loadgen._flush(ep, fd, state)
            if ev & loadgen.IN:
                n = state[0].recv_into(buf)
                if not n:
                    raise loadgen.ScenarioError("server closed an echo connection while draining")
                state[2] += n
            if state[2] >= state[1] * rx and not state[4]:
                waiting.discard(fd)
    if waiting:
        raise loadgen.ScenarioError(f"{len(waiting)} connections still had replies missing after {timeout} s")
    bad = [st for st in conns.values() if st[2] != st[1] * rx]
    if bad:
        raise loadgen.ScenarioError(
            f"byte count mismatch on {len(bad)} connections (replies of another size?)"
        )


# ---------------------------------------------------------------------------------------------------
# orchestration and report

FIGURES = [
    ("msgs/s", "rate"),
    ("server µs/msg", "server_us_per_msg"),
    ("bytes per reply on the wire", "reply_bytes"),
    ("bytes per request on the wire", "request_bytes"),
    ("server CPU", "server_cpu"),
    ("client CPU", "loadgen_cpu"),
    ("others on CPU 0", "server_cpu_other_load"),
]
PERCENT = ("server_cpu", "loadgen_cpu", "server_cpu_other_load")


def run_one(server, mode: str, args) -> dict:
    argv = [
        PY,
        SCRIPT,
        "client",
        "--mode",
        mode,
        "--port",
        str(server.port),
        "--connections",
        str(args.connections),
        "--window",
        str(args.window),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--server-pid",
        str(server.worker_pid),
        "--server-cpu",
        str(SERVER_CPU if pinned(SERVER_CPU, []) else -1),
    ]
    result = run_client_process(pinned(LOADGEN_CPU, argv), args.warmup + args.duration + 60)
    return note_server_exit(result, server)


def table(results: dict[str, list[dict]]) -> str:
    rows = [("figure", "plain", "deflate", "deflate/plain")]
    for label, key in FIGURES:
        per = {m: [r.get(key) for r in results[m]] for m in MODES}
        med = {m: statistics.median(v) if v and None not in v else None for m, v in per.items()}
        if key in PERCENT:
            cells = [f"{v:.0%}" if v is not None else "—" for v in med.values()]
            ratio = ""
        else:
            cells = [fmt(v) for v in med.values()]
            pairs = [d / p for p, d in zip(per["plain"], per["deflate"], strict=False) if p and d is not None]
            ratio = f"{statistics.median(pairs):.2f}" if pairs else "—"
        rows.append((label, *cells, ratio))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    client = sub.add_parser("client")  # the client process this script starts
    client.add_argument("--mode", choices=MODES, required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--path", default="/echo/")
    client.add_argument("--connections", type=int, default=100)
    client.add_argument("--window", type=int, default=8)
    client.add_argument("--warmup", type=float, default=1.0)
    client.add_argument("--duration", type=float, default=5.0)
    client.add_argument("--server-pid", type=int)
    client.add_argument("--server-cpu", type=int, default=-1)
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s warm-up + 2 s per mode")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 5; 2 quick)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (default 1; 0.5 quick)")
    parser.add_argument("--rounds", type=int, help="runs per mode (default 3; 1 quick)")
    parser.add_argument("--connections", type=int, default=100, help="sockets (default 100)")
    parser.add_argument("--window", type=int, default=8, help="messages in flight per socket (default 8)")
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args(argv)

    if args.role == "client":
        try:
            result = run_client(
                args.port,
                args.path,
                args.mode,
                args.connections,
                args.window,
                args.warmup,
                args.duration,
                args.server_pid,
                args.server_cpu if args.server_cpu >= 0 else None,
            )
        except (loadgen.ScenarioError, OSError, zlib.error) as exc:
            result = {"errors": {f"{type(exc).__name__}: {exc}": 1}}
        print(json.dumps(result))
        return 1 if result.get("errors") else 0

    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 30 and 1 <= args.rounds <= 10):
        parser.error("need 0 < duration <= 120, 0 <= warmup <= 30, 1 <= rounds <= 10")
    if not (1 <= args.connections <= 900 and 1 <= args.window <= 1000):
        parser.error("need 1 <= connections <= 900, 1 <= window <= 1000")
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    print(f"$ {shlex.join([PY, *sys.argv])}")
    print(versions())
    print(
        f"{args.rounds} round(s) per mode of {args.warmup:g} s warm-up + {args.duration:g} s; "
        f"{args.connections} connections × window {args.window}; {SIZE}-byte JSON text messages\n"
    )
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    errors = []
    with (
        tempfile.TemporaryDirectory(prefix="django-websocket-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_MESSAGE_RATE_LIMIT": "none",  # the echo loads flood on purpose
        }
        st = Stack("ours", [*GUNICORN, "-k", OUR_WORKER, "test_project.wsgi:websocket"], env)
        try:
            server = stack.enter_context(serve(st))
            command = shlex.join(pinned(SERVER_CPU, st.argv))
            print(f"ours port {server.port}, worker pid {server.worker_pid}: {command}")
            loadgen.probe(server.port, "/echo/")
            loadgen.probe(server.port, "/echo/", [OFFER])  # 32 bytes: under the threshold, sent plain
        except (RuntimeError, loadgen.ScenarioError, OSError) as exc:
            print(f"the server did not start or failed the probe: {exc}", file=sys.stderr)
            return 2
        print()
        for rnd in range(args.rounds):
            for mode in MODES[:: -1 if rnd % 2 else 1]:
                before = wait_for_quiet(0.15, 5.0 if args.quick else 20.0)
                result = run_one(server, mode, args)
                result["cpu_load_before"] = before
                results[mode].append(result)
                for err, count in result.get("errors", {}).items():
                    errors.append(f"round {rnd + 1}, {mode}: {err} (×{count})")
                print(
                    f"  round {rnd + 1}/{args.rounds}  {mode:8} {fmt(result.get('rate'))}/s, "
                    f"{fmt(result.get('server_us_per_msg'))} µs/msg, {result.get('reply_bytes')} B/reply "
                    f"(others on CPU {SERVER_CPU}: {result.get('server_cpu_other_load', 0):.0%}; "
                    f"busiest CPU before: {before:.0%})",
                    file=sys.stderr,
                    flush=True,
                )
    print()
    print(table(results))
    print("\nplain/deflate = medians over rounds; deflate/plain = median of per-round ratios. bytes on")
    print("the wire = the whole frame (header, and for requests the mask). server µs/msg = the worker's")
    print("CPU time (utime + stime) ÷ messages echoed.")
    return finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
