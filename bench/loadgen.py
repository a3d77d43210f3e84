"""A WebSocket load generator fast enough not to be the bottleneck: one thread, raw sockets, epoll.

It never parses the frames it gets back during a run. Every message is the same 32-byte text
payload, so the echo of one is exactly one 34-byte unmasked server frame (RFC 6455 §5.2: 2 header
bytes, no mask); the generator counts echoed *bytes* and divides. The first echo on each connection
and the byte totals at the end are checked exactly, so a server that sends anything else is caught.

Client frames must be masked (RFC 6455 §5.3) but the mask need not be unpredictable for a
benchmark, so every frame is built once with a fixed mask and sent as a slice of a prebuilt block.

Scenarios (each prints one JSON object on stdout with ``--json``):

``echo``       N connections, each keeping W messages in flight (W=1 is ping-pong): msgs/s, RTT.
``handshake``  C concurrent loops of connect → upgrade → 101 → close frame → server close → EOF.

Traffic goes to 127.0.0.1 only. Every loop is bounded by a deadline; every socket is closed on exit.
"""

from __future__ import annotations

import argparse
import base64
import collections
import errno
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time

HOST = "127.0.0.1"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 6455 §1.3's sample nonce: a fixed key means the expected accept value is computed once.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1(KEY + GUID).digest())
MASK = bytes((0x37, 0xFA, 0x21, 0x3D))
PAYLOAD = b"0123456789abcdefghijklmnopqrstuv"
assert len(PAYLOAD) == 32


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked client frame (payloads under 126 bytes only)."""
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + MASK + masked


CLIENT_FRAME = client_frame(PAYLOAD)  # 38 bytes on the wire
SERVER_FRAME = bytes((0x81, len(PAYLOAD))) + PAYLOAD  # 34 bytes: what one echo looks like
CLIENT_CLOSE = client_frame(struct.pack("!H", 1000), opcode=0x8)
TX = len(CLIENT_FRAME)
RX = len(SERVER_FRAME)

IN = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
OUT = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
TICK = 0.05  # epoll timeout: how often deadlines are checked when nothing happens
MAX_ERRORS = 200  # stop a scenario early rather than spin on a dead server


class ScenarioError(Exception):
    """The server did something other than a correct echo or handshake."""


def upgrade_request(port: int, path: str, headers: list[str]) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        "Sec-WebSocket-Version: 13",
        f"Origin: http://{HOST}:{port}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_101(head: bytes) -> None:
    """Raise ``ScenarioError`` unless *head* (up to the blank line) is a valid 101 for ``KEY``."""
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 101"):
        raise ScenarioError(f"expected 101, got {status.decode('latin-1')!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        # Header names are case-insensitive (RFC 9110 §5.1); the accept value is not.
        if name.strip().lower() == b"sec-websocket-accept" and value.strip() == ACCEPT:
            return
    raise ScenarioError("101 without the right Sec-WebSocket-Accept")


def recv_until(sock: socket.socket, done, deadline: float, buf: bytes = b"") -> bytes:
    """Blocking reads until ``done(buf)`` or *deadline*; raise ``ScenarioError`` on EOF or timeout."""
    while not done(buf):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ScenarioError(f"timed out waiting for the server (have {buf[:80]!r})")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise ScenarioError(f"server closed the connection (have {buf[:80]!r})")
        buf += chunk
    return buf


def connect_and_upgrade(
    port: int, path: str, headers: list[str], timeout: float = 5.0, echo: bool = True
) -> tuple[socket.socket, bytes]:
    """Open one upgraded connection, checking one echo exactly if *echo*.

    Returns the socket, left non-blocking, and any bytes that arrived after the 101's head
    (always empty after the echo check).
    """
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request(port, path, headers))
        buf = recv_until(sock, lambda b: b"\r\n\r\n" in b, deadline)
        head, _, rest = buf.partition(b"\r\n\r\n")
        check_101(head)
        if not echo:
            sock.setblocking(False)
            return sock, rest
        sock.sendall(CLIENT_FRAME)
        echo = recv_until(sock, lambda b: len(b) >= RX, deadline, rest)
        if echo != SERVER_FRAME:
            raise ScenarioError(f"first echo was {echo!r}, expected {SERVER_FRAME!r}")
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, b""


def probe(port: int, path: str, headers: list[str] = (), timeout: float = 5.0, echo: bool = True) -> None:
    """One upgrade (and one checked echo if *echo*), then a clean close.

    Raises ``ScenarioError`` if the server misbehaves, ``OSError`` if the connection fails.

    Without *echo*, whatever the server sends before its close frame is accepted.
    """
    sock, rest = connect_and_upgrade(port, path, list(headers), timeout, echo)
    try:
        sock.setblocking(True)
        sock.sendall(CLIENT_CLOSE)
        recv_until(sock, ends_with_close, time.monotonic() + timeout, rest)
    finally:
        sock.close()


class CpuClock:
    """Wall time, this process's CPU time, and from /proc: the server's CPU time and the server CPU's load.

    The server CPU's busy time minus the server's own is what *other* processes took from it
    during a run: on a shared machine, a run with much of that is worth repeating.
    """

    def __init__(self, server_pid: int | None, server_cpu: int | None = 0) -> None:
        self.server_pid = server_pid
        self.cpu_line = f"cpu{server_cpu} ".encode() if server_cpu is not None else None
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float, float | None, float | None]:
        return time.perf_counter(), time.process_time(), self._server(), self._cpu_busy()

    def _server(self) -> float | None:
        if not self.server_pid:
            return None
        try:
            with open(f"/proc/{self.server_pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            # proc(5) fields 14 and 15, utime and stime: indexes 11 and 12 after the ")".
            return (int(fields[11]) + int(fields[12])) / self.tick
        except (OSError, IndexError, ValueError):
            return None

    def _cpu_busy(self) -> float | None:
        if not self.cpu_line:
            return None
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(self.cpu_line):
                        # user nice system idle iowait irq softirq steal…: busy is all but idle and iowait;
                        # steal counts as busy, since the server could not run then either.
                        values = [int(v) for v in line.split()[1:9]]
                        return (sum(values) - values[3] - values[4]) / self.tick
        except (OSError, ValueError):
            pass
        return None

    @staticmethod
    def usage(start, end) -> dict:
        wall = end[0] - start[0]
        out = {"seconds": wall, "loadgen_cpu": (end[1] - start[1]) / wall}
        if start[2] is not None and end[2] is not None:
            out["server_cpu"] = (end[2] - start[2]) / wall
            out["server_cpu_seconds"] = end[2] - start[2]
            if start[3] is not None and end[3] is not None:
                out["server_cpu_other_load"] = max(0.0, (end[3] - start[3]) / wall - out["server_cpu"])
        return out


def weighted_percentiles(samples: list[tuple[float, int]], points=(50, 99)) -> dict:
    """Percentiles of (value, count) pairs, in milliseconds."""
    total = sum(n for _, n in samples)
    out = {}
    if not total:
        return out
    ordered = sorted(samples)
    for p in points:
        rank, seen = total * p / 100, 0
        for value, n in ordered:
            seen += n
            if seen >= rank:
                out[f"p{p}_ms"] = value * 1000
                break
    out["max_ms"] = ordered[-1][0] * 1000
    return out


# ---------------------------------------------------------------------------------------------------
# echo: N connections × W messages in flight


def run_echo(
    port, path, connections, window, warmup, duration, headers=(), server_pid=None, server_cpu=0
) -> dict:
    """Echo *window* messages at a time on each of *connections* sockets for *warmup* + *duration* s."""
    clock = CpuClock(server_pid, server_cpu)
    ep = select.epoll()
    socks: list[socket.socket] = []
    try:
        for _ in range(connections):
            socks.append(connect_and_upgrade(port, path, list(headers))[0])
        return _echo_loop(ep, socks, window, warmup, duration, clock)
    finally:
        _close_all(socks)
        ep.close()


def _echo_loop(ep, socks, window, warmup, duration, clock) -> dict:
    block = CLIENT_FRAME * window
    buf = bytearray(1 << 18)
    perf = time.perf_counter
    # Per connection: [sock, frames sent, bytes received, echoes counted, unsent bytes, send times]
    conns = {}
    t0 = perf()
    for s in socks:
        state = [s, window, 0, 0, b"", collections.deque([(t0, window)])]
        conns[s.fileno()] = state
        _send(ep, state, block)
        ep.register(s.fileno(), IN | (select.EPOLLOUT if state[4] else 0))

    lats: list[tuple[float, int]] = []
    measuring = False
    completed = 0
    marks = {}
    warm_end = t0 + warmup
    end = warm_end + duration
    while True:
        events = ep.poll(TICK)
        now = perf()
        if not measuring and now >= warm_end:
            measuring, lats, completed_at_start = True, [], completed
            marks["start"] = clock.read()
        if now >= end:
            marks["end"] = clock.read()
            break
        for fd, ev in events:
            state = conns[fd]
            if ev & select.EPOLLOUT and state[4]:
                _flush(ep, fd, state)
            if not ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                continue
            n = state[0].recv_into(buf)
            if not n:
                raise ScenarioError("server closed an echo connection mid-run")
            state[2] += n
            done = state[2] // RX - state[3]
            if not done:
                continue
            state[3] += done
            completed += done
            t = perf()
            queue, rem = state[5], done
            while rem:
                ts, k = queue[0]
                if k <= rem:
                    queue.popleft()
                    rem -= k
                    if measuring:
                        lats.append((t - ts, k))
                else:
                    queue[0] = (ts, k - rem)
                    if measuring:
                        lats.append((t - ts, rem))
                    rem = 0
            state[1] += done
            queue.append((t, done))
            _send(ep, state, block[: done * TX], fd)

    msgs = completed - completed_at_start
    result = {"messages": msgs, **CpuClock.usage(marks["start"], marks["end"])}
    result["rate"] = msgs / result["seconds"]
    result.update(weighted_percentiles(lats))
    if "server_cpu_seconds" in result and msgs:
        result["server_us_per_msg"] = result["server_cpu_seconds"] / msgs * 1e6
    _drain_and_check(ep, conns, buf)
    return result


def _send(ep, state, data, fd=None) -> None:
    """Send *data* now if nothing is queued; queue what the socket does not take and ask for EPOLLOUT."""
    if state[4]:
        state[4] += data
        return
    n = state[0].send(data)
    if n < len(data):
        state[4] = data[n:]
        if fd is not None:
            ep.modify(fd, IN | select.EPOLLOUT)


def _flush(ep, fd, state) -> None:
    n = state[0].send(state[4])
    state[4] = state[4][n:]
    if not state[4]:
        ep.modify(fd, IN)


def _drain_and_check(ep, conns, buf, timeout=10.0) -> None:
    """Stop sending, wait for every echo still in flight, then require exactly 34 bytes per frame sent."""
    deadline = time.monotonic() + timeout
    waiting = {fd for fd, st in conns.items() if st[2] < st[1] * RX or st[4]}
    while waiting and time.monotonic() < deadline:
        for fd, ev in ep.poll(TICK):
            state = conns[fd]
            if ev & select.EPOLLOUT and state[4]:
                _flush(ep, fd, state)
            if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                n = state[0].recv_into(buf)
                if not n:
                    raise ScenarioError("server closed an echo connection while draining")
                state[2] += n
            if state[2] >= state[1] * RX and not state[4]:
                waiting.discard(fd)
    if waiting:
        raise ScenarioError(f"{len(waiting)} connections still had echoes missing after {timeout} s")
    bad = [st for st in conns.values() if st[2] != st[1] * RX]
    if bad:
        raise ScenarioError(f"byte count mismatch on {len(bad)} connections (extra or malformed frames)")


def _close_all(socks, timeout=5.0) -> None:
    """Send a close frame on every socket, wait (bounded) for the server to close, then close."""
    open_socks = []
    for s in socks:
        try:
            s.setblocking(False)
            s.send(CLIENT_CLOSE)
            open_socks.append(s)
        except OSError:
            s.close()
    deadline = time.monotonic() + timeout
    while open_socks and time.monotonic() < deadline:
        readable, _, _ = select.select(open_socks[:500], [], [], TICK)
        for s in readable:
            try:
                if s.recv(65536):
                    continue
            except OSError:
                pass
            s.close()
            open_socks.remove(s)
    for s in open_socks:
        s.close()


# ---------------------------------------------------------------------------------------------------
# handshake: C concurrent connect → 101 → close loops

CONNECTING, UPGRADING, CLOSING = range(3)


def run_handshakes(
    port, path, concurrency, warmup, duration, headers=(), server_pid=None, server_cpu=0, cycle_timeout=5.0
) -> dict:
    """Run *concurrency* loops of full WebSocket open/close cycles for *warmup* + *duration* seconds.

    A cycle counts when the server answered 101 with the right accept key, answered our close frame
    with its own, and closed the TCP connection (RFC 6455 §7.1.1: the server closes first).
    """
    request = upgrade_request(port, path, list(headers))
    clock = CpuClock(server_pid, server_cpu)
    ep = select.epoll()
    perf = time.perf_counter
    slots: dict[int, list] = {}  # fd -> [sock, state, buffer, started]
    errors: collections.Counter = collections.Counter()
    cycles, open_ms, cycle_ms = 0, [], []
    measuring = False
    marks = {}

    def start() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            errors[f"connect: {os.strerror(err)}"] += 1
            return
        slots[s.fileno()] = [s, CONNECTING, b"", perf(), 0.0]
        ep.register(s.fileno(), OUT)

    def finish(fd, error=None) -> None:
        nonlocal cycles
        slot = slots.pop(fd)
        ep.unregister(fd)
        slot[0].close()
        if error:
            errors[error] += 1
        elif measuring:
            cycles += 1
            t = perf()
            open_ms.append((slot[4] - slot[3], 1))
            cycle_ms.append((t - slot[3], 1))

    t0 = perf()
    warm_end, end = t0 + warmup, t0 + warmup + duration
    try:
        for _ in range(concurrency):
            start()
        while sum(errors.values()) < MAX_ERRORS:
            events = ep.poll(TICK)
            now = perf()
            if not measuring and now >= warm_end:
                measuring = True
                marks["start"] = clock.read()
            if now >= end:
                marks["end"] = clock.read()
                break
            for fd, ev in events:
                if fd not in slots:
                    continue
                error = _handshake_step(ep, fd, ev, slots[fd], request)
                if error is not False:
                    finish(fd, error)
                    start()
            for fd in [fd for fd, slot in slots.items() if now - slot[3] > cycle_timeout]:
                finish(fd, f"cycle took over {cycle_timeout} s")
                start()
            while len(slots) < concurrency and sum(errors.values()) < MAX_ERRORS:
                start()
        else:
            marks.setdefault("start", clock.read())
            marks["end"] = clock.read()
    finally:
        for slot in slots.values():
            slot[0].close()
        ep.close()
    result = {"handshakes": cycles, **CpuClock.usage(marks["start"], marks["end"])}
    result["rate"] = cycles / result["seconds"]
    result["open"] = weighted_percentiles(open_ms)
    result["cycle"] = weighted_percentiles(cycle_ms)
    if "server_cpu_seconds" in result and cycles:
        result["server_us_per_handshake"] = result["server_cpu_seconds"] / cycles * 1e6
    if errors:
        result["errors"] = dict(errors)
    return result


def _handshake_step(ep, fd, ev, slot, request):
    """Advance one cycle; return ``False`` to keep going, ``None`` when done, or an error string."""
    sock, state = slot[0], slot[1]
    if state == CONNECTING:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return f"connect: {os.strerror(err)}"
        if sock.send(request) != len(request):
            return "short write of the upgrade request"
        slot[1] = UPGRADING
        ep.modify(fd, IN)
        return False
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        return "connection reset"
    if state == UPGRADING:
        if not chunk:
            return "closed before the 101"
        slot[2] += chunk
        if b"\r\n\r\n" not in slot[2]:
            return False
        head, _, rest = slot[2].partition(b"\r\n\r\n")
        try:
            check_101(head)
        except ScenarioError as exc:
            return str(exc)
        slot[4] = time.perf_counter()
        sock.send(CLIENT_CLOSE)
        slot[1], slot[2] = CLOSING, rest
        return False
    if chunk:
        slot[2] += chunk
        return False
    # EOF: the server closed; its last frame must be its close frame (RFC 6455 §5.5.1).
    return None if ends_with_close(slot[2]) else f"closed without a close frame (got {slot[2][:20]!r})"


def ends_with_close(buf: bytes) -> bool:
    """True if *buf* is whole unmasked server frames, the last one a close frame."""
    i, last = 0, None
    while i + 2 <= len(buf):
        last, n = buf[i] & 0x0F, buf[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = int.from_bytes(buf[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(buf[i : i + 8], "big"), i + 8
        i += n
    return i == len(buf) and last == 0x8


# ---------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["echo", "handshake", "probe"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/echo/")
    parser.add_argument("--connections", type=int, default=1, help="echo: sockets")
    parser.add_argument("--window", type=int, default=1, help="echo: messages in flight per socket")
    parser.add_argument("--concurrency", type=int, default=20, help="handshake: parallel loops")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--header", action="append", default=[], help="extra request header, e.g. 'Cookie: a=b'"
    )
    parser.add_argument("--no-echo", action="store_true", help="probe: the path does not echo")
    parser.add_argument("--server-pid", type=int, help="also report this process's CPU use")
    parser.add_argument(
        "--server-cpu",
        type=int,
        default=0,
        help="the CPU the server is pinned to, to report other load on it (-1: don't)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("duration must be in (0, 600] s and warmup in [0, 60] s")
    server_cpu = args.server_cpu if args.server_cpu >= 0 else None
    try:
        if args.scenario == "probe":
            probe(args.port, args.path, args.header, echo=not args.no_echo)
            result = {"ok": True}
        elif args.scenario == "echo":
            result = run_echo(
                args.port,
                args.path,
                args.connections,
                args.window,
                args.warmup,
                args.duration,
                args.header,
                args.server_pid,
                server_cpu,
            )
        else:
            result = run_handshakes(
                args.port,
                args.path,
                args.concurrency,
                args.warmup,
                args.duration,
                args.header,
                args.server_pid,
                server_cpu,
            )
    except (ScenarioError, OSError) as exc:
        result = {"errors": {f"{type(exc).__name__}: {exc}": 1}}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
