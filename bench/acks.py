"""Acknowledged client messages: send → ack round trip against a plain echo, in one run.

``python bench/acks.py`` (``--messages N``, ``--rounds R``). It starts a Redis server of its own (a
free port on 127.0.0.1, no persistence) and one gunicorn worker of ours pinned to CPU 0
(``DJANGO_SETTINGS_MODULE=bench.acks_settings``, views in ``bench/acks_urls.py``), then, per round, one
client socket per mode sends N messages one at a time, each after the previous answer:

* ``echo`` — a plain text message, echoed back by the view (the reference);
* ``ack`` — ``{"ws": "send", "id", "data"}`` answered ``{"ws": "ack", "id"}`` by ``websocket.ack()``;
* ``acked`` — the same through ``websocket.acknowledging()``: one ``SET NX EX`` in Redis per id first.

Round trips are timed in the client (``perf_counter`` from before ``send`` to the answer read); modes
interleave within each round so that drift cancels. Prints p50/p99 per mode and the ratio to echo.
Exit status: 0, or 1 if an answer was missing or wrong, 2 if Redis or the server did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from bench import fanout  # noqa: E402
from bench import run as echo_bench  # noqa: E402
from django_websocket.acks import send_frame  # noqa: E402

MODES = ("echo", "ack", "acked")
PAYLOAD = json.dumps({"handle": "bench", "message": "x" * 64, "color": "#112233"})


def round_trips(port: int, mode: str, count: int, run: int) -> list[float]:
    """*count* sequential round trips of *mode* on one socket, in seconds."""
    times = []
    with connect(f"ws://127.0.0.1:{port}/{mode}/", open_timeout=10, close_timeout=2) as websocket:
        for n in range(count):
            message_id = f"bench-{run}-{mode}-{n}"
            frame = PAYLOAD if mode == "echo" else send_frame(message_id, PAYLOAD)
            expected = (
                PAYLOAD
                if mode == "echo"
                else json.dumps({"ws": "ack", "id": message_id}, separators=(",", ":"))
            )
            started = time.perf_counter()
            websocket.send(frame)
            answer = websocket.recv(timeout=10)
            times.append(time.perf_counter() - started)
            if answer != expected:
                raise RuntimeError(f"{mode}: expected {expected!r}, got {answer!r}")
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="round trips per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-acks-") as tmp, contextlib.ExitStack() as stack:
        try:
            redis_port, _pid, _argv = stack.enter_context(fanout.redis_server(tmp))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {
            "DJANGO_SETTINGS_MODULE": "bench.acks_settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_REDIS_URL": redis_url,
            "REDIS_URL": redis_url,
        }
        argv = [*echo_bench.GUNICORN, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"]
        try:
            server = stack.enter_context(echo_bench.serve(echo_bench.Stack("ours", argv, env)))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(echo_bench.versions(("gunicorn", "gevent", "redis")))
        results: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            for run in range(args.rounds):
                for mode in MODES if run % 2 == 0 else reversed(MODES):
                    results[mode] += round_trips(server.port, mode, args.messages, run)
        except (RuntimeError, OSError, TimeoutError, ConnectionClosed) as error:
            print(f"error: {error}\n{server.tail()}", file=sys.stderr)
            return 1
    echo_p50 = statistics.median(results["echo"])
    print(f"{args.rounds} rounds x {args.messages} round trips per mode, one socket at a time, Redis broker")
    print(f"{'mode':<6} {'p50 µs':>8} {'p99 µs':>8} {'p50/echo':>9}")
    for mode in MODES:
        p50, p99 = statistics.median(results[mode]), percentile(results[mode], 0.99)
        print(f"{mode:<6} {p50 * 1e6:>8.0f} {p99 * 1e6:>8.0f} {p50 / echo_p50:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
