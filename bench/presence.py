"""Presence churn: 2,000 sockets joining, then leaving, one room at 200/s; what it costs each member.

``python bench/presence.py`` (``--sockets N``, ``--rate R``, ``--against DIR``). It starts a Redis
server of its own (a free port on 127.0.0.1) and one gunicorn worker of ours pinned to CPU 0
(``tests.settings``, ``REDIS_URL``), from this checkout, and with ``--against DIR`` from another
checkout too (the before of a change: each is measured in turn, the same way).

This process (pinned to CPU 1, one thread, non-blocking sockets) opens N websockets to
``/resume-room/<room>/?name=m<n>`` (``forward=True, resume=True, presence=...``) at R per second,
then closes them at R per second, reading everything each socket receives. It prints, per checkout:

* presence frames and bytes received per client (``presence``, ``presence_diff``, ``join``, ``leave``
  frames): mean and max over the clients, and the joins and leaves they carried (a worker that cannot
  keep up shows here: its clients close before the backlog reaches them);
* the worker's CPU seconds over the whole churn (from ``/proc/<pid>/stat``), and per join + leave.

Exit status 0; 2 if a server could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import run as echo_bench  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.test_fanout_integration import RawClient  # noqa: E402

PRESENCE_KINDS = {"presence", "presence_diff", "join", "leave"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Member:
    """One client's socket and what it received about presence."""

    def __init__(self, port: int, room: str, n: int) -> None:
        self.client = RawClient.connect(port, f"/resume-room/{room}/?name=m{n}")
        self.client.sock.setblocking(False)
        self.read = 0
        self.frames = 0
        self.bytes = 0
        self.changes = 0  # joins and leaves received, however batched

    def count(self) -> None:
        for text in self.client.messages[self.read :]:
            if isinstance(text, str) and text.startswith('{"ws":'):
                frame = json.loads(text)
                if frame.get("ws") in PRESENCE_KINDS:
                    self.frames += 1
                    self.bytes += len(text.encode())
                    self.changes += len(frame.get("joins", ())) + len(frame.get("leaves", ()))
                    self.changes += frame.get("ws") in ("join", "leave")
        self.read = len(self.client.messages)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def churn(port: int, sockets: int, rate: float) -> list[Member]:
    """Open *sockets* at *rate* per second, then close them at the same rate; read all along."""
    selector = selectors.DefaultSelector()
    members: list[Member] = []
    room = f"churn-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()

    def pump(until: float) -> None:
        while (remaining := until - time.monotonic()) > 0:
            for key, _ in selector.select(min(remaining, 0.01)):
                member = key.data
                try:
                    member.client.feed(member.client.sock.recv(262144))
                except (BlockingIOError, ConnectionResetError):
                    continue
                member.count()

    for n in range(sockets):
        member = Member(port, room, n)
        members.append(member)
        selector.register(member.client.sock, selectors.EVENT_READ, member)
        pump(started + (n + 1) / rate)
    pump(time.monotonic() + 1.0)  # the last joins reach everyone
    leaving = time.monotonic()
    for n, member in enumerate(members):
        selector.unregister(member.client.sock)
        member.client.sock.close()
        pump(leaving + (n + 1) / rate)
    selector.close()
    return members


def measure(tree: Path, redis_url: str, sockets: int, rate: float) -> dict:
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "REDIS_URL": redis_url, "PYTHONPATH": str(tree)}
    env["WEBSOCKET_MAX_CONNECTIONS"] = str(sockets + 100)
    argv = [*echo_bench.GUNICORN, "--worker-connections", str(sockets + 200), "-k", echo_bench.OUR_WORKER]
    argv.append("test_project.wsgi:websocket")
    stack = echo_bench.Stack(f"@{tree.name}", argv, env, cwd=tree)
    with echo_bench.serve(stack) as server:
        before = cpu_seconds(server.worker_pid)
        members = churn(server.port, sockets, rate)
        cpu = cpu_seconds(server.worker_pid) - before
    frames = [member.frames for member in members]
    changes = [member.changes for member in members]
    sizes = [member.bytes for member in members]
    return {
        "changes mean": statistics.mean(changes),
        "frames mean": statistics.mean(frames),
        "frames max": max(frames),
        "KB mean": statistics.mean(sizes) / 1024,
        "KB max": max(sizes) / 1024,
        "worker CPU s": cpu,
        "CPU ms per join+leave": cpu / sockets * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="joins (then leaves) per second")
    parser.add_argument("--against", type=Path, help="another checkout to measure too")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.sockets)), hard))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    socket.setdefaulttimeout(10)
    trees = [ROOT] + ([args.against.resolve()] if args.against else [])
    print(f"{echo_bench.versions()}; {args.sockets} sockets joining then leaving one room at {args.rate:g}/s")
    results = {}
    with RedisServer() as redis_server:
        for tree in trees:
            results[str(tree)] = measure(tree, redis_server.url, args.sockets, args.rate)
    print(f"{'figure':<24}" + "".join(f"{str(tree)[-26:]:>28}" for tree in trees))
    for figure in next(iter(results.values())):
        print(f"{figure:<24}" + "".join(f"{results[str(tree)][figure]:>28.2f}" for tree in trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
