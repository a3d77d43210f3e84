"""ORM round trips on PostgreSQL, ours against Django Channels, and what automatic release costs echo.

``python bench/orm.py`` (``--quick``; ``--only orm|echo``; ``--before REF``). Issue 9's benchmark, in one run:

* **ORM writes** — a throwaway PostgreSQL 15 (``tests/postgres_server.py``: ``max_connections`` 100,
  fsync off) is migrated, and two servers use it through Django's pool (psycopg 3, ``max_size`` 20),
  both with ``DJANGO_SETTINGS_MODULE=bench.orm_settings`` (test_project's settings, full middleware):

  - ours: ``gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket``,
    one worker, ``/orm/<room>/`` of ``bench/orm_urls.py`` (a plain view, no connection handling);
  - Channels: ``daphne bench.channels_orm:application``, ``/orm/async/<room>/``
    (``AsyncWebsocketConsumer`` + ``database_sync_to_async``) and ``/orm/sync/<room>/``
    (``WebsocketConsumer``), behind ``AllowedHostsOriginValidator(AuthMiddlewareStack(...))``.

  Each server is pinned to CPU 0; the client (``bench/orm_client.py``, its own process), PostgreSQL
  and this script to CPU 1. Per run, 100 sockets in closed loop: send a message, wait for the new
  row's id, send the next; writes/s and send → reply latency. Runs interleave (the order reverses
  every other round); ratios are medians of per-round ratios. After every run the table's row count
  must have grown by exactly the number of ids received, every id distinct.
* **Echo before/after** — ``bench/loadgen.py``'s echo (100 connections, 32-byte messages, window 1
  and 16) against test_project's ``/echo/`` (it never touches the ORM), served by the working tree
  and by a ``git worktree`` of ``--before`` (default d009774, the tree before automatic release),
  same settings (``bench/orm_echo_settings.py``: the same database and pool), interleaved rounds.

Exit status: 0 if every run was clean, 1 if a run errored (a socket closed, an id repeated, a row
count off), 2 if Channels/Daphne are missing (the pip command is printed) or a server did not start.
Performance is reported — the issue's targets are printed next to the figures — never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import loadgen, orm_client  # noqa: E402
from bench import run as echo_bench  # noqa: E402
from bench.run import DAPHNE, GUNICORN, OUR_WORKER, PY, Server, Stack, fmt, pinned  # noqa: E402

SERVER_CPU, LOADGEN_CPU = echo_bench.SERVER_CPU, echo_bench.LOADGEN_CPU
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
PIP = f"{shlex.quote(PY)} -m pip install -r bench/requirements.txt"
DAPHNE_LISTENING = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")
POOL_SIZE = 20
MAX_CONNECTIONS = 100
DEFAULT_BEFORE = "d009774"
TARGET_WRITES = 2.0  # ours ÷ Channels' writes/s, every socket writing (the issue's target)
NOISY = echo_bench.NOISY
SETTINGS = "bench.orm_settings"
ECHO_SETTINGS = "bench.orm_echo_settings"


# ---------------------------------------------------------------------------------------------------
# requirements and servers


def missing_requirements() -> list[str]:
    """The pinned packages of bench/requirements.txt that are not installed at that version."""
    missing = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            if metadata.version(name) != version:
                missing.append(f"{line} (found {metadata.version(name)})")
        except metadata.PackageNotFoundError:
            missing.append(line)
    return missing


def launch(
    stack: Stack, cwd: Path = ROOT, port_pattern=echo_bench.LISTENING, pid_pattern=echo_bench.BOOTED
) -> contextlib.AbstractContextManager[Server]:
    """Start *stack* in *cwd*, pinned to CPU 0 (``bench/run.py``'s ``serve()``, 60 s to start)."""
    return echo_bench.serve(stack, 60.0, cwd, port_pattern, pid_pattern)


def postgres_stats(postmaster: int) -> dict[int, list[bytes]]:
    """``/proc/PID/stat`` fields (after the command) of the postmaster and its children.

    PostgreSQL's children call ``setsid()``, so they are found by parent, not by session.
    """
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:  # proc(5) field 4, the parent
            found[int(entry.name)] = fields
    return found


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds used so far by PostgreSQL: its live processes, plus the children it reaped."""
    total = 0
    for pid, fields in postgres_stats(postmaster).items():
        total += int(fields[11]) + int(fields[12])  # proc(5) fields 14, 15: utime, stime
        if pid == postmaster:
            total += int(fields[13]) + int(fields[14])  # fields 16, 17: cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def pin_postgres(postmaster: int, cpu: int) -> None:
    """Pin PostgreSQL to *cpu*: the postmaster (its future backends inherit it) and its children."""
    if pinned(cpu, []) == []:
        return
    for pid in postgres_stats(postmaster):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


# ---------------------------------------------------------------------------------------------------
# ORM writes


def probe_write(port: int, path: str, timeout: float = 10.0) -> int:
    """One socket, one write: the id the server answers. Raises ScenarioError/OSError otherwise."""
    sock, rest = loadgen.connect_and_upgrade(port, path, [], timeout, echo=False)
    try:
        sock.setblocking(True)
        sock.sendall(loadgen.CLIENT_FRAME)
        conn = orm_client.Conn(sock, rest)
        deadline = time.monotonic() + timeout
        while True:
            for opcode, payload in orm_client.parse(conn):
                if opcode == 0x1 and payload.isdigit():
                    return int(payload)
                raise loadgen.ScenarioError(f"expected an id, got frame {opcode:#x} {payload[:80]!r}")
            conn.buf += loadgen.recv_until(sock, bool, deadline)
    finally:
        loadgen._close_all([sock])


def run_writes(server: Server, path: str, args, pg) -> dict:
    """One client run against *server*'s *path*; adds the row check and PostgreSQL's side."""
    before_rows = count_rows(pg)
    samples: list[int] = []
    stop = threading.Event()

    def sample_backends() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(subprocess.SubprocessError, ValueError):
                samples.append(backends(pg, server.stack.name))

    sampler = threading.Thread(target=sample_backends, daemon=True)
    argv = [
        PY, str(ROOT / "bench" / "orm_client.py"), "--port", str(server.port), "--path", path,
        "--sockets", str(args.sockets), "--warmup", str(args.warmup), "--duration", str(args.duration),
        "--server-pid", str(server.worker_pid), "--server-cpu", str(SERVER_CPU if pinned(0, []) else -1),
    ]  # fmt: skip
    pg_cpu = postgres_cpu(pg.process.pid)
    started = time.perf_counter()
    sampler.start()
    try:
        result = echo_bench.run_client_process(
            pinned(LOADGEN_CPU, argv), args.warmup + args.duration + 120, "orm client"
        )
    finally:
        stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    result["postgres_cpu"] = (postgres_cpu(pg.process.pid) - pg_cpu) / wall
    result["backends_max"] = max(samples, default=None)
    rows = count_rows(pg) - before_rows
    result["rows_inserted"] = rows
    if "replies_total" in result and not rows == result["replies_total"] == result["distinct_ids"]:
        result.setdefault("errors", {})[
            f"row count grew by {rows}, but {result['replies_total']} replies "
            f"({result['distinct_ids']} distinct ids) were received"
        ] = 1
    return echo_bench.note_server_exit(result, server, f"{server.stack.name} server")


def backends(pg, application_name: str) -> int:
    """PostgreSQL client backends of *application_name* (one server's connections) right now."""
    return int(
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            f"AND application_name = '{application_name}'"
        )
    )


def count_rows(pg) -> int:
    return int(pg.psql("SELECT count(*) FROM test_project_message", dbname=pg.dbname))


ORM_FIGURES = [
    ("writes/s", "rate"),
    ("latency p50 ms", "p50_ms"),
    ("latency p99 ms", "p99_ms"),
    ("latency max ms", "max_ms"),
    ("server µs/write", "server_us_per_write"),
    ("server CPU", "server_cpu"),
    ("sockets writing", "sockets_writing"),
    ("writes/socket, min", "per_socket_min"),
    ("writes/socket, max", "per_socket_max"),
    ("server's backends, max", "backends_max"),
    ("PostgreSQL CPU", "postgres_cpu"),
    ("client CPU", "loadgen_cpu"),
    ("others on CPU 0", "server_cpu_other_load"),
]
PERCENT = {"server_cpu", "postgres_cpu", "loadgen_cpu", "server_cpu_other_load"}
NO_RATIO = PERCENT | {"sockets_writing", "backends_max", "per_socket_min", "per_socket_max"}


def orm_benchmark(args, pg, errors: list[str]) -> dict:
    """Migrate, start ours and Daphne, run the interleaved rounds; print the table, return the results."""
    env = {**pg.env(pool=args.pool), "DJANGO_SETTINGS_MODULE": SETTINGS, "DJANGO_DEBUG": "0"}
    env["WEBSOCKET_MESSAGE_RATE_LIMIT"] = "none"  # the loads flood on purpose
    full_env = {**os.environ, **env, "BENCH_DB_APPLICATION_NAME": "migrate"}
    manage = [PY, str(ROOT / "test_project" / "manage.py")]
    subprocess.run(
        [*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=full_env, check=True, timeout=300
    )
    room = int(
        pg.psql(
            "INSERT INTO test_project_room (name, created) VALUES ('orm-bench', now()) RETURNING id",
            dbname=pg.dbname,
        ).split()[0]
    )
    ours = Stack(
        "ours",
        [*GUNICORN, "-k", OUR_WORKER, "test_project.wsgi:websocket"],
        {**env, "BENCH_DB_APPLICATION_NAME": "ours"},
    )
    daphne = Stack(
        "daphne",
        DAPHNE,
        {**env, "BENCH_DB_APPLICATION_NAME": "daphne"},
    )
    # (label, server, path): the columns of the table
    targets = [("ours", "ours", f"/orm/{room}/"), ("channels async", "daphne", f"/orm/async/{room}/")]
    if not args.no_sync:
        targets.append(("channels sync", "daphne", f"/orm/sync/{room}/"))
    results: dict[str, list[dict]] = {label: [] for label, _, _ in targets}
    with contextlib.ExitStack() as stack:
        servers = {}
        for st, kwargs in ((ours, {}), (daphne, {"port_pattern": DAPHNE_LISTENING, "pid_pattern": None})):
            servers[st.name] = stack.enter_context(launch(st, **kwargs))
            print(
                f"{st.name:6} port {servers[st.name].port}, pid {servers[st.name].worker_pid}: "
                f"{shlex.join(pinned(SERVER_CPU, st.argv))}"
            )
        for label, name, path in targets:
            try:
                probe_write(servers[name].port, path)
            except (loadgen.ScenarioError, OSError) as exc:
                raise RuntimeError(
                    f"{label} failed the probe on {path}: {exc}\n{servers[name].tail()}"
                ) from exc
        print(f"{', '.join(label for label, _, _ in targets)}: probe write answered; room id {room}\n")
        quiet_from = {name: len(server.log) for name, server in servers.items()}
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else targets[::-1]
            for label, name, path in order:
                before = echo_bench.wait_for_quiet(args.quiet_threshold, args.quiet_wait)
                result = run_writes(servers[name], path, args, pg)
                result["cpu_load_before"] = before
                results[label].append(result)
                for err, count in result.get("errors", {}).items():
                    errors.append(f"round {rnd + 1}, ORM writes, {label}: {err} (×{count})")
                print(
                    f"  round {rnd + 1}/{args.rounds}  ORM writes  {label:15} {fmt(result.get('rate'))}/s"
                    f"  p99 {fmt(result.get('p99_ms'))} ms  sockets writing {result.get('sockets_writing')}"
                    f"  (others on CPU {SERVER_CPU}: {result.get('server_cpu_other_load', 0):.0%})",
                    file=sys.stderr,
                    flush=True,
                )
        chatter = log_chatter(servers, quiet_from)
    labels = [label for label, _, _ in targets]
    ratios = [("ours", other) for other in labels[1:]]
    print(
        table(
            f"ORM writes, {args.sockets} sockets in closed loop, pool max_size {args.pool}",
            ORM_FIGURES,
            results,
            labels,
            ratios,
        )
    )
    for _, other in ratios:
        got = ratio_of(results, "ours", other, "rate")
        every = all(r.get("sockets_writing") == args.sockets for rs in results.values() for r in rs)
        print(
            f"target: ours ≥ {TARGET_WRITES:g}× {other}'s writes/s with every socket writing — "
            f"{'—' if got is None else f'{got:.2f}×'}; "
            f"every socket writing in every run: {'yes' if every else 'NO'}"
        )
    print(chatter)
    return results


# ---------------------------------------------------------------------------------------------------
# echo before/after


ECHO_FIGURES = [
    ("msgs/s", "rate"),
    ("RTT p50 ms", "p50_ms"),
    ("RTT p99 ms", "p99_ms"),
    ("server µs/msg", "server_us_per_msg"),
    ("loadgen CPU", "loadgen_cpu"),
    ("others on CPU 0", "server_cpu_other_load"),
]


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached ``git worktree`` of *ref* in a temporary directory, removed on exit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if commit.returncode:
        raise RuntimeError(f"--before {ref!r} is not a commit here: {commit.stderr.strip()}")
    parent = Path(tempfile.mkdtemp(prefix="orm-bench-before-"))
    path = parent / "tree"
    try:
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(path), commit.stdout.strip()],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)


def imported_from(cwd: Path, env: dict[str, str]) -> str:
    """Where ``django_websocket`` is imported from by a process started like the server in *cwd*."""
    done = subprocess.run(
        [
            PY,
            "-c",
            "import sys; sys.path.insert(0, '.'); import django_websocket; print(django_websocket.__file__)",
        ],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or done.stderr.strip()[-300:]


def echo_benchmark(args, pg, errors: list[str]) -> dict:
    """Echo of /echo/ on the working tree ("after") and on a worktree of --before ("before")."""
    env = {**pg.env(pool=args.pool), "DJANGO_SETTINGS_MODULE": ECHO_SETTINGS, "DJANGO_DEBUG": "0"}
    env["WEBSOCKET_MESSAGE_RATE_LIMIT"] = "none"  # the loads flood on purpose
    scenarios = [
        echo_bench.Scenario(
            f"echo, {args.sockets} conns, window {window}",
            "echo",
            ["--connections", str(args.sockets), "--window", str(window)],
            ECHO_FIGURES,
            stacks=("before", "after"),
        )
        for window in (1, 16)
    ]
    results = {sc.title: {"before": [], "after": []} for sc in scenarios}
    with worktree(args.before) as tree, contextlib.ExitStack() as stack:
        # The before tree has no bench/orm_*settings.py: it gets the current ones, so both run alike.
        for name in ("orm_settings.py", "orm_echo_settings.py"):
            shutil.copy(ROOT / "bench" / name, tree / "bench" / name)
        dirs = {"before": tree, "after": ROOT}
        servers = {}
        for name, cwd in dirs.items():
            st = Stack(
                name,
                [*GUNICORN, "-k", OUR_WORKER, "test_project.wsgi:websocket"],
                {**env, "PYTHONPATH": str(cwd)},
            )
            print(
                f"echo {name:6} ({args.before if name == 'before' else 'working tree'}): "
                f"django_websocket from {imported_from(cwd, st.env)}"
            )
            servers[name] = stack.enter_context(launch(st, cwd))
            try:
                loadgen.probe(servers[name].port, "/echo/")
            except (loadgen.ScenarioError, OSError) as exc:
                raise RuntimeError(f"echo {name} failed the probe: {exc}\n{servers[name].tail()}") from exc
        print()
        quiet_from = {name: len(server.log) for name, server in servers.items()}
        for rnd in range(args.echo_rounds):
            for sc in scenarios:
                order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
                for name in order:
                    before = echo_bench.wait_for_quiet(args.quiet_threshold, args.quiet_wait)
                    result = echo_bench.run_one(
                        servers[name],
                        sc,
                        argparse.Namespace(warmup=args.echo_warmup, duration=args.echo_duration),
                    )
                    result["cpu_load_before"] = before
                    results[sc.title][name].append(result)
                    for err, count in result.get("errors", {}).items():
                        errors.append(f"round {rnd + 1}, {sc.title}, {name}: {err} (×{count})")
                    print(
                        f"  round {rnd + 1}/{args.echo_rounds}  {sc.title:26} {name:6}"
                        f" {fmt(result.get('rate'))}/s"
                        f"  (others on CPU {SERVER_CPU}: {result.get('server_cpu_other_load', 0):.0%})",
                        file=sys.stderr,
                        flush=True,
                    )
        chatter = log_chatter(servers, quiet_from)
    for sc in scenarios:
        print(
            table(
                f"{sc.title}: before = {args.before}, after = working tree",
                ECHO_FIGURES,
                results[sc.title],
                ["before", "after"],
                [("after", "before")],
            )
        )
        print()
    got = [ratio_of(results[sc.title], "after", "before", "rate") for sc in scenarios]
    print(
        "target: echo msgs/s must not drop with automatic release — after/before "
        + ", ".join(
            f"{sc.title}: {'—' if g is None else f'{g:.3f}'}" for sc, g in zip(scenarios, got, strict=True)
        )
    )
    print(chatter)
    return results


# ---------------------------------------------------------------------------------------------------
# report


def log_chatter(servers: dict[str, Server], since: dict[str, int]) -> str:
    """How many lines each server logged during the runs, with the last of them if any."""
    counts = {name: len(server.log) - since[name] for name, server in servers.items()}
    out = "server log lines written during the runs: " + ", ".join(f"{n} {c}" for n, c in counts.items())
    for name, count in counts.items():
        if count:
            out += f"\n  {name}, last lines:\n    " + "    ".join(list(servers[name].log)[-min(count, 5) :])
    return out


def ratio_of(results: dict[str, list[dict]], a: str, b: str, key: str) -> float | None:
    """Median over rounds of a's *key* ÷ b's, paired round by round."""
    pairs = [
        ra[key] / rb[key]
        for ra, rb in zip(results[a], results[b], strict=False)
        if ra.get(key) is not None and rb.get(key)
    ]
    return statistics.median(pairs) if pairs else None


def table(title: str, figures, results: dict[str, list[dict]], labels: list[str], ratios) -> str:
    """figure | one column per label (median over rounds) | one column per (a, b) ratio."""
    header = ("figure", *labels, *(f"{a}/{b}" for a, b in ratios))
    rows = [header]
    for label, key in figures:
        cells = [label]
        for name in labels:
            values = [r[key] for r in results[name] if r.get(key) is not None]
            med = statistics.median(values) if values else None
            cells.append(f"{med:.0%}" if key in PERCENT and med is not None else fmt(med))
        for a, b in ratios:
            got = None if key in NO_RATIO else ratio_of(results, a, b, key)
            cells.append("" if key in NO_RATIO else ("—" if got is None else f"{got:.2f}"))
        rows.append(tuple(cells))
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = [f"\n{title}"]
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("medians over rounds; ratios: median of per-round ratios")
    rate = figures[0][1]
    for a, b in ratios:
        rounds = []
        for ra, rb in zip(results[a], results[b], strict=False):
            noisy = max(ra.get("server_cpu_other_load", 0), rb.get("server_cpu_other_load", 0)) > NOISY
            ok = ra.get(rate) is not None and rb.get(rate)
            rounds.append((f"{ra[rate] / rb[rate]:.2f}" if ok else "—") + ("*" if noisy else ""))
        lines.append(f"{a}/{b} {figures[0][0]} per round: {', '.join(rounds)}")
    if any(r.get("server_cpu_other_load", 0) > NOISY for name in labels for r in results[name]):
        lines.append(
            f"* other processes took over {NOISY:.0%} of CPU {SERVER_CPU} in that round: rerun if many"
        )
    return "\n".join(lines)


#: The distributions whose versions this benchmark prints.
VERSIONS = (
    "Django", "gevent", "gunicorn", "psycopg", "psycopg-pool", "channels", "daphne", "Twisted", "asgiref",
)  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1 s + 4 s, echo 1 round of 0.5 s + 2 s"
    )
    parser.add_argument("--only", choices=["orm", "echo"], help="run one of the two benchmarks")
    parser.add_argument("--duration", type=float, help="measured seconds per ORM run (default 10)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each ORM run (default 2)")
    parser.add_argument("--rounds", type=int, help="ORM rounds (default 2)")
    parser.add_argument("--sockets", type=int, default=100, help="sockets (ORM and echo), default 100")
    parser.add_argument("--pool", type=int, default=POOL_SIZE, help=f"pool max_size (default {POOL_SIZE})")
    parser.add_argument("--no-sync", action="store_true", help="skip Channels' sync WebsocketConsumer")
    parser.add_argument(
        "--before", default=DEFAULT_BEFORE, help=f"git ref of the 'before' tree (default {DEFAULT_BEFORE})"
    )
    parser.add_argument("--echo-rounds", type=int, help="echo rounds (default 4)")
    parser.add_argument("--echo-duration", type=float, help="measured seconds per echo run (default 5)")
    parser.add_argument("--echo-warmup", type=float, help="(default 1)")
    parser.add_argument(
        "--postgres-cpu", type=int, default=LOADGEN_CPU, help="CPU for PostgreSQL (-1: not pinned)"
    )
    parser.add_argument("--quiet-threshold", type=float, default=0.15)
    parser.add_argument("--quiet-wait", type=float, default=20.0)
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args(argv)
    q = args.quick
    args.duration = args.duration or (4.0 if q else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 2.0)
    args.rounds = args.rounds or (1 if q else 2)
    args.echo_rounds = args.echo_rounds or (1 if q else 4)
    args.echo_duration = args.echo_duration or (2.0 if q else 5.0)
    args.echo_warmup = args.echo_warmup if args.echo_warmup is not None else (0.5 if q else 1.0)
    if q:
        args.quiet_wait = min(args.quiet_wait, 5.0)
    if not (
        0 < args.duration <= 300
        and 0 < args.echo_duration <= 300
        and 1 <= args.rounds <= 20
        and 1 <= args.echo_rounds <= 20
        and 1 <= args.sockets <= 900
    ):
        parser.error("need 0 < durations <= 300, 1 <= rounds <= 20, 1 <= sockets <= 900")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    missing = missing_requirements()
    if missing and args.only != "echo":
        print(
            f"missing for the Channels reference: {', '.join(missing)}\ninstall with:\n  {PIP}",
            file=sys.stderr,
        )
        return 2
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})  # this process, its psql calls and log pumps: off CPU 0
    from tests.postgres_server import PostgresServer

    print(f"$ {shlex.join([PY, *sys.argv])}")
    print(echo_bench.versions(VERSIONS))
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs; servers on CPU {SERVER_CPU}, client and PostgreSQL "
        f"on CPU {LOADGEN_CPU}; ORM: {args.rounds} round(s) of {args.warmup:g} s + {args.duration:g} s; "
        f"echo: {args.echo_rounds} round(s) of {args.echo_warmup:g} s + {args.echo_duration:g} s"
    )
    errors: list[str] = []
    results: dict = {}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwind: servers, cluster
    try:
        with PostgresServer(max_connections=MAX_CONNECTIONS) as pg:
            if args.postgres_cpu >= 0:
                pin_postgres(pg.process.pid, args.postgres_cpu)
            print(
                f"PostgreSQL {pg.psql('SHOW server_version')} at {pg.url}, "
                f"max_connections {MAX_CONNECTIONS}, fsync off; Django pool max_size {args.pool}\n"
            )
            if args.only != "echo":
                results["orm"] = orm_benchmark(args, pg, errors)
                print()
            if args.only != "orm":
                results["echo"] = echo_benchmark(args, pg, errors)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"\n{exc}\n{getattr(exc, 'stderr', '') or ''}", file=sys.stderr)
        return 2
    return echo_bench.finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
