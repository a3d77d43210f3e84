"""Shards: a fan-out burst over one Redis against a 3-master Redis Cluster, in the same run.

``python bench/shards.py`` (``--quick``, ``--sockets N``, ``--rooms N``, ``--messages N``, ``--rounds N``,
``--json FILE``). It starts, on free ports of 127.0.0.1:

* one ``redis-server`` (``tests/redis_server.py``: no persistence), and
* a Redis Cluster of three masters and three replicas (``tests/redis_cluster.py``), every ``redis-server``
  of both pinned to CPU 1 with the client;
* two servers of ours, one worker each, pinned to CPU 0: ``gunicorn -k
  django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket`` with ``WEBSOCKET_REDIS_URL``
  the plain Redis for one (``redis://``) and the cluster for the other (``redis+cluster://``: sharded
  pub/sub, one subscriber connection per shard).

Each round (servers in alternating order) picks fresh rooms whose channels land on the cluster's three
masters in turn (``--rooms``, default 6: two per master) and runs a client process pinned to CPU 1 (``python
bench/shards.py client …``, :class:`bench.fanout.FanoutClient`): N websockets (default 1,000) to
``/broadcast/<room>/``, spread over the rooms, subscribed (sync messages until each has one), then a burst:
M messages (default 200) published back to back with ``django_websocket.publish()``, each to every room
(M × rooms publishes), so every socket gets every message, once and in order (checked). It reports:

* deliveries/s per worker: N × M ÷ (first publish → last delivery, by the kernel's receive timestamps);
* Redis CPU per delivery and per published message: utime + stime from ``/proc/<pid>/stat``, summed over
  every ``redis-server`` of the setup (the cluster's replicas and cluster bus included), its delta over
  the burst ÷ deliveries, ÷ (M × rooms);
* the worker's CPU per delivery, and what was lost.

Exit status: 0 if every run was clean, 1 if a message was lost or a run errored, 2 if Redis, the cluster or a
server could not start. Figures are printed, never asserted.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import fanout, loadgen  # noqa: E402
from bench import run as echo_bench  # noqa: E402

PY = sys.executable
SERVER_CPU, LOADGEN_CPU = echo_bench.SERVER_CPU, echo_bench.LOADGEN_CPU
SETUPS = ("redis", "cluster")
IDLE_SAMPLE = 3.0  # s without traffic before each burst: the redis-servers' background CPU
TITLES = {"redis": "1 Redis", "cluster": "cluster, 3 masters"}


# ---------------------------------------------------------------------------------------------------
# the client: fanout.py's, its sockets spread over several rooms


class RedisClock(loadgen.CpuClock):
    """``read()[2]``: the CPU seconds of every process in *pids* (a setup's redis-servers), summed."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(None, None)
        self.clocks = [loadgen.CpuClock(pid, None) for pid in pids]

    def read(self) -> tuple[float, float, float | None, float | None]:
        wall, own, _, _ = super().read()
        seconds = [clock.read()[2] for clock in self.clocks]
        return wall, own, None if None in seconds else sum(seconds), None  # type: ignore[arg-type]


def connect_rooms(client: fanout.FanoutClient, paths: list[str]) -> dict:
    """Open ``client.n`` sockets spread evenly over *paths*, with ``FanoutClient.connect()`` per room."""
    total = client.n
    seconds = 0.0
    for number, path in enumerate(paths):
        client.n = total // len(paths) + (number < total % len(paths))
        client.args.path = path
        seconds += client.connect()["seconds"]
    client.n = total  # connect() sized its per-socket lists for one room: size them for all
    client.expect, client.counts, client.sync_seen = [0] * total, [0] * total, [-1] * total
    return {"seconds": seconds, "rate": total / seconds}


def redis_figures(burst: dict, idle: list[tuple], replicas: float | None, publishes: int) -> None:
    """Add Redis's CPU per delivery and per published message, less its background, to *burst*.

    *idle*: ``(redis clock, replicas clock)`` readings before and after ``IDLE_SAMPLE`` s of no
    traffic; *replicas*: the replicas' CPU seconds over the burst (``None``: no replicas).
    """
    if burst.get("redis_us_per_delivery") is None or not burst.get("deliveries"):
        return
    (redis_0, replicas_0), (redis_1, replicas_1) = idle
    background = (redis_1[2] - redis_0[2]) / (redis_1[0] - redis_0[0])
    burst["redis_background_ms_per_s"] = background * 1e3
    busy = burst["redis_us_per_delivery"] * burst["deliveries"] / 1e6 - background * burst["seconds"]
    burst["redis_busy_us_per_delivery"] = busy / burst["deliveries"] * 1e6
    burst["redis_busy_us_per_publish"] = busy / publishes * 1e6
    if replicas is not None:
        replicas_background = (replicas_1[2] - replicas_0[2]) / (replicas_1[0] - replicas_0[0])
        burst["replicas_busy_us_per_publish"] = (
            (replicas - replicas_background * burst["seconds"]) / publishes * 1e6
        )


def client_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shards.py client", description="one burst (used by shards.py)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rooms", required=True, help="comma-separated room names")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument(
        "--redis-pids", required=True, help="comma-separated pids of the setup's redis-servers"
    )
    parser.add_argument("--replica-pids", default="", help="those of them that are replicas")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=200, help="messages, each published to every room")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--server-cpu", type=int, default=SERVER_CPU, help="-1: don't watch its load")
    args = parser.parse_args(argv)
    fanout.raise_nofile()
    rooms = args.rooms.split(",")
    clock = loadgen.CpuClock(args.server_pid, args.server_cpu if args.server_cpu >= 0 else None)
    redis_clock = RedisClock([int(pid) for pid in args.redis_pids.split(",")])
    replica_clock = RedisClock([int(pid) for pid in filter(None, args.replica_pids.split(","))])
    client = fanout.FanoutClient(argparse.Namespace(port=args.port, path=None, sockets=args.sockets))
    result: dict = {"rooms": rooms}
    try:
        publishers = [
            fanout.make_publisher("django", args.redis_url, f"broadcast:{room}")[0] for room in rooms
        ]

        def publish(message: str) -> list:
            return [publish_one(message) for publish_one in publishers]  # each room's message id

        result["connect"] = connect_rooms(client, [f"/broadcast/{room}/" for room in rooms])
        result["subscribe"] = client.subscribe_wait(publish, timeout=30.0 + args.sockets / 100)
        drain = 30.0 + args.sockets * args.burst / 5000
        idle = [(redis_clock.read(), replica_clock.read())]
        time.sleep(IDLE_SAMPLE)  # no traffic: what the redis-servers spend anyway (cron, the cluster bus)
        idle.append((redis_clock.read(), replica_clock.read()))
        replicas_before = replica_clock.read()[2]
        burst = result["burst"] = client.burst(publish, args.burst, clock, redis_clock, drain=drain)
        replicas = replica_clock.read()[2] - replicas_before  # type: ignore[operator]
        redis_figures(burst, idle, replicas if args.replica_pids else None, args.burst * len(rooms))
    except fanout.Failed as exc:
        client.errors[str(exc)] += 1
    except Exception as exc:  # a publisher that raised, a bug: this run's error
        client.errors[f"{type(exc).__name__}: {exc}"] += 1
    finally:
        result["close_timeouts"] = client.close()
    errors = dict(client.errors) | {f"unexpected: {k}": v for k, v in client.others.items()}
    if errors:
        result["errors"] = errors
    print(json.dumps(result))
    return 1 if errors else 0


# ---------------------------------------------------------------------------------------------------
# the harness


def pick_rooms(cluster, count: int, label: str) -> list[str]:
    """*count* fresh room names whose channels land on the cluster's masters in turn."""
    from django_websocket.messaging.brokers.cluster import ClusterBroker
    from django_websocket.messaging.options import Options

    broker = ClusterBroker(cluster.url, Options())
    by_master: dict[str, list[str]] = {}
    for n in range(100 * count):
        room = f"shards-{label}-{n}-{secrets.token_hex(2)}"
        by_master.setdefault(broker.node_of(broker.key(f"broadcast:{room}"))[0], []).append(room)
        if len(by_master) == 3 and all(len(rooms) >= -(-count // 3) for rooms in by_master.values()):
            break
    broker.disconnect()
    queues = list(by_master.values())
    return [queues[n % len(queues)][n // len(queues)] for n in range(count)]


def pin(pids: list[int]) -> None:
    """Pin the redis-servers to the client's CPU (as fanout.py does with its Redis)."""
    if echo_bench.pinned(LOADGEN_CPU, []):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, {LOADGEN_CPU})


def run_client(server: echo_bench.Server, setup: dict, rooms: list[str], args) -> dict:
    argv = [
        PY, str(ROOT / "bench" / "shards.py"), "client",
        "--port", str(server.port),
        "--rooms", ",".join(rooms),
        "--redis-url", setup["url"],
        "--redis-pids", ",".join(map(str, setup["pids"])),
        "--replica-pids", ",".join(map(str, setup["replica_pids"])),
        "--sockets", str(args.sockets),
        "--burst", str(args.messages),
        "--server-pid", str(server.worker_pid),
        "--server-cpu", str(SERVER_CPU if echo_bench.pinned(SERVER_CPU, []) else -1),
    ]  # fmt: skip
    timeout = args.sockets * 0.05 + 60 + args.sockets / 100 + 30 + args.sockets * args.messages / 5000 + 30
    env = {**os.environ, **setup["env"]}
    result = echo_bench.run_client_process(echo_bench.pinned(LOADGEN_CPU, argv), timeout, env=env, tail=800)
    return echo_bench.note_server_exit(result, server, f"{server.stack.name} server")


FIGURES = [
    # (label, key under "burst")
    ("deliveries/s per worker", "rate"),
    ("first publish → last delivery s", "last_delivery_s"),
    ("publishing s (M × rooms publish())", "publish_s"),
    ("worker µs/delivery", "server_us_per_delivery"),
    ("Redis CPU µs/delivery, all", "redis_us_per_delivery"),
    ("Redis background CPU ms/s, no traffic", "redis_background_ms_per_s"),
    ("Redis CPU µs/delivery, less background", "redis_busy_us_per_delivery"),
    ("Redis CPU µs/published msg, less bg", "redis_busy_us_per_publish"),
    ("  of which replicas", "replicas_busy_us_per_publish"),
    ("client CPU", "loadgen_cpu"),
    ("others on CPU 0", "server_cpu_other_load"),
    ("lost", "lost"),
]
PERCENT = {"loadgen_cpu", "server_cpu_other_load"}


def table(results: dict[str, list[dict]]) -> str:
    """Medians over rounds per setup, and the median over rounds of cluster ÷ 1 Redis."""
    head = ("figure", *(TITLES[name] for name in SETUPS), "cluster/1 Redis")
    rows = [head]
    for label, key in FIGURES:
        per = {name: [echo_bench.figure(r, f"burst.{key}") for r in results[name]] for name in SETUPS}
        if key == "lost":
            rows.append((label, *(str(sum(v or 0 for v in per[name])) for name in SETUPS), ""))
            continue
        medians = {name: [v for v in values if v is not None] for name, values in per.items()}
        cells = []
        for name in SETUPS:
            value = statistics.median(medians[name]) if medians[name] else None
            cells.append(
                "—" if value is None else f"{value:.0%}" if key in PERCENT else echo_bench.fmt(value)
            )
        pairs = [c / r for r, c in zip(per["redis"], per["cluster"], strict=False) if r and c is not None]
        ratio = f"{statistics.median(pairs):.2f}" if pairs and key not in PERCENT else ""
        rows.append((label, *cells, ratio))
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    rows.insert(1, tuple("-" * width for width in widths))
    return "\n".join(
        "  ".join([row[0].ljust(widths[0]), *map(str.rjust, row[1:], widths[1:])]).rstrip() for row in rows
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, a 100-message burst")
    parser.add_argument("--sockets", type=int, default=1000, help="websockets per worker (default 1000)")
    parser.add_argument("--rooms", type=int, default=6, help="rooms, on the masters in turn (default 6)")
    parser.add_argument("--messages", type=int, help="burst size, per room (default 200; 100 quick)")
    parser.add_argument("--rounds", type=int, help="runs per setup (default 3; 1 quick)")
    parser.add_argument("--quiet-threshold", type=float, default=0.15, help="wait for CPUs below this first")
    parser.add_argument(
        "--quiet-wait", type=float, help="longest wait for quiet CPUs, s (default 20; 5 quick)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args(argv)
    args.messages = args.messages or (100 if args.quick else 200)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (5.0 if args.quick else 20.0)
    if not (
        3 <= args.rooms <= args.sockets <= 9000
        and 1 <= args.messages <= 900  # WEBSOCKET_CHANNEL_QUEUE_SIZE is 1000: no slow-consumer closes
        and 1 <= args.rounds <= 20
    ):
        parser.error("need 3 <= rooms <= sockets <= 9000, 1 <= messages <= 900, 1 <= rounds <= 20")
    return args


def start_setups(stack: contextlib.ExitStack, tmp: str) -> dict[str, dict]:
    """Start the plain Redis and the cluster; return each setup's URL, redis-server pids and server env."""
    from tests.redis_cluster import RedisClusterGroup
    from tests.redis_server import RedisServer

    plain = stack.enter_context(RedisServer())
    cluster = stack.enter_context(RedisClusterGroup())
    setups = {
        "redis": {"url": plain.url, "pids": [plain.process.pid], "replica_pids": []},
        "cluster": {
            "url": cluster.url,
            "pids": [node.process.pid for node in cluster.nodes],
            "replica_pids": [node.process.pid for node in cluster.nodes if node not in cluster.masters()],
            "group": cluster,
        },
    }
    for name, setup in setups.items():
        pin(setup["pids"])
        setup["env"] = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / f"{name}.sqlite3"),
            "WEBSOCKET_REDIS_URL": setup["url"],
            "REDIS_URL": setup["url"],
        }
        echo_bench.migrate(setup["env"])
    return setups


def start_servers(stack: contextlib.ExitStack, setups: dict[str, dict], sockets: int) -> dict:
    """One server of ours (one worker, pinned to CPU 0) per setup."""
    servers = {}
    extra = ["--worker-connections", str(max(2000, sockets + 100))]
    argv = [*echo_bench.GUNICORN, *extra, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"]
    for name, setup in setups.items():
        server = servers[name] = stack.enter_context(
            echo_bench.serve(echo_bench.Stack(name, argv, setup["env"]))
        )
        print(f"{name:8} {setup['url']}: redis-server pids {setup['pids']}, worker pid {server.worker_pid}")
    return servers


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    args = parse_args(argv)
    fanout.raise_nofile()  # inherited by the servers and the clients
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    sys.stdout.reconfigure(line_buffering=True)
    print(f"$ {shlex.join([PY, 'bench/shards.py', *argv])}")
    print(
        f"{echo_bench.versions()}; servers on CPU {SERVER_CPU}, client and every redis-server on CPU "
        f"{LOADGEN_CPU}; {args.rounds} round(s) of {args.sockets} sockets over {args.rooms} rooms, a "
        f"{args.messages}-message burst (each message published to every room)\n"
    )
    with (
        tempfile.TemporaryDirectory(prefix="django-websocket-shards-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            setups = start_setups(stack, tmp)
            servers = start_servers(stack, setups, args.sockets)
        except (RuntimeError, OSError) as exc:  # a Redis, the cluster or a server that did not start
            print(f"could not start: {exc}", file=sys.stderr)
            return 2
        print()
        results: dict[str, list[dict]] = {name: [] for name in SETUPS}
        errors = []
        for rnd in range(args.rounds):
            rooms = pick_rooms(setups["cluster"]["group"], args.rooms, str(rnd + 1))
            for name in SETUPS if rnd % 2 == 0 else reversed(SETUPS):
                echo_bench.wait_for_quiet(args.quiet_threshold, args.quiet_wait)
                result = run_client(servers[name], setups[name], rooms, args)  # same names: other Redis
                results[name].append(result)
                errors += [
                    f"round {rnd + 1}, {name}: {e} (×{n})" for e, n in result.get("errors", {}).items()
                ]
                burst = result.get("burst", {})
                print(
                    f"  round {rnd + 1}/{args.rounds}  {TITLES[name]:18} {echo_bench.fmt(burst.get('rate'))} "
                    f"deliveries/s, Redis {echo_bench.fmt(burst.get('redis_us_per_delivery'))} µs/delivery, "
                    f"lost {burst.get('lost', '?')}{', ERRORS' if result.get('errors') else ''} (others on "
                    f"CPU {SERVER_CPU}: {burst.get('server_cpu_other_load', 0):.0%})",
                    flush=True,
                )
    print()
    print(table(results))
    print(
        "\nmedians over rounds; cluster/1 Redis = median over rounds of the ratio in the same round."
        "\nRedis CPU: utime + stime of every redis-server of the setup (the cluster's replicas and bus"
        "\nincluded) from the first publish until the client had every delivery, in /proc's 10 ms ticks;"
        f"\n'less background': minus what they used in the {IDLE_SAMPLE:g} s without traffic before it."
    )
    return echo_bench.finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
