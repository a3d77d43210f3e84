"""Idle memory per websocket, ours against the references in one run: ``python bench/memory.py``.

``python bench/memory.py [--sockets N] [--rounds R] [--breakdown [--frames N]]`` (issue 11, item 1).
Servers, each started by ``bench/run.py``'s ``serve()`` — one process (one gunicorn worker) pinned
to CPU 0, 127.0.0.1 on a free port, stopped (its whole process group) when its run ends:

* ours — ``gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket``,
  ``/echo/`` through test_project's default middleware, keepalive pings on (20 s, the default);
* gevent-websocket — ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker
  bench.bare_echo:app``;
* uvicorn — ``uvicorn bench.uvicorn_echo:app --ws websockets --loop uvloop --http httptools`` (a
  bare ASGI echo, uvicorn's 20 s pings on);
* Channels — ``daphne bench.channels_orm:application``, ``/echo/`` behind
  ``AllowedHostsOriginValidator(AuthMiddlewareStack(...))`` (Daphne's 20 s pings on); skipped when
  ``channels``/``daphne`` are not installed (``pip install -r bench/requirements.txt``).

Every websocket handshake carries the ``sessionid`` cookie of a logged-in user of a throwaway
SQLite database (``bench/run.py``'s ``make_session()``), so the servers that look at sessions get a
real one.

Per run, a fresh server: open a warm-up batch (``--warmup-sockets``, default 200), check each
echoes, close them, wait ``--settle`` s, read the measured process's RSS (``VmRSS`` of
``/proc/PID/status``: the gunicorn worker, else the server process); open N sockets (raw handshakes
from this one process, non-blocking, 50 in flight), wait ``--idle`` s (3), read the RSS again:
per socket = (after − before) / N. Then every socket (or ``--check K`` of them, spread over the
set) sends one masked text frame and must get its echo back; the server's pings are answered
with pongs all along, as a browser would. Rounds alternate the order of the servers; the table
gives each round, the median, and ours ÷ each reference (the median of per-round ratios).

``--breakdown`` runs ours alone, under ``tracemalloc`` (``bench/memory_gconf.py``): a snapshot
before and after the N sockets, and the allocation sites that grew the most, per socket; with
``--frames N`` (N > 1) each allocation keeps N frames, and the call stacks that grew most follow.

Exit status: 0 if every run was clean, 1 if a run errored (a handshake refused, a socket closed,
an echo missing or wrong, a server that died), 2 if a server did not start. Memory is reported,
never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import json
import os
import platform
import re
import resource
import select
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import loadgen  # noqa: E402
from bench import run as echo_bench  # noqa: E402
from bench.run import (  # noqa: E402
    DAPHNE,
    DAPHNE_LISTENING,
    GUNICORN,
    OUR_WORKER,
    PY,
    STOCK_WORKER,
    UVICORN,
    UVICORN_LISTENING,
    Server,
    Stack,
    pinned,
)

SERVER_CPU, LOADGEN_CPU = echo_bench.SERVER_CPU, echo_bench.LOADGEN_CPU
IN_FLIGHT = 50  # handshakes in flight
FD_SPARE = 100  # descriptors kept for everything but the sockets, in the server and here
VERSIONS = (
    "gevent",
    "greenlet",
    "gunicorn",
    "gevent-websocket",
    "websockets",
    "Django",
    "uvicorn",
    "uvloop",
    "httptools",
    "channels",
    "daphne",
    "twisted",
)
TOP = 25


# ---------------------------------------------------------------------------------------------------
# the servers


@dataclass
class Reference:
    """A server to measure: its stack, how ``serve()`` finds its port and measured pid, its path."""

    stack: Stack
    port_pattern: re.Pattern = echo_bench.LISTENING
    pid_pattern: re.Pattern | None = echo_bench.BOOTED
    path: str = "/echo/"

    @property
    def name(self) -> str:
        return self.stack.name


def gunicorn(worker: str, app: str, sockets: int, extra: tuple[str, ...] = ()) -> list[str]:
    # --worker-connections is gevent's pool size (no memory is reserved for it); ours allows 90 % of
    # it as websockets when WEBSOCKET_MAX_CONNECTIONS is None, so twice N leaves room for both.
    return [*GUNICORN, "--worker-connections", str(2 * sockets + 100), *extra, "-k", worker, app]


def channels_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("channels", "daphne"))


def access_log(args) -> tuple[str, ...]:
    """gunicorn options for ``--access-log`` / ``--access-log-format`` (none without them)."""
    if not (args.access_log or args.access_log_format):
        return ()
    return (
        "--access-logfile",
        "-",
        *(("--access-logformat", args.access_log_format) if args.access_log_format else ()),
    )


def references(args, env: dict[str, str]) -> tuple[list[Reference], list[str]]:
    """The servers of this run, ours first (then ours from ``--against DIR``); notes on the ones skipped."""
    logged = access_log(args)
    found = [
        Reference(
            Stack("ours", gunicorn(OUR_WORKER, "test_project.wsgi:websocket", args.sockets, logged), env)
        ),
    ]
    if args.against:
        # The other tree's package and test_project: first on the path, and its own directory.
        tree = str(Path(args.against).resolve())
        found.append(
            Reference(
                Stack(
                    "against",
                    gunicorn(OUR_WORKER, "test_project.wsgi:websocket", args.sockets, logged),
                    {**env, "PYTHONPATH": tree},
                    cwd=Path(tree),
                )
            )
        )
    found.append(
        Reference(
            Stack("gevent-websocket", gunicorn(STOCK_WORKER, "bench.bare_echo:app", args.sockets, logged))
        )
    )
    skipped = []
    if importlib.util.find_spec("uvicorn") is None:
        skipped.append("uvicorn skipped: not installed (pip install -r bench/requirements.txt)")
    else:
        found.append(Reference(Stack("uvicorn", UVICORN), UVICORN_LISTENING, None))
    if not channels_installed():
        skipped.append("Channels + Daphne skipped: not installed (pip install -r bench/requirements.txt)")
    else:
        found.append(
            Reference(
                Stack(
                    "channels",
                    DAPHNE,
                    {**env, "DJANGO_SETTINGS_MODULE": "bench.orm_settings"},
                ),
                DAPHNE_LISTENING,
                None,
            )
        )
    return found, skipped


def rss_kib(pid: int) -> int:
    """``VmRSS`` of *pid*, in KiB (what /proc calls kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------------------
# the load side: many idle websockets held by this one process


class Failed(Exception):
    """A run cannot go on (handshake refused, no progress before the deadline)."""


class Sockets:
    """Websockets to one server: raw non-blocking handshakes, then idle, answering the server's pings.

    One epoll for everything. Frames from the server are parsed (they are never masked): a ping is
    answered with a masked pong carrying its payload, an echo of ``loadgen.PAYLOAD`` is counted, a
    close frame or EOF marks the socket closed, anything else is an error.
    """

    def __init__(self, port: int, path: str, headers: list[str]):
        self.address = (loadgen.HOST, port)
        self.request = loadgen.upgrade_request(port, path, headers)
        self.epoll = select.epoll()
        self.pending: dict[int, tuple[socket.socket, bytearray]] = {}  # handshake in progress
        self.open: dict[int, socket.socket] = {}
        self.buffers: dict[int, bytearray] = {}
        self.echoes: dict[int, int] = {}
        self.closed: dict[str, int] = {}  # why, how many
        self.errors: dict[str, int] = {}
        self.pings = 0

    # --- events

    def _error(self, message: str) -> None:
        self.errors[message] = self.errors.get(message, 0) + 1

    def _drop(self, fd: int, why: str | None) -> None:
        sock = self.open.pop(fd, None) or self.pending.pop(fd, (None,))[0]
        self.buffers.pop(fd, None)
        if why:
            self.closed[why] = self.closed.get(why, 0) + 1
        if sock is not None:
            with contextlib.suppress(OSError):
                self.epoll.unregister(fd)
            sock.close()

    def _pending_event(self, fd: int, events: int) -> None:
        sock, head = self.pending[fd]
        if events & select.EPOLLOUT:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._drop(fd, None)
                raise Failed(f"connect: {os.strerror(err)}")
            sock.sendall(self.request)  # ~250 bytes into an empty send buffer
            self.epoll.modify(fd, select.EPOLLIN)
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(fd, None)
            raise Failed(f"handshake: {exc}") from exc
        if not data:
            self._drop(fd, None)
            raise Failed(f"closed during the handshake, after {bytes(head)[:200]!r}")
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return
        response = bytes(head[:end])
        if not response.startswith(b"HTTP/1.1 101") or loadgen.ACCEPT not in response:
            self._drop(fd, None)
            raise Failed(f"handshake refused: {response[:300]!r}")
        del self.pending[fd]
        self.open[fd] = sock
        self.buffers[fd] = bytearray(head[end + 4 :])
        self.echoes[fd] = 0
        self._frames(fd)

    def _read(self, fd: int) -> None:
        sock = self.open[fd]
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(fd, f"{type(exc).__name__}")
            return
        if not data:
            self._drop(fd, "EOF without a close frame")
            return
        self.buffers[fd] += data
        self._frames(fd)

    def _frames(self, fd: int) -> None:
        buf = self.buffers[fd]
        while len(buf) >= 2:
            opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if buf[1] & 0x80:
                self._drop(fd, None)
                self._error("a masked frame from the server")
                return
            if length == 126:
                if len(buf) < 4:
                    return
                length, offset = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 0x9:  # ping: answer as a browser would
                self.pings += 1
                with contextlib.suppress(OSError):
                    self.open[fd].send(loadgen.client_frame(payload[:125], opcode=0xA))
            elif opcode == 0xA:
                pass
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self._drop(fd, f"close frame {code}")
                return
            elif opcode == 0x1 and payload == loadgen.PAYLOAD:
                self.echoes[fd] += 1
            else:
                self._error(f"unexpected frame {opcode:#x} {payload[:60]!r}")

    def poll(self, timeout: float) -> None:
        for fd, events in self.epoll.poll(timeout):
            if fd in self.pending:
                self._pending_event(fd, events)
            elif fd in self.open:
                self._read(fd)

    # --- what a run does

    def handshake(self, count: int, timeout: float) -> list[int]:
        """Open *count* websockets, at most ``IN_FLIGHT`` handshakes at a time; their fds, in order."""
        deadline = time.monotonic() + timeout
        started: list[int] = []
        while len(started) < count or self.pending:
            while len(started) < count and len(self.pending) < IN_FLIGHT:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex(self.address)
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise Failed(f"connect: {os.strerror(err)} after {len(started)} sockets")
                self.pending[sock.fileno()] = (sock, bytearray())
                self.epoll.register(sock.fileno(), select.EPOLLOUT)
                started.append(sock.fileno())
            if time.monotonic() > deadline:
                raise Failed(f"{len(self.pending)} handshakes unanswered after {timeout:g} s")
            self.poll(0.05)
        return [fd for fd in started if fd in self.open]

    def idle(self, seconds: float) -> None:
        """Wait *seconds*, answering pings and noting closes."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.poll(min(left, 0.2))

    def check(self, fds: list[int], timeout: float) -> int:
        """Send one masked text frame on each of *fds*; how many echoed it within *timeout* s."""
        want = {}
        for fd in fds:
            if fd in self.open:
                want[fd] = self.echoes[fd] + 1
                try:
                    self.open[fd].send(loadgen.CLIENT_FRAME)
                except OSError as exc:
                    self._drop(fd, type(exc).__name__)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.echoes.get(fd, 0) >= n or fd not in self.open for fd, n in want.items()):
                break
            self.poll(0.05)
        return sum(1 for fd, n in want.items() if self.echoes.get(fd, 0) >= n)

    def close(self, fds: list[int] | None = None) -> None:
        """Close *fds*, or every socket (handshakes in progress too)."""
        for fd in [*self.open, *self.pending] if fds is None else fds:
            self._drop(fd, None)

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.epoll.close()


def spread(fds: list[int], count: int) -> list[int]:
    """*count* of *fds* evenly spread over the list (all of them when *count* is 0 or more)."""
    if count <= 0 or count >= len(fds):
        return list(fds)
    step = len(fds) / count
    return [fds[int(i * step)] for i in range(count)]


# ---------------------------------------------------------------------------------------------------
# one run


def measure(server: Server, ref: Reference, args, headers: list[str], snapshot=None) -> dict:
    """Warm up, RSS, N sockets, idle, RSS, echo check; the figures and errors of this run.

    *snapshot*, when given, is called with "before" and "after" (and the sockets) right after each
    RSS reading: ``--breakdown``'s tracemalloc snapshots.
    """
    result: dict = {"errors": {}}
    timeout = 60 + args.sockets / 100  # generous: 100 handshakes/s would still finish
    with Sockets(server.port, ref.path, headers) as client:
        try:
            warm = client.handshake(args.warmup_sockets, timeout)
            answered = client.check(warm, 30)
            if answered < args.warmup_sockets:
                raise Failed(f"warm-up: {answered} of {args.warmup_sockets} sockets echoed")
            client.close(warm)
            time.sleep(args.settle)
            result["rss_before_kib"] = rss_kib(server.worker_pid)
            if snapshot:
                snapshot("before", client)
            started = time.monotonic()
            fds = client.handshake(args.sockets, timeout)
            result["open_s"] = time.monotonic() - started
            result["handshakes_per_s"] = args.sockets / result["open_s"]
            client.idle(args.idle)
            result["rss_after_kib"] = rss_kib(server.worker_pid)
            result["open_at_after"] = len(client.open)
            if snapshot:
                snapshot("after", client)
            delta = result["rss_after_kib"] - result["rss_before_kib"]
            result["bytes_per_socket"] = delta * 1024 / args.sockets
            sample = spread(fds, args.check)
            result["checked"] = len(sample)
            result["answered"] = client.check(sample, 30 + len(sample) / 500)
            if result["answered"] < len(sample):
                result["errors"][
                    f"{len(sample) - result['answered']} of {len(sample)} sockets did not echo"
                ] = 1
            if result["open_at_after"] < args.sockets:
                result["errors"][
                    f"only {result['open_at_after']} of {args.sockets} sockets open at the 2nd RSS"
                ] = 1
        except (Failed, OSError) as exc:
            result["errors"][str(exc)] = 1
        result["pings"] = client.pings
        for why, count in client.closed.items():
            result["errors"][f"closed by the server: {why}"] = count
        for message, count in client.errors.items():
            result["errors"][message] = count
    return echo_bench.note_server_exit(result, server, f"{ref.name} server")


# ---------------------------------------------------------------------------------------------------
# report


def kib(value: float | None) -> str:
    return "—" if value is None else f"{value / 1024:.1f}"


def summary(refs: list[Reference], results: dict[str, list[dict]], rounds: int) -> str:
    """One row per server: KiB per socket per round, median, ours ÷ it, RSS, handshakes/s, echoes."""
    head = ["server", *(f"round {r + 1}" for r in range(rounds)), "median", "ours ÷ it"]
    head += ["RSS before", "RSS after", "handshakes/s", "echoed"]
    rows = [head]
    ours = [r.get("bytes_per_socket") for r in results.get("ours", [])]
    for ref in refs:
        runs = results[ref.name]
        per = [r.get("bytes_per_socket") for r in runs]
        med = statistics.median(per) if per and None not in per else None
        pairs = [o / p for o, p in zip(ours, per, strict=False) if o is not None and p]
        ratio = statistics.median(pairs) if len(pairs) == len(per) and pairs else None

        def median_of(key: str, runs=runs) -> float | None:
            values = [r[key] for r in runs if key in r]
            return statistics.median(values) if len(values) == len(runs) else None

        before, after = median_of("rss_before_kib"), median_of("rss_after_kib")
        rate = median_of("handshakes_per_s")
        echoed = [f"{r.get('answered', 0)}/{r.get('checked', '?')}" for r in runs]
        rows.append(
            [
                ref.name,
                *(kib(v) for v in per),
                kib(med),
                "" if ref.name == "ours" else "—" if ratio is None else f"{ratio:.2f}",
                "—" if before is None else f"{before / 1024:.1f} MiB",
                "—" if after is None else f"{after / 1024:.1f} MiB",
                "—" if rate is None else f"{rate:,.0f}",
                ", ".join(echoed),
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if c == 0 else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# --breakdown


def short(filename: str) -> str:
    """A path without the virtualenv's or the repository's prefix."""
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest if marker == "/site-packages/" else "stdlib/" + rest.split("/", 1)[-1]
    with contextlib.suppress(ValueError):
        return str(Path(filename).relative_to(ROOT))
    return filename


def breakdown(args, env: dict[str, str], headers: list[str], tmp: Path) -> int:
    """Ours alone under tracemalloc: the allocation sites that grew with the N sockets, per socket."""
    directory = tmp / "tracemalloc"
    directory.mkdir()
    config = ROOT / "bench" / "memory_gconf.py"
    ref = Reference(
        Stack(
            "ours",
            gunicorn(
                OUR_WORKER,
                "test_project.wsgi:websocket",
                args.sockets,
                ("-c", str(config), *access_log(args)),
            ),
            {**env, "BENCH_TRACEMALLOC_DIR": str(directory), "BENCH_TRACEMALLOC_FRAMES": str(args.frames)},
        )
    )
    extra: dict[str, dict] = {}

    def snapshot(label: str, client: Sockets) -> None:
        (directory / f"{label}.request").touch()
        deadline = time.monotonic() + 300
        while not (directory / f"{label}.snap").exists():
            if time.monotonic() > deadline:
                raise Failed(f"no {label} snapshot from the worker after 300 s")
            client.idle(0.2)  # keep answering pings meanwhile
        extra[label] = json.loads((directory / f"{label}.json").read_text())

    print(f"ours (tracemalloc on): {shlex.join(pinned(SERVER_CPU, ref.stack.argv))}\n")
    try:
        with echo_bench.serve(ref.stack, 60.0) as server:
            result = measure(server, ref, args, headers, snapshot)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    for err, count in result["errors"].items():
        print(f"ERROR: {err} (×{count})")
    if set(extra) != {"before", "after"}:
        return 1
    n = args.sockets
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    before = tracemalloc.Snapshot.load(str(directory / "before.snap")).filter_traces(ignore)
    after = tracemalloc.Snapshot.load(str(directory / "after.snap")).filter_traces(ignore)
    by_line = after.compare_to(before, "lineno")
    by_file = after.compare_to(before, "filename")
    traced = sum(s.size_diff for s in by_line)
    rss = result.get("bytes_per_socket")
    overhead = extra["after"]["tracemalloc_memory"] - extra["before"]["tracemalloc_memory"]
    print(
        f"{n} idle sockets on ours, {result.get('answered', 0)}/{result.get('checked', 0)} echoed afterwards"
    )
    print(f"  RSS growth per socket, tracemalloc on:            {rss or 0:9,.0f} B")
    print(f"  of which tracemalloc's own bookkeeping:           {overhead / n:9,.0f} B")
    print(f"  RSS growth per socket without that bookkeeping:   {(rss or 0) - overhead / n:9,.0f} B")
    print(f"  allocations traced by tracemalloc, per socket:    {traced / n:9,.0f} B")
    print(
        "  (traced sizes are what was requested: a large buffer counts in full even where its pages\n"
        "  were never touched, so they can exceed the RSS growth; memory allocated by C code with\n"
        "  malloc directly, outside Python's allocators, is not traced at all)"
    )
    print(f"\ntop {TOP} allocation sites by growth, per socket (tracemalloc, 1 frame: file:line):\n")
    rows = [("B/socket", "blocks/socket", "site")]
    for stat in sorted(by_line, key=lambda s: s.size_diff, reverse=True)[:TOP]:
        frame = stat.traceback[0]
        rows.append(
            (
                f"{stat.size_diff / n:,.1f}",
                f"{stat.count_diff / n:.2f}",
                f"{short(frame.filename)}:{frame.lineno}",
            )
        )
    shown = sum(s.size_diff for s in sorted(by_line, key=lambda s: s.size_diff, reverse=True)[:TOP])
    print(aligned(rows))
    print(f"\n(these {TOP} sites: {shown / n:,.0f} B of the {traced / n:,.0f} B traced per socket)")
    print("\nby file, top 12:\n")
    rows = [("B/socket", "blocks/socket", "file")]
    for stat in sorted(by_file, key=lambda s: s.size_diff, reverse=True)[:12]:
        rows.append(
            (f"{stat.size_diff / n:,.1f}", f"{stat.count_diff / n:.2f}", short(stat.traceback[0].filename))
        )
    print(aligned(rows))
    if args.frames > 1:
        print_tracebacks(after.compare_to(before, "traceback"), n)
    return 1 if result["errors"] else 0


def print_tracebacks(stats: list, n: int, top: int = 10) -> None:
    """The *top* call stacks that grew most, per socket (``--frames`` > 1), oldest frame first."""
    print(f"\ntop {top} call stacks by growth, per socket (tracemalloc, --frames deep):")
    for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        print(f"\n{stat.size_diff / n:,.1f} B/socket, {stat.count_diff / n:.2f} blocks/socket")
        for frame in stat.traceback:
            print(f"    {short(frame.filename)}:{frame.lineno}")


def aligned(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if c < len(row) - 1 else cell
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


# ---------------------------------------------------------------------------------------------------


def raise_fd_limit(sockets: int) -> tuple[int, str | None]:
    """Raise this process's descriptor limit (the servers inherit it); cap *sockets* to fit in it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, sockets + FD_SPARE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if sockets + FD_SPARE > limit:
        capped = limit - FD_SPARE
        return capped, (
            f"--sockets {sockets} capped to {capped}: the descriptor limit is {limit} per process "
            f"(the hard limit), and the server and this process each need N + {FD_SPARE}"
        )
    return sockets, None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=5000, help="idle websockets per run (default 5000)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per server, alternating order (default 2)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="ours only, under tracemalloc: the allocation sites that grow per socket",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=1,
        help="--breakdown: frames per trace (default 1); above 1 the top call stacks are printed too",
    )
    parser.add_argument("--only", action="append", help="measure only this server (repeatable; ours is kept)")
    parser.add_argument("--warmup-sockets", type=int, default=200, help="warm-up batch (default 200)")
    parser.add_argument("--settle", type=float, default=2.0, help="s between warm-up and 1st RSS (default 2)")
    parser.add_argument(
        "--idle", type=float, default=3.0, help="s between the last handshake and 2nd RSS (3)"
    )
    parser.add_argument(
        "--check", type=int, default=0, help="sockets that must echo afterwards, spread (default 0: all)"
    )
    parser.add_argument("--anonymous", action="store_true", help="send no session cookie")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="gunicorn servers write an access log (--access-logfile -, gunicorn's default format)",
    )
    parser.add_argument(
        "--access-log-format", metavar="FMT", help="with this --access-log-format (implies --access-log)"
    )
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="also measure ours from another checkout (a `git archive` of the commit before), as against",
    )
    args = parser.parse_args(argv)
    if not (1 <= args.sockets <= 1_000_000 and 1 <= args.rounds <= 20 and 1 <= args.warmup_sockets <= 5000):
        parser.error("need 1 <= sockets <= 1,000,000, 1 <= rounds <= 20, 1 <= warmup-sockets <= 5000")
    if not (0 <= args.settle <= 60 and 0 <= args.idle <= 600):
        parser.error("need 0 <= settle <= 60 and 0 <= idle <= 600")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep the load side off the servers' CPU
    asked = args.sockets
    args.sockets, capped = raise_fd_limit(args.sockets)
    print(f"$ {shlex.join([PY, *sys.argv])}")
    print(echo_bench.versions(VERSIONS))
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs; servers on CPU {SERVER_CPU}, this process on "
        f"CPU {LOADGEN_CPU}; fd limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
    )
    if capped:
        print(f"NOTE: {capped}")
    print(
        f"{args.sockets} idle sockets per run (asked {asked}), {args.warmup_sockets} warm-up, "
        f"{args.settle:g} s settle, {args.idle:g} s idle; {IN_FLIGHT} handshakes in flight; "
        + ("every socket" if args.check <= 0 else f"{min(args.check, args.sockets)} sockets")
        + " must echo afterwards"
    )
    if access_log(args):
        print(f"gunicorn servers write an access log: {shlex.join(access_log(args))}")
    missing = [p for p in ("django_websocket/workers.py", "test_project/wsgi.py") if not (ROOT / p).exists()]
    if missing:
        print(f"our stack is not there ({', '.join(missing)} missing)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="django-websocket-memory-") as tmp:
        env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
        }
        headers: list[str] = []
        if args.anonymous:
            print("anonymous: no session cookie sent")
        else:
            try:
                headers = [f"Cookie: sessionid={echo_bench.make_session(env)}"]
                print(
                    "every handshake sends the sessionid cookie of a logged-in user (throwaway SQLite db). "
                    "Django's session and user are lazy: ours' middleware runs, but /echo/ reads neither, "
                    "so neither is loaded; Channels' AuthMiddlewareStack loads both on every connect"
                )
            except (subprocess.SubprocessError, AttributeError) as exc:
                print(f"anonymous: could not create a session ({exc})")
        print()
        if args.breakdown:
            return breakdown(args, env, headers, Path(tmp))

        refs, skipped = references(args, env)
        if args.only:
            refs = [r for r in refs if r.name in ("ours", "against") or r.name in args.only]
        for note in skipped:
            print(note)
        for ref in refs:
            print(f"{ref.name:16} {shlex.join(pinned(SERVER_CPU, ref.stack.argv))}")
        print()
        results: dict[str, list[dict]] = {ref.name: [] for ref in refs}
        errors = []
        for rnd in range(args.rounds):
            order = refs if rnd % 2 == 0 else refs[::-1]  # alternate who goes first
            for ref in order:
                try:
                    with echo_bench.serve(ref.stack, 60.0, ROOT, ref.port_pattern, ref.pid_pattern) as server:
                        result = measure(server, ref, args, headers)
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 2
                results[ref.name].append(result)
                for err, count in result["errors"].items():
                    errors.append(f"round {rnd + 1}, {ref.name}: {err} (×{count})")
                print(
                    f"  round {rnd + 1}/{args.rounds}  {ref.name:16} "
                    f"{kib(result.get('bytes_per_socket'))} KiB/socket  "
                    f"(RSS {result.get('rss_before_kib', 0) / 1024:.1f} → "
                    f"{result.get('rss_after_kib', 0) / 1024:.1f} MiB, "
                    f"{result.get('handshakes_per_s', 0):,.0f} handshakes/s, "
                    f"{result.get('answered', 0)}/{result.get('checked', 0)} echoed, "
                    f"{result.get('pings', 0)} pings answered)",
                    file=sys.stderr,
                    flush=True,
                )

    print()
    print(
        f"idle memory per websocket, KiB (RSS growth ÷ {args.sockets} sockets); "
        "RSS and handshakes/s are medians"
    )
    print(summary(refs, results, args.rounds))
    print(
        "\nours ÷ it = median over rounds of ours ÷ that server in the same round: below 1, ours is lighter."
    )
    if errors:
        print("\nERRORS:\n  " + "\n  ".join(errors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
