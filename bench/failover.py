"""Failover: from a Redis primary's SIGKILL to the first message delivered by the new primary.

``python bench/failover.py`` (``--rounds N``, ``--sockets N``, ``--json FILE``; ``--cluster``: Redis
Cluster instead of Sentinel). Each round starts:

* a Sentinel group of its own (``tests/redis_sentinel.py``: a primary, a replica, three sentinels on free
  ports of 127.0.0.1, quorum 2, ``down-after-milliseconds`` 1000, ``failover-timeout`` 5000), or with
  ``--cluster`` a six-node cluster (``tests/redis_cluster.py``: ``cluster-node-timeout`` 1000) whose
  master serving the room's channel is the one killed;
* one gunicorn worker of ours pinned to CPU 0: ``gunicorn -k django_websocket.workers.GeventWebSocketWorker
  test_project.wsgi:websocket`` with ``WEBSOCKET_REDIS_URL`` = the group's ``redis+sentinel://`` URL,
  ``DJANGO_SETTINGS_MODULE=test_project.settings``, ``DJANGO_DEBUG=0``, a throwaway SQLite database.

This process (pinned to CPU 1) opens N websockets (default 100) to test_project's ``/broadcast/<room>/``
(``forward=True``: no resume protocol, the hub recovers from the channel's history), waits until each has
received a sync message, then publishes ``"<seq> <time_ns>"`` with ``django_websocket.publish()`` every
10 ms from a thread (a publish during the election raises ``PublishError``: counted, not retried), and
SIGKILLs the primary. It reports, per round:

* ``failover``: kill → every sentinel names the replica as primary (and the replica says it is); with
  ``--cluster``: kill → a surviving node's ``CLUSTER SLOTS`` names another master for the room's slot
  (polled every 10 ms);
* ``publish_ok``: kill → the first ``publish()`` begun after it that returned an id (the publisher's own
  client has found the new primary): no delivery can come earlier;
* ``first``: kill → the first delivery, on any socket, of a message whose ``publish()`` began once the
  primary was dead (so it can only have come through the new primary);
* ``all``: kill → every socket has had such a message;
* ``raised``: publishes that raised during the election; ``lost``: messages whose publish returned an id
  but that some socket never received (×sockets); ``dup``: messages a socket received twice; ``closed``:
  sockets the server closed.

Delivery times are taken by a reader thread per socket when ``recv()`` returns (a few hundred µs after
the kernel got the frame at worst: nothing next to seconds). Exit status: 0 if every round was clean
(no socket closed, nothing lost or repeated), 1 otherwise, 2 if the group or the server did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import run as echo_bench  # noqa: E402

PY = sys.executable
SERVER_CPU, LOADGEN_CPU = echo_bench.SERVER_CPU, echo_bench.LOADGEN_CPU
PUBLISH_EVERY = 0.01  # s
AFTER = 3.0  # s of publishing after the first post-failover delivery


class Socket(threading.Thread):
    """A websocket to ``/broadcast/<room>/`` read by its own thread; ``received``: seq -> receive time."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        super().__init__(daemon=True)
        self.websocket = connect(url, open_timeout=10, close_timeout=1)
        self.received: dict[int, int] = {}
        self.duplicates = 0
        self.closed = False

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for text in self.websocket:
                seq = int(str(text).split()[0])
                if seq in self.received:
                    self.duplicates += 1
                self.received.setdefault(seq, time.time_ns())
        except ConnectionClosed:
            pass
        self.closed = not getattr(self, "closing", False)

    def close(self) -> None:
        self.closing = True
        self.websocket.close()


class Publisher(threading.Thread):
    """``publish(channel, "<seq> <time_ns>")`` every 10 ms; ``sent``: seq -> whether an id came back."""

    def __init__(self, channel: str, first_seq: int) -> None:
        super().__init__(daemon=True)
        self.channel = channel
        self.seq = first_seq
        self.sent: dict[int, bool] = {}
        #: seq -> time.time_ns() when its publish() began, and when it returned an id.
        self.started: dict[int, int] = {}
        self.returned: dict[int, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        from django_websocket import publish
        from django_websocket.exceptions import PublishError

        while not self.stopping.wait(PUBLISH_EVERY):
            self.started[self.seq] = time.time_ns()
            try:
                publish(self.channel, f"{self.seq} {time.time_ns()}")
                self.returned[self.seq] = time.time_ns()
                self.sent[self.seq] = True
            except PublishError:
                self.sent[self.seq] = False
            self.seq += 1

    def first_begun_after(self, when: int) -> int:
        """The first seq whose publish() began at or after *when* (ns), or will."""
        seq = self.seq
        if self.started.get(seq, when) < when:
            return seq + 1  # in flight since before *when*
        while self.started.get(seq - 1, 0) >= when:
            seq -= 1
        return seq

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.01)  # polling a condition other threads fill, with a deadline


def one_round(args, tmp: str) -> dict:
    """Start a group and a worker, open the sockets, publish, kill the primary; return the figures."""
    from django.test import override_settings

    from django_websocket import publish
    from tests.redis_cluster import RedisClusterGroup
    from tests.redis_sentinel import SentinelGroup

    room = f"failover-{secrets.token_hex(4)}"
    started = ClusterTarget(RedisClusterGroup(), f"broadcast:{room}") if args.cluster else SentinelGroup()
    with started as group, override_settings(WEBSOCKET_REDIS_URL=group.url()):
        env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_REDIS_URL": group.url(),
            "REDIS_URL": group.url(),
        }
        argv = [*echo_bench.GUNICORN, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"]
        with echo_bench.serve(echo_bench.Stack("ours", argv, env)) as server:
            url = f"ws://127.0.0.1:{server.port}/broadcast/{room}/"
            sockets = [Socket(url) for _ in range(args.sockets)]
            for sock in sockets:
                sock.start()
            try:
                return measure(group, sockets, publish, f"broadcast:{room}")
            finally:
                for sock in sockets:
                    sock.close()


class ClusterTarget:
    """A Redis Cluster as ``measure()`` uses a Sentinel group: its primary is the room's master."""

    def __init__(self, cluster, channel: str) -> None:
        self.cluster = cluster
        self.channel = channel
        self.killed = None

    def __enter__(self) -> ClusterTarget:
        self.cluster.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cluster.__exit__(*exc_info)

    def url(self) -> str:
        return self.cluster.url

    def key(self) -> str:
        from django_websocket.brokers import get_broker

        return get_broker().key(self.channel)

    def kill_primary(self) -> None:
        self.killed = self.cluster.master_of(self.key())
        self.killed.kill()
        self.killed_at = time.monotonic()

    def wait_for_failover(self, timeout: float) -> float:
        """Seconds from the kill until a survivor's slot map names another master (polled every 10 ms)."""
        self.cluster.wait_for_takeover(self.key(), self.killed, timeout, every=0.01)
        taken_over = time.monotonic() - self.killed_at
        self.cluster.wait_until_ok(timeout)
        return taken_over


def measure(group, sockets: list[Socket], publish, channel: str) -> dict:
    """Sync every socket, publish every 10 ms, SIGKILL the primary, wait; return the round's figures."""
    sync = 0
    deadline = time.monotonic() + 20
    while not all(sock.received for sock in sockets):  # every socket subscribed: nothing in flight before
        if time.monotonic() > deadline:
            raise RuntimeError("sockets never got the sync messages")
        publish(channel, f"{sync} 0")
        sync += 1
        time.sleep(0.05)  # the publish rate while the sockets subscribe, not synchronisation
    publisher = Publisher(channel, first_seq=sync + 1000)
    publisher.start()
    try:
        time.sleep(1.0)  # one second of steady traffic before the kill
        killed = time.time_ns()
        group.kill_primary()  # returns once the process is gone: later publishes reach a new primary or fail
        dead = time.time_ns()
        killed_seq = publisher.first_begun_after(dead)
        failover = group.wait_for_failover(timeout=60)
        wait_for(
            # max() walks the dict in C, under the GIL: a reader thread cannot add to it meanwhile
            lambda: any(max(sock.received, default=-1) >= killed_seq for sock in sockets),
            60,
            "a message published after the kill",
        )
        time.sleep(AFTER)  # a steady stretch after the failover, so losses would show
    finally:
        publisher.stop()
    last = max(seq for seq, ok in publisher.sent.items() if ok)
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: all(last in sock.received for sock in sockets), 5, "the last message")
    after = [
        min((t for seq, t in list(sock.received.items()) if seq >= killed_seq), default=None)
        for sock in sockets
    ]
    published = [seq for seq, ok in publisher.sent.items() if ok]
    ok_after = [t for seq, t in publisher.returned.items() if seq >= killed_seq]
    return {
        "failover_s": failover,
        "publish_ok_s": (min(ok_after) - killed) / 1e9 if ok_after else None,
        "first_s": (min(t for t in after if t) - killed) / 1e9 if any(after) else None,
        "all_s": (max(after) - killed) / 1e9 if all(after) else None,
        "published": len(published),
        "raised": sum(not ok for ok in publisher.sent.values()),
        "lost": sum(seq not in sock.received for sock in sockets for seq in published),
        "dup": sum(sock.duplicates for sock in sockets),
        "closed": sum(sock.closed for sock in sockets),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--cluster", action="store_true", help="a Redis Cluster instead of Sentinel")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "test_project.settings")
    import django

    django.setup()
    print(f"$ {shlex.join([PY, 'bench/failover.py', *argv])}")
    print(
        f"{echo_bench.versions()}; {args.rounds} round(s) of {args.sockets} sockets, a publish every 10 ms\n"
    )
    rounds = []
    with tempfile.TemporaryDirectory(prefix="django-websocket-failover-") as tmp:
        for number in range(args.rounds):
            try:
                result = one_round(args, tmp)
            except RuntimeError as exc:
                print(f"round {number + 1}: {exc}", file=sys.stderr)
                return 2
            rounds.append(result)
            counts = ", ".join(
                f"{key} {result[key]}" for key in ("published", "raised", "lost", "dup", "closed")
            )
            print(
                f"round {number + 1}/{args.rounds}: failover {result['failover_s']:.2f} s, first publish "
                f"ok {_s(result['publish_ok_s'])}, first delivery {_s(result['first_s'])}, all sockets "
                f"{_s(result['all_s'])}; {counts}"
            )
    for key in ("failover_s", "publish_ok_s", "first_s", "all_s"):
        values = [r[key] for r in rounds if r[key] is not None]
        if values:
            print(f"{key[:-2]:9} median {statistics.median(values):.2f} s, max {max(values):.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=2))
    clean = all(not r["lost"] and not r["dup"] and not r["closed"] and r["all_s"] for r in rounds)
    return 0 if clean else 1


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
