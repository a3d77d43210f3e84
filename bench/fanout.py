"""Fan-out: one Redis channel broadcast to N websockets, ours against two references in the same run.

``python bench/fanout.py`` (``--quick``, ``--sockets N``). It starts a Redis server of its own (a free port
on 127.0.0.1, no persistence) and three servers, one process (one worker) each, pinned to CPU 0:

* ours     — ``gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket``:
  test_project's ``broadcast`` view at ``/broadcast/<room>/`` (one subscriber connection per process);
* baseline — ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker bench.fanout_baseline:app``:
  the original django-gevent-websocket design, one redis-py pubsub connection per socket;
* uvicorn  — ``uvicorn bench.uvicorn_fanout:app --loop uvloop --http httptools --ws websockets``: a bare
  ASGI app with one shared ``redis.asyncio`` subscriber per process, sending each message to every
  member of the room (skipped, with a note, when uvicorn is not installed).

For every (round, server) a client process pinned to CPU 1 (``python bench/fanout.py client …``; Redis is
pinned there too) opens N websockets to ``/broadcast/<room>/``, waits until all are subscribed, and runs:

* steady — one broadcast per second for D seconds: delivery latency p50/p99/max over the N×D deliveries;
* burst  — M messages published back to back: deliveries/s = N×M ÷ (first publish → last delivery).

Every message is a 32-byte text payload holding its kind, a sequence number and ``time.time_ns()`` taken
just before it was published; the client checks every socket got every message once, in order. A
delivery's time is the kernel's receive timestamp (``SO_TIMESTAMPNS``, the same clock), so the client
reads at its own pace without adding to the figures — and without making the server wake it up for every
frame, which remote clients would not cost it either: during steady it reads each message 0.8 s after
publishing it, during a burst every 50 ms. Publishing goes through the library's own
``django_websocket.publish()`` for ours (Django set up in the client process) and a plain ``PUBLISH`` of
the raw payload to the same Redis channel for the references.

Exit status: 0 if every run was clean, 1 if a message was lost or a run errored, 2 if a server or Redis
could not start. Slowness is reported (next to the targets), never an error.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import resource
import secrets
import select
import shlex
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import loadgen  # noqa: E402
from bench import run as echo_bench  # noqa: E402

PY = sys.executable
SERVER_CPU, LOADGEN_CPU = echo_bench.SERVER_CPU, echo_bench.LOADGEN_CPU
PREFIX = "django_websocket:"  # WEBSOCKET_CHANNEL_PREFIX's default: the baseline subscribes to the same names
TARGET_RATE = 100_000  # deliveries/s per worker at full rate (the target)
TARGET_P99_MS = 20.0  # steady-rate p99 delivery latency (the target)

# Payload: kind, 7-digit sequence, space, 19-digit time.time_ns(), padded to 32 bytes. Server frames are
# then 34 bytes (RFC 6455 §5.2: 2 header bytes, unmasked), like the echo bench's.
SYNC, STEADY, BURST = b"S", b"T", b"B"
SIZE = 32
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux
ANCILLARY = socket.CMSG_SPACE(TIMESPEC.size)
READ_EVERY = 0.05  # s between the client's reads during a burst
WATCH = 0.25  # s after each steady message during which CPU 0's use by other processes is noted
QUIET_MS = 10  # at most this much of it (one /proc/stat tick) and the message counts as undisturbed


def payload(kind: bytes, seq: int) -> str:
    return f"{kind.decode()}{seq:07d} {time.time_ns():019d}".ljust(SIZE, ".")


# ---------------------------------------------------------------------------------------------------
# the client: N websockets on one epoll, one thread


class Failed(Exception):
    """The run cannot go on (a socket was refused, never subscribed, or closed)."""


def make_publisher(kind: str, redis_url: str, channel: str):
    """Return ``publish(str) -> int`` and a description: the library's publish() or a raw PUBLISH."""
    if kind == "django":
        import django

        django.setup()
        from django_websocket import conf, publish

        if conf.redis_url() != redis_url:
            raise Failed(f"publish() would go to {conf.redis_url()!r}, not to {redis_url}")
        return (lambda message: publish(channel, message)), f"django_websocket.publish({channel!r}, …)"
    import redis

    client = redis.Redis.from_url(redis_url)
    name = PREFIX + channel
    return (lambda message: client.publish(name, message)), f"PUBLISH {name} <raw payload>"


class FanoutClient:
    def __init__(self, args) -> None:
        self.args = args
        self.n = args.sockets
        self.ep = select.epoll(sizehint=self.n + 8)
        self.socks: list[socket.socket] = []
        self.index: dict[int, int] = {}
        self.rest: list[bytes] = []
        self.errors: collections.Counter = collections.Counter()
        self.others: collections.Counter = collections.Counter()  # frames of another phase or format
        self.phase = SYNC
        self.expect: list[int] = []  # next sequence number per socket in the current phase
        self.counts: list[int] = []
        self.target = 0  # messages per socket that complete the phase
        self.complete = 0  # sockets that got all of them
        self.latencies: list[int] = []  # ns
        self.seqs: list[int] = []  # the message of each latency
        self.last_rx = 0
        self.sync_seen: list[int] = []
        self.slowest: list[int] = []
        self.fastest: list[int] = []
        self.stamps = [0, 0]  # reads timed by the kernel, by time.time_ns() (no timestamp came)

    # connections ------------------------------------------------------------------------------------

    def connect(self) -> dict:
        self.expect, self.counts, self.sync_seen = [0] * self.n, [0] * self.n, [-1] * self.n
        t0 = time.perf_counter()
        for i in range(self.n):
            try:
                sock, rest = loadgen.connect_and_upgrade(
                    self.args.port, self.args.path, [], timeout=10.0, echo=False
                )
            except (loadgen.ScenarioError, OSError) as exc:
                raise Failed(f"socket {i + 1} of {self.n}: {type(exc).__name__}: {exc}") from exc
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.index[sock.fileno()] = len(self.socks)
            self.socks.append(sock)
            self.rest.append(b"")
            self.ep.register(sock.fileno(), loadgen.IN)
            if rest:
                self._received(len(self.socks) - 1, rest, time.time_ns())
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "rate": self.n / seconds}

    def close(self, timeout: float = 10.0) -> int:
        """Close frames on every socket, wait (bounded) for the servers' TCP close; return stragglers."""
        waiting = set()
        for sock in self.socks:
            try:
                sock.send(loadgen.CLIENT_CLOSE)
                waiting.add(sock.fileno())
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        buf = bytearray(65536)
        while waiting and time.monotonic() < deadline:
            for fd, _ev in self.ep.poll(loadgen.TICK):
                try:
                    if self.socks[self.index[fd]].recv_into(buf):
                        continue
                except OSError:
                    pass
                waiting.discard(fd)
                self.ep.unregister(fd)
        for sock in self.socks:
            sock.close()
        self.ep.close()
        return len(waiting)

    # receiving --------------------------------------------------------------------------------------

    def pump(self, timeout: float) -> int:
        """One epoll wait, then one read from every readable socket; returns how many were read.

        A read's time is the kernel's receive timestamp of the last segment it returned
        (``SO_TIMESTAMPNS``), not the time of the read, so the client's own pace does not count.
        """
        socks, ancillary, stamps = self.socks, ANCILLARY, self.stamps
        events = self.ep.poll(timeout, 2 * self.n)
        for fd, _ev in events:
            i = self.index[fd]
            try:
                data, anc, _flags, _addr = socks[i].recvmsg(262144, ancillary)
            except BlockingIOError:
                continue
            except OSError as exc:
                self.errors[f"socket error: {exc}"] += 1
                data = b""
            if not data:
                self.errors["server closed a socket mid-run"] += 1
                self.ep.unregister(fd)
                continue
            if anc and anc[0][1] == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(anc[0][2][: TIMESPEC.size])
                now = sec * 1_000_000_000 + nsec
                stamps[0] += 1
            else:
                now = time.time_ns()
                stamps[1] += 1
            self._received(i, data, now)
        return len(events)

    def drain(self) -> None:
        """Read everything that has arrived, without waiting."""
        for _ in range(1000):
            if not self.pump(0):
                return

    def _received(self, i: int, data: bytes, now: int) -> None:
        if self.rest[i]:
            data = self.rest[i] + data
        n, at = len(data), 0
        while n - at >= 2:
            b0, length = data[at], data[at + 1]
            if length & 0x80:
                raise Failed("the server sent a masked frame")
            head = 2
            if length == 126:
                if n - at < 4:
                    break
                length, head = int.from_bytes(data[at + 2 : at + 4], "big"), 4
            elif length == 127:
                if n - at < 10:
                    break
                length, head = int.from_bytes(data[at + 2 : at + 10], "big"), 10
            end = at + head + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode in (1, 2) and b0 & 0x80:
                self._message(i, data[at + head : end], now)
            elif opcode == 8:
                code = int.from_bytes(data[at + head : at + head + 2], "big") if length >= 2 else None
                reason = data[at + head + 2 : end].decode("utf-8", "replace")
                self.errors[f"server sent a close frame: {code} {reason}".rstrip()] += 1
            elif opcode == 9:
                self.socks[i].send(loadgen.client_frame(data[at + head : end], opcode=0xA))
            elif opcode != 0xA:
                self.errors[f"unexpected frame (opcode {opcode}, fin {b0 >> 7})"] += 1
            at = end
        self.rest[i] = data[at:]

    def _message(self, i: int, body: bytes, now: int) -> None:
        kind = body[:1]
        if len(body) != SIZE:
            self.others[f"{len(body)}-byte message {body[:40]!r}"] += 1
        elif kind == self.phase:
            seq = int(body[1:8])
            if kind == SYNC:
                self.sync_seen[i] = seq
                return
            expect = self.expect[i]
            if seq != expect:
                self.errors[
                    f"{kind.decode()} #{seq} arrived when #{expect} was due (lost, repeated or reordered)"
                ] += 1
            self.expect[i] = seq + 1
            latency = now - int(body[9:28])
            self.latencies.append(latency)
            self.seqs.append(seq)
            if seq < len(self.slowest):
                if latency > self.slowest[seq]:
                    self.slowest[seq] = latency
                if latency < self.fastest[seq]:
                    self.fastest[seq] = latency
            if now > self.last_rx:
                self.last_rx = now
            got = self.counts[i] = self.counts[i] + 1
            if got == self.target:
                self.complete += 1
        else:
            self.others[f"{kind.decode('latin-1')} message during the {self.phase.decode()} phase"] += 1

    # phases -----------------------------------------------------------------------------------------

    def subscribe_wait(self, publish, timeout: float) -> dict:
        """Publish sync messages every 0.1 s until every socket got one, then until all got the last one."""
        self.phase = SYNC
        t0 = time.monotonic()
        deadline, seq, next_at, last_count = t0 + timeout, -1, t0, None
        while time.monotonic() < deadline:
            if time.monotonic() >= next_at:
                seq += 1
                count = publish(payload(SYNC, seq))
                last_count = count
                next_at = time.monotonic() + 0.1
            self.pump(0.02)
            if min(self.sync_seen) >= 0:
                break
        last = seq
        while time.monotonic() < deadline and min(self.sync_seen) < last:
            self.pump(0.02)
        missing = sum(1 for s in self.sync_seen if s < last)
        if missing:
            raise Failed(
                f"{missing} of {self.n} sockets got no broadcast within {timeout:g} s"
                f" (the last publish returned {last_count})"
            )
        # Syncs sent before a socket subscribed may still be in flight elsewhere: none can follow `last`.
        return {"seconds": time.monotonic() - t0, "syncs": last + 1, "publish_returned": last_count}

    def _measure(self, kind: bytes, count: int) -> None:
        self.phase, self.target, self.complete = kind, count, 0
        self.expect = [0] * self.n
        self.counts = [0] * self.n  # messages of this phase received per socket
        self.latencies, self.seqs, self.last_rx = [], [], 0
        self.slowest = [0] * count  # per message: latency to the last socket
        self.fastest = [1 << 62] * count  # and to the first: a late first socket means a late hub

    def _result(self, kind: bytes, count: int, marks, first_ns: int, exact: bool = True) -> dict:
        wanted = self.n * count
        got = len(self.latencies)
        out = {"messages": count, "deliveries": got, "expected": wanted, "lost": max(0, wanted - got)}
        out.update(loadgen.CpuClock.usage(marks[0][0], marks[1][0]))
        if marks[0][1] is not None:
            redis_seconds = marks[1][1] - marks[0][1]
            out["redis_us_per_delivery"] = redis_seconds / got * 1e6 if got else None
        if got:
            if "server_cpu_seconds" in out:
                out["server_us_per_delivery"] = out["server_cpu_seconds"] / got * 1e6
            out["client_us_per_delivery"] = out["loadgen_cpu"] * out["seconds"] / got * 1e6
            lats = sorted(self.latencies)
            # Exact when every read returned one message; else an upper bound (the read's last segment).
            suffix = "" if exact else "_upper_bound"
            out["p50_ms" + suffix] = lats[(got - 1) // 2] / 1e6
            out["p99_ms" + suffix] = lats[min(got - 1, int(got * 0.99))] / 1e6
            out["max_ms" + suffix] = lats[-1] / 1e6
            if exact:
                out["min_ms"] = lats[0] / 1e6
                out["to_last_socket_ms"] = [round(t / 1e6, 2) for t in self.slowest]
                out["to_first_socket_ms"] = [round(t / 1e6, 2) for t in self.fastest]
                out["to_last_socket_median_ms"] = statistics.median(self.slowest) / 1e6
            out["last_delivery_s"] = (self.last_rx - first_ns) / 1e9
        if out["lost"]:
            short = sum(1 for c in self.counts if c < count)
            self.errors[
                f"{kind.decode()}: {out['lost']} of {wanted} deliveries lost ({short} sockets short)"
            ] += 1
        return out

    def steady(self, publish, seconds: int, clock, redis_clock, drain: float) -> dict:
        """One broadcast per second for *seconds* seconds.

        The client reads each message 0.8 s after publishing it, when the fan-out is long over: the
        kernel's receive timestamps give every delivery's time, and the server is not slowed by
        waking a client that waits on 1,000 sockets (remote clients would not cost it that either).
        """
        self._measure(STEADY, seconds)
        marks = [(clock.read(), redis_clock.read()[2])]
        t0 = time.monotonic()
        first_ns = time.time_ns()
        windows = []  # per message: server CPU and others' CPU 0 time in the WATCH s after publishing
        for k in range(seconds):
            before = clock.read()
            publish(payload(STEADY, k))
            time.sleep(max(0.0, t0 + k + WATCH - time.monotonic()))
            after = clock.read()
            if before[2] is not None and after[2] is not None:
                server = after[2] - before[2]
                busy = after[3] - before[3] if before[3] is not None and after[3] is not None else None
                windows.append(
                    (round(server * 1e3), None if busy is None else round(max(0.0, busy - server) * 1e3))
                )
            time.sleep(max(0.0, t0 + k + 0.8 - time.monotonic()))
            self.drain()
            time.sleep(max(0.0, t0 + k + 1 - time.monotonic()))
        deadline = time.monotonic() + drain
        while self.complete < self.n and time.monotonic() < deadline:
            self.pump(0.02)
        marks.append((clock.read(), redis_clock.read()[2]))
        out = self._result(STEADY, seconds, marks, first_ns)
        # A slow message with little server CPU but others busy on CPU 0 was delayed by the machine.
        out["server_cpu_ms_per_message"] = [w[0] for w in windows]
        out["others_cpu0_ms_per_message"] = [w[1] for w in windows]
        if len(windows) == seconds and all(w[1] is not None for w in windows):
            # /proc/stat counts in 10 ms ticks: "quiet" = at most one tick of other processes on CPU 0
            # (gunicorn's arbiters live there too) in the WATCH s after publishing.
            quiet = {k for k, w in enumerate(windows) if w[1] <= QUIET_MS}
            out["quiet_messages"] = len(quiet)
            lats = sorted(t for t, k in zip(self.latencies, self.seqs, strict=True) if k in quiet)
            if lats:
                out["quiet_p99_ms"] = lats[min(len(lats) - 1, int(len(lats) * 0.99))] / 1e6
        return out

    def burst(self, publish, count: int, clock, redis_clock, drain: float) -> dict:
        """*count* messages published back to back: deliveries/s from first publish to last delivery."""
        self._measure(BURST, count)
        marks = [(clock.read(), redis_clock.read()[2])]
        first_ns = time.time_ns()
        for k in range(count):
            publish(payload(BURST, k))
        published_ns = time.time_ns()
        deadline = time.monotonic() + drain
        # Read every READ_EVERY s, not as frames arrive: several frames per read keep the client cheap
        # (it shares its CPU with Redis) and the kernel timestamps still time the last delivery exactly.
        while self.complete < self.n and time.monotonic() < deadline:
            time.sleep(READ_EVERY)
            self.pump(0)  # one read per socket that has data, then sleep again
        marks.append((clock.read(), redis_clock.read()[2]))
        out = self._result(BURST, count, marks, first_ns, exact=False)
        out["publish_s"] = (published_ns - first_ns) / 1e9
        if out["deliveries"] and self.last_rx > first_ns:
            out["rate"] = out["deliveries"] / ((self.last_rx - first_ns) / 1e9)
        # Whatever is still on its way now would be an extra delivery: give it a moment to show up.
        settle = time.monotonic() + 0.2
        while time.monotonic() < settle:
            self.pump(0.02)
        return out


def client_main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="fanout.py client", description="one fan-out run (used by fanout.py)"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="e.g. /broadcast/room/")
    parser.add_argument("--channel", required=True, help="library channel name, e.g. broadcast:room")
    parser.add_argument("--publisher", choices=["django", "raw"], required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--steady", type=int, default=10, help="seconds (one broadcast each)")
    parser.add_argument("--burst", type=int, default=200, help="messages")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--server-cpu", type=int, default=SERVER_CPU, help="-1: don't watch its load")
    parser.add_argument("--redis-pid", type=int)
    args = parser.parse_args(argv)
    raise_nofile()
    clock = loadgen.CpuClock(args.server_pid, args.server_cpu if args.server_cpu >= 0 else None)
    redis_clock = loadgen.CpuClock(args.redis_pid, None)
    result: dict = {}
    client = FanoutClient(args)
    try:
        publish, result["publisher"] = make_publisher(args.publisher, args.redis_url, args.channel)
        result["connect"] = client.connect()
        result["subscribe"] = client.subscribe_wait(publish, timeout=30.0 + args.sockets / 100)
        result["steady"] = client.steady(publish, args.steady, clock, redis_clock, drain=10.0)
        drain = 30.0 + args.sockets * args.burst / 5000
        result["burst"] = client.burst(publish, args.burst, clock, redis_clock, drain=drain)
    except Failed as exc:
        client.errors[str(exc)] += 1
    except Exception as exc:  # a publisher that raised, a bug: report it as this run's error
        client.errors[f"{type(exc).__name__}: {exc}"] += 1
    finally:
        result["close_timeouts"] = client.close()
    result["reads_timed_by_kernel"], result["reads_timed_by_client"] = client.stamps
    if client.errors:
        result["errors"] = dict(client.errors)
    if client.others:
        result["other_messages"] = dict(client.others)
        result.setdefault("errors", {}).update({f"unexpected: {k}": v for k, v in client.others.items()})
    print(json.dumps(result))
    return 1 if result.get("errors") else 0


# ---------------------------------------------------------------------------------------------------
# the harness


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(tmp: str):
    """A redis-server on a free 127.0.0.1 port, no persistence, pinned to the load side's CPU."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    for _attempt in range(3):
        port = free_port()
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", tmp,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(Path(tmp) / "redis.log"),
            "--maxclients", "20000",
        ]  # fmt: skip
        process = subprocess.Popen(
            echo_bench.pinned(LOADGEN_CPU, argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    break
            time.sleep(0.05)
        else:
            out = ""
            echo_bench.stop(process)
            with contextlib.suppress(OSError):
                out = (Path(tmp) / "redis.log").read_text(errors="replace")[-2000:]
            print(f"redis-server on port {port} did not start: {out}", file=sys.stderr)
            continue
        try:
            yield port, process.pid, argv
        finally:
            echo_bench.stop(process)
        return
    raise RuntimeError("could not start redis-server")


def stacks(args, env: dict[str, str]) -> list[echo_bench.Stack]:
    """The servers of this run, ours first (``--only`` keeps one)."""
    extra = ["--worker-connections", str(max(2000, args.sockets + 100))]
    found = []
    if args.only in (None, "ours"):
        argv = [*echo_bench.GUNICORN, *extra, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"]
        found.append(echo_bench.Stack("ours", argv, env))
    if args.only in (None, "baseline"):
        argv = [*echo_bench.GUNICORN, *extra, "-k", echo_bench.STOCK_WORKER, "bench.fanout_baseline:app"]
        found.append(echo_bench.Stack("baseline", argv, env))
    if args.only in (None, "uvicorn"):
        if echo_bench.installed("uvicorn", "uvloop", "httptools"):
            argv = echo_bench.uvicorn("bench.uvicorn_fanout:app")
            found.append(echo_bench.Stack("uvicorn", argv, env, echo_bench.UVICORN_LISTENING, None))
        else:
            print("uvicorn skipped: not installed (pip install -r bench/requirements.txt)")
    return found


def ours_missing() -> str | None:
    """Why our stack cannot be measured yet, or None."""
    urls = ROOT / "test_project" / "websocket_urls.py"
    if not urls.exists() or "broadcast" not in urls.read_text():
        return "test_project/websocket_urls.py has no broadcast route yet"
    init = ROOT / "django_websocket" / "__init__.py"
    if "publish" not in init.read_text():
        return "django_websocket has no publish() yet"
    return None


def run_client(server: echo_bench.Server, rnd: int, args, redis_url: str, redis_pid: int, env) -> dict:
    name = server.stack.name
    room = f"fanout-{rnd + 1}-{name}-{secrets.token_hex(3)}"  # a fresh room: nothing left over can hear it
    argv = [
        PY,
        str(ROOT / "bench" / "fanout.py"),
        "client",
        "--port", str(server.port),
        "--path", f"/broadcast/{room}/",
        "--channel", f"broadcast:{room}",
        "--publisher", "django" if name == "ours" else "raw",
        "--redis-url", redis_url,
        "--sockets", str(args.sockets),
        "--steady", str(args.duration),
        "--burst", str(args.messages),
        "--server-pid", str(server.worker_pid),
        "--server-cpu", str(SERVER_CPU if echo_bench.pinned(SERVER_CPU, []) else -1),
        "--redis-pid", str(redis_pid),
    ]  # fmt: skip
    timeout = args.sockets * 0.05 + 60 + args.sockets / 100 + args.duration + 10
    timeout += 30 + args.sockets * args.messages / 5000 + 30
    result = echo_bench.run_client_process(
        echo_bench.pinned(LOADGEN_CPU, argv), timeout, env={**os.environ, **env}, tail=800
    )
    return echo_bench.note_server_exit(result, server, f"{name} server")


FIGURES = [
    # (section, label, key, target text)
    ("steady", "latency p50 ms", "p50_ms", ""),
    ("steady", "latency p99 ms", "p99_ms", f"≤ {TARGET_P99_MS:g}"),
    ("steady", "latency max ms", "max_ms", ""),
    ("steady", "to last socket ms, median msg", "to_last_socket_median_ms", ""),
    ("steady", "server µs/delivery", "server_us_per_delivery", ""),
    ("steady", "redis µs/delivery", "redis_us_per_delivery", ""),
    ("steady", "others on CPU 0", "server_cpu_other_load", ""),
    ("steady", "msgs with CPU 0 quiet, per round", "quiet_messages", ""),
    ("steady", "latency p99 ms, quiet msgs", "quiet_p99_ms", f"≤ {TARGET_P99_MS:g}"),
    ("burst", "deliveries/s", "rate", f"≥ {TARGET_RATE:,}"),
    ("burst", "first publish → last delivery s", "last_delivery_s", ""),
    ("burst", "server µs/delivery", "server_us_per_delivery", ""),
    ("burst", "redis µs/delivery", "redis_us_per_delivery", ""),
    ("burst", "client CPU", "loadgen_cpu", ""),
    ("burst", "others on CPU 0", "server_cpu_other_load", ""),
    ("burst", "lost", "lost", "0"),
    ("connect", "handshakes/s", "rate", ""),
]
PERCENT = {"loadgen_cpu", "server_cpu_other_load"}
RATIO_NAMES = {"baseline": "base", "uvicorn": "uvicorn"}  # ratio column headers
TARGET_VS_UVICORN = 1.5  # burst deliveries/s, ours ÷ uvicorn (the target)
COUNTS = {"quiet_messages"}  # shown per round, no ratio


def table(results: dict[str, list[dict]], args) -> str:
    names = list(results)
    titles = {
        "steady": f"steady, 1 msg/s × {args.duration} s",
        "burst": f"burst, {args.messages} msgs",
        "connect": f"open {args.sockets} sockets",
    }
    others = [n for n in names if n != "ours"] if "ours" in names else []
    head = ("scenario", "figure", *names, *(f"ours/{RATIO_NAMES.get(n, n)}" for n in others), "target")
    rows = [head]
    last_section = None
    for section, label, key, target in FIGURES:
        per = {n: [echo_bench.figure(r, f"{section}.{key}") for r in results[n]] for n in names}
        # Medians over the rounds that have the figure (a run that errored has none; its errors are listed).
        med = {
            n: statistics.median([x for x in v if x is not None]) if any(x is not None for x in v) else None
            for n, v in per.items()
        }
        ratios = [""] * len(others)
        if key in PERCENT:
            cells = [f"{med[n]:.0%}" if med[n] is not None else "—" for n in names]
        else:
            cells = [echo_bench.fmt(med[n]) for n in names]
            if key != "lost":
                for i, other in enumerate(others):
                    pairs = [
                        o / b for b, o in zip(per[other], per["ours"], strict=False) if b and o is not None
                    ]
                    ratios[i] = f"{statistics.median(pairs):.2f}" if pairs else "—"
        if key == "lost":
            cells = [str(sum(v or 0 for v in per[n])) if per[n] else "—" for n in names]
        elif key in COUNTS:
            cells = ["/".join("—" if v is None else str(v) for v in per[n]) or "—" for n in names]
            ratios = [""] * len(others)
        rows.append((titles[section] if section != last_section else "", label, *cells, *ratios, target))
        last_section = section
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = (
            cell.ljust(w) if c < 2 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 5 s steady, 100-message burst")
    parser.add_argument("--sockets", type=int, default=1000, help="websockets per run (default 1000)")
    parser.add_argument(
        "--duration", type=int, help="steady seconds, one broadcast each (default 10; 5 quick)"
    )
    parser.add_argument("--messages", type=int, help="burst size (default 200; 100 quick)")
    parser.add_argument("--rounds", type=int, help="runs per server (default 3; 1 quick)")
    parser.add_argument("--only", choices=["ours", "baseline", "uvicorn"], help="measure one server only")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="before each run, wait until no CPU is busier than this (default 0.15)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, help="longest wait for quiet CPUs, s (default 20; 5 quick)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (5 if quick else 10)
    args.messages = args.messages or (100 if quick else 200)
    args.rounds = args.rounds or (1 if quick else 3)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (5.0 if quick else 20.0)
    if not (
        1 <= args.sockets <= 9000
        and 1 <= args.duration <= 300
        and 1 <= args.messages <= 900  # WEBSOCKET_CHANNEL_QUEUE_SIZE is 1000: no slow-consumer closes
        and 1 <= args.rounds <= 20
        and 0 <= args.quiet_wait <= 600
    ):
        parser.error(
            "need 1 <= sockets <= 9000, 1 <= duration <= 300, 1 <= messages <= 900, 1 <= rounds <= 20"
        )
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    raise_nofile()  # inherited by the servers, Redis and the clients
    print(f"$ {shlex.join([PY, 'bench/fanout.py', *argv])}")
    redis_version = subprocess.run(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()
    redis_version = next((w[2:] for w in redis_version if w.startswith("v=")), "?")
    import redis as redis_py

    print(f"{echo_bench.versions()}, redis-py {redis_py.__version__}, redis-server {redis_version}")
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs; servers on CPU {SERVER_CPU}, client and Redis on "
        f"CPU {LOADGEN_CPU}; {args.rounds} round(s) of {args.sockets} sockets: {args.duration} s steady, "
        f"{args.messages}-message burst\n"
    )
    if args.only in (None, "ours") and (why := ours_missing()):
        print(f"our stack cannot be measured yet: {why}; try --only baseline", file=sys.stderr)
        return 2

    with (
        tempfile.TemporaryDirectory(prefix="django-websocket-fanout-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            redis_port, redis_pid, redis_argv = stack.enter_context(redis_server(tmp))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis_cmd = shlex.join(echo_bench.pinned(LOADGEN_CPU, redis_argv))
        print(f"redis     port {redis_port}, pid {redis_pid}: {redis_cmd}")
        env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_REDIS_URL": redis_url,
            "REDIS_URL": redis_url,  # what conf.redis_url() falls back to when settings do not set it
        }
        servers: dict[str, echo_bench.Server] = {}
        try:
            for st in stacks(args, env):
                servers[st.name] = stack.enter_context(echo_bench.serve(st))
                print(
                    f"{st.name:9} port {servers[st.name].port}, worker pid {servers[st.name].worker_pid}:"
                    f" {shlex.join(echo_bench.pinned(SERVER_CPU, st.argv))}"
                )
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        print()
        quiet_from = {name: len(server.log) for name, server in servers.items()}
        results: dict[str, list[dict]] = {name: [] for name in servers}
        errors = []
        for rnd in range(args.rounds):
            order = list(servers)
            if rnd % 2:
                order.reverse()
            for name in order:
                before = echo_bench.wait_for_quiet(args.quiet_threshold, args.quiet_wait)
                result = run_client(servers[name], rnd, args, redis_url, redis_pid, env)
                result["cpu_load_before"] = before
                results[name].append(result)
                for err, count in result.get("errors", {}).items():
                    errors.append(f"round {rnd + 1}, {name}: {err} (×{count})")
                steady, burst = result.get("steady", {}), result.get("burst", {})
                print(
                    f"  round {rnd + 1}/{args.rounds}  {name:9} steady p99 "
                    f"{echo_bench.fmt(steady.get('p99_ms'))} ms, burst {echo_bench.fmt(burst.get('rate'))}"
                    f" deliveries/s, lost {steady.get('lost', '?')}+{burst.get('lost', '?')}"
                    f"{', ERRORS' if result.get('errors') else ''}  (others on CPU {SERVER_CPU}: "
                    f"{burst.get('server_cpu_other_load', 0):.0%}; busiest CPU before: {before:.0%})",
                    file=sys.stderr,
                    flush=True,
                )
        chatter = {name: len(server.log) - quiet_from[name] for name, server in servers.items()}
        tails = {name: server.tail(10) for name, server in servers.items() if chatter[name]}

    print()
    print(table(results, args))
    print(
        "\nmedians over rounds; ours/X = median over rounds of ours ÷ X in the same round (above 1 is"
        "\nbetter for deliveries/s, below 1 for latencies and µs). redis µs/delivery: Redis's own CPU"
        "\n(the baseline has Redis copy every message to each socket's pubsub connection). targets are the"
        f"\nissue's, per worker (and burst deliveries/s ours/uvicorn ≥ {TARGET_VS_UVICORN:g}); they are"
        "\nprinted, not asserted."
    )
    print(
        "server log lines written during the runs: "
        + ", ".join(f"{name} {count}" for name, count in chatter.items())
    )
    for name, tail in tails.items():
        print(f"--- last lines of {name}'s log:\n{tail.rstrip()}")
    runs = [r for rs in results.values() for r in rs]
    noisy = [
        r
        for r in runs
        if max((echo_bench.figure(r, f"{p}.server_cpu_other_load") or 0) for p in ("steady", "burst"))
        > echo_bench.NOISY
    ]
    if noisy:
        print(
            f"{len(noisy)} of {len(runs)} runs had other processes using over {echo_bench.NOISY:.0%} of CPU "
            f"{SERVER_CPU} during the steady or burst phase: the machine was busy, rerun for cleaner figures."
        )
    return echo_bench.finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
