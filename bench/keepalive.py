"""CPU per keepalive round, in one process: ours against another checkout, interleaved.

``python bench/keepalive.py --against /tmp/before`` (``--sockets N``, ``--interval S``,
``--seconds S``, ``--rounds R``). Each measurement is a fresh subprocess pinned to CPU 1 (``taskset``;
none if it is missing) with the checkout first on ``PYTHONPATH``: N socket pairs, each with a
``WebSocket`` pinging every S seconds whose view is reading (``receive()``, as ``for message in
websocket`` does) and a client greenlet answering every ping with a pong. It counts the process's
CPU over ``--seconds`` with pings on, then again with pings off (the same sockets otherwise), and
prints the difference per round. The clients' work is included, the same in every checkout: compare
checkouts, not the absolute figure. Runs alternate between checkouts ``--rounds`` times.

Nothing is asserted: figures are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU = "1"


def answer_pings(sock) -> None:
    """The client: answer each server ping (``0x89``, 4-byte payload) with a masked pong."""
    while True:
        data = sock.recv(64)
        if not data:
            return
        while len(data) >= 6 and data[0] == 0x89:
            sock.sendall(b"\x8a\x84\0\0\0\0" + data[2:6])  # mask key zero: the payload as is
            data = data[6:]


def cpu_seconds(sockets: int, interval: float | None, seconds: float) -> tuple[float, float]:
    """The process's CPU and the wall time over *seconds*, *sockets* open, pinging every *interval*."""
    import gevent
    import gevent.socket

    from django_websocket.connection import WebSocket

    pairs, greenlets = [], []
    for _ in range(sockets):
        server, client = gevent.socket.socketpair()
        websocket = WebSocket(server, server.recv, ping_interval=interval, ping_timeout=5.0)
        pairs.append((websocket, client))
        greenlets += [gevent.spawn(websocket.receive), gevent.spawn(answer_pings, client)]
    gevent.sleep(2 * (interval or 0.1))  # every socket in its rhythm
    cpu, wall = time.process_time(), time.monotonic()
    gevent.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for websocket, client in pairs:
        websocket._abort()
        client.close()
    gevent.killall(greenlets)
    return cpu, wall


def child(args) -> None:
    """In the subprocess: measure with and without pings, print µs per round and the import path."""
    import django_websocket

    on, wall = cpu_seconds(args.sockets, args.interval, args.seconds)
    off, _ = cpu_seconds(args.sockets, None, args.seconds)
    rounds = args.sockets * wall / args.interval
    where = Path(django_websocket.__file__).parent.parent
    print(f"{1e6 * (on - off) / rounds:.1f} {on:.3f} {off:.3f} {rounds:.0f} {where}")


def measure(tree: Path, args) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
    argv += ["--sockets", str(args.sockets), "--interval", str(args.interval), "--seconds", str(args.seconds)]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", CPU, *argv]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, timeout=600, check=True)
    return out.stdout.split()


def main(argv=None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.2, help="ping interval, seconds")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds, with and without pings")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--against", action="append", default=[], help="another checkout, measured too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    trees = [("ours", ROOT)] + [("@" + Path(d).resolve().name, Path(d).resolve()) for d in args.against]
    head = f"{args.sockets} sockets, a ping every {args.interval} s each, {args.seconds} s measured"
    print(f"{head}, CPU {CPU}")
    print(f"{'tree':>16}  {'µs/round':>8}  {'CPU on s':>8}  {'CPU off s':>9}  {'rounds':>7}  imported from")
    for _ in range(args.rounds):
        for name, tree in trees:
            per_round, on, off, rounds, where = measure(tree, args)
            print(f"{name:>16}  {per_round:>8}  {on:>8}  {off:>9}  {rounds:>7}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
