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

For every (round, server) a client pinned to CPU 1 (``python bench/fanout.py client …``; Redis is pinned
there too) opens N websockets to ``/broadcast/<room>/``, split over ``--receivers`` processes (default 2),
waits until all are subscribed, and runs:

* steady — one broadcast per second for D seconds: delivery latency p50/p99/max over the N×D deliveries;
* burst  — M messages published back to back: deliveries/s = N×M ÷ (first publish → last delivery).

``--scenario broadcast`` is the same with as many sockets as one worker can hold (its open-file limit
less 100: 19,900 here), a 5 s steady phase and a 20-message burst: time to the last socket, deliveries/s.

Every message is a 32-byte text payload holding its kind, a sequence number and ``time.time_ns()`` taken
just before it was published; the client checks every socket got every message once, in order. A
delivery's time is the kernel's receive timestamp (``SO_TIMESTAMPNS``, the same clock), not the time a
receiver got round to reading it. During steady the receivers read as messages arrive, one frame per
read (``--lazy-steady``: 0.8 s after publishing, as before; a segment that arrives later — the server's
keepalive ping — can then be merged into the unread one and lend it its later timestamp); during a
burst every 50 ms, without making the server wake them for every frame. Publishing goes through the
library's own ``django_websocket.publish()`` for ours (Django set up in the client process) and a plain
``PUBLISH`` of the raw payload to the same Redis channel for the references.

Exit status: 0 if every run was clean, 1 if a message was lost or a run errored, 2 if a server or Redis
could not start. Slowness is reported (next to the targets), never an error.
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import ctypes
import json
import math
import multiprocessing
import os
import platform
import resource
import secrets
import select
import shlex
import shutil
import signal
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
RECEIVERS = 2  # client processes by default: the load side has one core, and they only read lazily

# Payload: kind, 7-digit sequence, space, 19-digit time.time_ns(), padded to 32 bytes. Server frames are
# then 34 bytes (RFC 6455 §5.2: 2 header bytes, unmasked), like the echo bench's.
SYNC, STEADY, BURST = b"S", b"T", b"B"
SIZE = 32
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux
ANCILLARY = socket.CMSG_SPACE(TIMESPEC.size)
HEADER_MAX = 10  # bytes of the longest server frame header (RFC 6455 §5.2: 64-bit length, unmasked)
READ_EVERY = 0.05  # s between the client's reads during a burst
WATCH = 0.25  # s after each steady message during which CPU 0's use by other processes is noted
QUIET_MS = 10  # at most this much of it (one /proc/stat tick) and the message counts as undisturbed
# s between reads while opening sockets: 20,000 take minutes, longer than a keepalive ping's timeout
READ_WHILE_CONNECTING = 1.0
PR_SET_PDEATHSIG = 1  # prctl(2)


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
        self.frame_reads = False  # read one frame at a time (steady: exact per-message times)

    # connections ------------------------------------------------------------------------------------

    def connect(self) -> dict:
        self.expect, self.counts, self.sync_seen = [0] * self.n, [0] * self.n, [-1] * self.n
        t0 = time.perf_counter()
        read_at = t0 + READ_WHILE_CONNECTING
        for i in range(self.n):
            if time.perf_counter() > read_at:  # answer the keepalive pings of the sockets opened so far
                self.pump(0)
                read_at = time.perf_counter() + READ_WHILE_CONNECTING
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
        With ``frame_reads`` a read ends at the end of the next frame: a later segment (the
        server's keepalive ping, say) cannot lend the message its later timestamp.
        """
        socks, ancillary, stamps = self.socks, ANCILLARY, self.stamps
        events = self.ep.poll(timeout, 2 * self.n)
        for fd, _ev in events:
            i = self.index[fd]
            try:
                size = self._frame_end(i) if self.frame_reads else 262144
                data, anc, _flags, _addr = socks[i].recvmsg(size, ancillary)
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

    def _frame_end(self, i: int) -> int:
        """Bytes to read from socket *i* to the end of its next frame (peeked), or all there is."""
        head = self.rest[i] + self.socks[i].recv(HEADER_MAX, socket.MSG_PEEK)
        if len(head) < 2:
            return 262144
        length, size = head[1] & 0x7F, 2
        if length == 126:
            length, size = int.from_bytes(head[2:4], "big"), 4
        elif length == 127:
            length, size = int.from_bytes(head[2:10], "big"), 10
        if len(head) < size:
            return 262144  # the header is not all there yet: read what is
        return max(1, size + length - len(self.rest[i]))

    def _idle_until(self, deadline: float) -> None:
        """Sleep until *deadline* (monotonic), or with ``eager`` read whatever arrives meanwhile."""
        while (left := deadline - time.monotonic()) > 0:
            if not self.args.eager:
                time.sleep(left)
                return
            self.pump(min(left, 0.01))

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
            if self.sync_floor() >= 0:
                break
        last = seq
        while time.monotonic() < deadline and self.sync_floor() < last:
            self.pump(0.02)
        missing = self.sync_missing(last)
        if missing:
            raise Failed(
                f"{missing} of {self.n} sockets got no broadcast within {timeout:g} s"
                f" (the last publish returned {last_count})"
            )
        # Syncs sent before a socket subscribed may still be in flight elsewhere: none can follow `last`.
        return {"seconds": time.monotonic() - t0, "syncs": last + 1, "publish_returned": last_count}

    def sync_floor(self) -> int:
        """The lowest sync message number every socket has got (-1: some socket has none yet)."""
        return min(self.sync_seen)

    def sync_missing(self, last: int) -> int:
        """How many sockets have not got sync message *last*."""
        return sum(1 for s in self.sync_seen if s < last)

    def take_data(self) -> dict:
        """The current phase's deliveries and checks, handed over (errors are cleared: counted once)."""
        data = {
            "latencies": array.array("q", self.latencies),
            "seqs": array.array("q", self.seqs),
            "counts": self.counts,
            "slowest": self.slowest,
            "fastest": self.fastest,
            "last_rx": self.last_rx,
            "errors": dict(self.errors),
            "others": dict(self.others),
            "stamps": list(self.stamps),
        }
        self.errors.clear()
        self.others.clear()
        self.stamps = [0, 0]
        return data

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
                out["to_last_socket_max_ms"] = max(self.slowest) / 1e6
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
        self.frame_reads = True  # exact: a message's time is its own segment's, whatever follows it
        marks = [(clock.read(), redis_clock.read()[2])]
        t0 = time.monotonic()
        first_ns = time.time_ns()
        windows = []  # per message: server CPU and others' CPU 0 time in the WATCH s after publishing
        for k in range(seconds):
            before = clock.read()
            publish(payload(STEADY, k))
            self._idle_until(t0 + k + WATCH)
            after = clock.read()
            if before[2] is not None and after[2] is not None:
                server = after[2] - before[2]
                busy = after[3] - before[3] if before[3] is not None and after[3] is not None else None
                windows.append(
                    (round(server * 1e3), None if busy is None else round(max(0.0, busy - server) * 1e3))
                )
            self._idle_until(t0 + k + 0.8)
            self.drain()
            self._idle_until(t0 + k + 1)
        deadline = time.monotonic() + drain
        while self.complete < self.n and time.monotonic() < deadline:
            self.pump(0.02)
        marks.append((clock.read(), redis_clock.read()[2]))
        self.frame_reads = False
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


# ---------------------------------------------------------------------------------------------------
# several receiver processes: the same client, its sockets split over K processes


def shares(n: int, k: int) -> list[int]:
    """*n* sockets over *k* receivers, as evenly as possible (the first ones take the remainder)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _receiver(conn, args) -> None:
    """A receiver process: a FanoutClient for its share of the sockets, driven over *conn*.

    Requests are ``(operation, argument)``; every answer is ``(outcome, value, state)`` with
    outcome ``"ok"``, ``"failed"`` (a :class:`Failed`) or ``"error"``, and state the
    figures the coordinator polls: ``(reads, complete, sync floor)``.
    """
    raise_nofile()
    with contextlib.suppress(OSError, AttributeError):  # Linux: end with the coordinator, whatever happens
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    client = FanoutClient(args)
    while True:
        operation, argument = conn.recv()
        reads, value, outcome = 0, None, "ok"
        try:
            if operation == "connect":
                value = client.connect()
            elif operation == "measure":
                client._measure(*argument)
            elif operation == "pump":
                timeout, client.frame_reads = argument
                reads = client.pump(timeout)
            elif operation == "drain":
                client.frame_reads = argument
                client.drain()
            elif operation == "missing":
                value = client.sync_missing(argument)
            elif operation == "data":
                value = client.take_data()
            elif operation == "close":  # and what the last reads found (a late or extra message)
                value = (client.close(argument), dict(client.errors), dict(client.others), client.stamps)
        except Failed as exc:
            outcome, value = "failed", str(exc)
        except Exception as exc:  # a bug: report it as this run's error
            outcome, value = "error", f"receiver: {type(exc).__name__}: {exc}"
        state = (reads, client.complete, client.sync_floor() if client.sync_seen else -1)
        conn.send((outcome, value, state))
        if operation == "close":
            conn.close()
            return


class Fleet(FanoutClient):
    """The client with its sockets split over *args.receivers* processes (forked, on the same CPU).

    This process publishes and runs the phases (:class:`FanoutClient`'s code); each receiver
    holds and reads its share of the sockets. The coordinator's pump() is one pump() of every
    receiver at once; at the end of a phase their deliveries (kernel receive timestamps, the
    same clock everywhere) are gathered and the figures computed over all of them, as with
    one process. Every check is kept: each receiver checks its sockets got every message
    once, in order, and its errors come back with its data.
    """

    def __init__(self, args) -> None:
        self.args = args
        self.n = args.sockets
        self._reset_figures()
        self.stamps = [0, 0]
        self.frame_reads = False
        self.errors = collections.Counter()
        self.others = collections.Counter()
        self._floor = -1
        self.pipes, self.processes = [], []
        context = multiprocessing.get_context("fork")  # before Django is set up here: lean children
        for count in shares(self.n, max(1, min(args.receivers, self.n))):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_receiver, args=(theirs, argparse.Namespace(**{**vars(args), "sockets": count}))
            )
            process.daemon = True
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    def _reset_figures(self) -> None:
        self.phase, self.target, self.complete = SYNC, 0, 0
        self.latencies, self.seqs, self.last_rx = [], [], 0
        self.counts, self.slowest, self.fastest = [], [], []

    def _all(self, operation: str, argument=None, timeout: float | None = None) -> list:
        """Send one request to every receiver, wait for all answers; return their values."""
        for pipe in self.pipes:
            pipe.send((operation, argument))
        values, reads, complete, floors, failures = [], 0, 0, [], []
        for pipe in self.pipes:
            if timeout is not None and not pipe.poll(timeout):
                raise Failed(f"a receiver did not answer {operation!r} within {timeout:g} s")
            try:
                outcome, value, (r, c, f) = pipe.recv()
            except EOFError as exc:
                raise Failed(f"a receiver process ended during {operation!r}") from exc
            if outcome != "ok":
                failures.append(value)
            values.append(value)
            reads, complete = reads + r, complete + c
            floors.append(f)
        self.complete, self._floor = complete, min(floors)
        self._reads = reads
        if failures:
            raise Failed("; ".join(failures))
        return values

    def connect(self) -> dict:
        t0 = time.perf_counter()
        self._all("connect")
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "rate": self.n / seconds, "receivers": len(self.pipes)}

    def pump(self, timeout: float) -> int:
        self._all("pump", (timeout, self.frame_reads))
        return self._reads

    def drain(self) -> None:
        self._all("drain", self.frame_reads)

    def sync_floor(self) -> int:
        return self._floor

    def sync_missing(self, last: int) -> int:
        return sum(self._all("missing", last))

    def _measure(self, kind: bytes, count: int) -> None:
        self._all("measure", (kind, count))
        super()._measure(kind, count)
        self.counts = []

    def _result(self, kind: bytes, count: int, marks, first_ns: int, exact: bool = True) -> dict:
        self.counts = []
        for data in self._all("data"):
            self.latencies.extend(data["latencies"])
            self.seqs.extend(data["seqs"])
            self.counts.extend(data["counts"])
            self.slowest = [max(a, b) for a, b in zip(self.slowest, data["slowest"], strict=True)]
            self.fastest = [min(a, b) for a, b in zip(self.fastest, data["fastest"], strict=True)]
            self.last_rx = max(self.last_rx, data["last_rx"])
            self.errors.update(data["errors"])
            self.others.update(data["others"])
            self.stamps = [a + b for a, b in zip(self.stamps, data["stamps"], strict=True)]
        return super()._result(kind, count, marks, first_ns, exact)

    def close(self, timeout: float = 10.0) -> int:
        stragglers = 0
        with contextlib.suppress(Failed, OSError):
            for late, errors, others, stamps in self._all("close", timeout, timeout=timeout + 10):
                stragglers += late
                self.errors.update(errors)
                self.others.update(others)
                self.stamps = [a + b for a, b in zip(self.stamps, stamps, strict=True)]
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        return stragglers

    def clock(self, server_pid: int | None, server_cpu: int | None) -> loadgen.CpuClock:
        """A CpuClock whose own CPU time is this process's and the receivers' together."""
        return FleetClock(server_pid, server_cpu, [p.pid for p in self.processes])


class FleetClock(loadgen.CpuClock):
    """``loadgen.CpuClock`` counting the receiver processes' CPU time as the client's own."""

    def __init__(self, server_pid: int | None, server_cpu: int | None, pids: list[int]) -> None:
        super().__init__(server_pid, server_cpu)
        self.receivers = [loadgen.CpuClock(pid, None) for pid in pids]

    def read(self) -> tuple[float, float, float | None, float | None]:
        wall, own, server, busy = super().read()
        return wall, own + sum(r.read()[2] or 0.0 for r in self.receivers), server, busy


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
    parser.add_argument(
        "--eager", action="store_true", help="steady: read as messages arrive (else 0.8 s after publishing)"
    )
    parser.add_argument(
        "--receivers", type=int, default=1, help="processes the sockets are split over (default 1: this one)"
    )
    args = parser.parse_args(argv)
    raise_nofile()
    server_cpu = args.server_cpu if args.server_cpu >= 0 else None
    redis_clock = loadgen.CpuClock(args.redis_pid, None)
    result: dict = {}
    if args.receivers > 1:
        client = Fleet(args)  # forked before make_publisher() sets Django up
        clock = client.clock(args.server_pid, server_cpu)
    else:
        client = FanoutClient(args)
        clock = loadgen.CpuClock(args.server_pid, server_cpu)
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


def nofile_limit() -> int:
    """The open files a process started here may have: the hard RLIMIT_NOFILE (raise_nofile())."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return hard if hard != resource.RLIM_INFINITY else 65536


def most_sockets() -> int:
    """The most websockets one worker can hold: its open-file limit less 100 for everything else."""
    return nofile_limit() - 100


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = nofile_limit()
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_files(pid: int | None) -> str:
    """*pid*'s RLIMIT_NOFILE as ``soft/hard`` (from /proc), or ``?``."""
    with contextlib.suppress(OSError, TypeError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "?"


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
    # Our worker refuses handshakes past 90 % of --worker-connections (workers.CONNECTION_SHARE).
    extra = ["--worker-connections", str(max(2000, math.ceil(args.sockets / 0.9) + 100))]
    found = []
    if args.only in (None, "ours"):
        argv = [*echo_bench.GUNICORN, *extra, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"]
        found.append(echo_bench.Stack("ours", argv, env))
    if args.only in (None, "baseline") and (args.only or args.scenario == "fanout"):
        if 2 * args.sockets > most_sockets():
            print(f"baseline skipped: a Redis connection per socket: {2 * args.sockets:,} files in a worker")
        else:
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
        "--receivers", str(args.receivers),
        *([] if args.lazy_steady else ["--eager"]),
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
    ("steady", "to last socket ms, slowest msg", "to_last_socket_max_ms", ""),
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
    parser.add_argument(
        "--scenario",
        choices=["fanout", "broadcast"],
        default="fanout",
        help="broadcast: as many sockets as one worker can hold (the open-file limit less 100), 5 s"
        " steady, a 20-message burst, one round, no baseline",
    )
    parser.add_argument(
        "--sockets", type=int, help=f"websockets per run (default 1000; broadcast {most_sockets():,})"
    )
    parser.add_argument(
        "--receivers",
        type=int,
        default=RECEIVERS,
        help=f"client processes the sockets are split over (default {RECEIVERS})",
    )
    parser.add_argument(
        "--lazy-steady",
        action="store_true",
        help="steady: read each message 0.8 s after publishing it (before 2026-12-02), not as it arrives",
    )
    parser.add_argument(
        "--duration", type=int, help="steady seconds, one broadcast each (default 10; 5 quick or broadcast)"
    )
    parser.add_argument("--messages", type=int, help="burst size (default 200; 100 quick; 20 broadcast)")
    parser.add_argument("--rounds", type=int, help="runs per server (default 3; 1 quick or broadcast)")
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
    quick, broadcast = args.quick, args.scenario == "broadcast"
    args.sockets = args.sockets or (most_sockets() if broadcast else 1000)
    args.duration = args.duration or (5 if quick or broadcast else 10)
    args.messages = args.messages or (20 if broadcast else 100 if quick else 200)
    args.rounds = args.rounds or (1 if quick or broadcast else 3)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (5.0 if quick else 20.0)
    if not (
        1 <= args.sockets <= most_sockets()
        and 1 <= args.receivers <= 16
        and 1 <= args.duration <= 300
        and 1 <= args.messages <= 900  # WEBSOCKET_CHANNEL_QUEUE_SIZE is 1000: no slow-consumer closes
        and 1 <= args.rounds <= 20
        and 0 <= args.quiet_wait <= 600
    ):
        parser.error(
            f"need 1 <= sockets <= {most_sockets()} (the open-file limit less 100), 1 <= receivers <= 16,"
            " 1 <= duration <= 300, 1 <= messages <= 900, 1 <= rounds <= 20"
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
        f"CPU {LOADGEN_CPU}; {args.rounds} round(s) of {args.sockets} sockets ({args.receivers} receiver"
        f" process(es)): {args.duration} s steady, {args.messages}-message burst\n"
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
        echo_bench.migrate(env)
        servers: dict[str, echo_bench.Server] = {}
        try:
            for st in stacks(args, env):
                servers[st.name] = stack.enter_context(echo_bench.serve(st))
                print(
                    f"{st.name:9} port {servers[st.name].port}, worker pid {servers[st.name].worker_pid}"
                    f" (open files {open_files(servers[st.name].worker_pid)}):"
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
