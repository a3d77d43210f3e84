"""Our stack against three references, measured in the same run: ``python bench/run.py``.

The machines are noisy (2 shared vCPUs), so absolute figures drift from run to run; what this
prints is meant to be read as ratios. Each server gets one process (one gunicorn worker) pinned to
CPU 0, the load generator (``loadgen.py``, a separate process) is pinned to CPU 1, and each
scenario is run against every server back to back, in alternating order from round to round. The
ratios printed are the medians of the per-round ratios ours/reference, so drift between rounds
cancels.

Servers:

* ours      — ``gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket``
* gevent-ws — ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker bench.bare_echo:app``
* uvicorn   — ``uvicorn bench.uvicorn_echo:app --loop uvloop --http httptools --ws websockets``
* channels  — ``daphne bench.channels_orm:application`` (Channels' ``AuthMiddlewareStack``)
* ceiling   — ``bench/ceiling_echo.py``, a trivial epoll echo: what the load generator can reach
* worker-only — ``gunicorn -k django_websocket.workers.GeventWebSocketWorker bench.upgrade_only:app``:
  our worker's upgrade with no Django and no ``WebSocket`` in the request (only with ``--only``)

uvicorn and channels are left out (with a note) when not installed: ``pip install -r
bench/requirements.txt``. ``--against DIR`` adds our stack from another checkout as one more
reference (the A/B of a change); ``--postgres POOL`` puts the database (the session scenario's
sessions and users) on a throwaway PostgreSQL through Django's pool. bench/README.md has more.

Exit status: 0 if every scenario ran cleanly, 1 if any errored, 2 if a server could not start.
Performance is reported, never asserted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import loadgen  # noqa: E402

PY = sys.executable
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
BOOTED = re.compile(r"Booting worker with pid: (\d+)")
SERVER_CPU, LOADGEN_CPU = 0, 1
NOISY = 0.2  # other processes' share of the server's CPU above which a run is flagged
STOCK_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
OUR_WORKER = "django_websocket.workers.GeventWebSocketWorker"
GUNICORN = [
    PY,
    "-m",
    "gunicorn",
    "-b",
    "127.0.0.1:0",
    "-w",
    "1",
    "--error-logfile",
    "-",
    "--log-level",
    "info",
    "--graceful-timeout",
    "3",
    "--no-control-socket",
]
# No --access-logfile: nothing is written per request or per message during the runs.
#: Channels under Daphne (bench/channels_orm.py), a reference here and in bench/orm.py and bench/memory.py.
DAPHNE = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", "--access-log", os.devnull]
DAPHNE += ["bench.channels_orm:application"]
DAPHNE_LISTENING = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")


def uvicorn(app: str) -> list[str]:
    """uvicorn serving the ASGI *app* on 127.0.0.1:0: uvloop, httptools, websockets, one process."""
    argv = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0", "--ws", "websockets"]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "off"]
    # No line per connection (bench/uvicorn_echo.py's QuietAfterStartup), one process.
    return [*argv, "--workers", "1", "--log-config", str(ROOT / "bench" / "uvicorn_logging.json")]


#: A bare ASGI echo (bench/uvicorn_echo.py) under uvicorn.
UVICORN = uvicorn("bench.uvicorn_echo:app")
UVICORN_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
#: The references, in table order; "ours" is compared with each of them.
REFERENCES = ("gevent-ws", "uvicorn", "channels")
#: Run only when ``--only`` names it: our worker serving bench/upgrade_only.py (the worker's own part).
WORKER_ONLY = "worker-only"
#: ``--against DIR``: our stack from another checkout, as a reference named "@" + the directory's name
#: (the A/B of a change, interleaved like the rest). Such a server gets what "ours" gets.
AGAINST = "@"


def as_ours(name: str) -> str:
    """The name whose path and headers *name* gets: ours for another checkout of ours."""
    return "ours" if name.startswith(AGAINST) else name


# ---------------------------------------------------------------------------------------------------
# servers


@dataclass
class Stack:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: How ``serve()`` finds the port in the log; and the measured worker's pid (None: the process itself).
    port_pattern: re.Pattern = LISTENING
    pid_pattern: re.Pattern | None = BOOTED
    cwd: Path | None = None  # where it runs (ROOT when None)


@dataclass
class Server:
    stack: Stack
    process: subprocess.Popen
    port: int
    worker_pid: int
    log: collections.deque

    def tail(self, lines: int = 30) -> str:
        return "".join(list(self.log)[-lines:])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """``taskset -c CPU argv`` when there is a CPU to pin to, else *argv* unchanged."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > max(SERVER_CPU, LOADGEN_CPU):
        return ["taskset", "-c", str(cpu), *argv]
    return argv


@contextlib.contextmanager
def serve(
    stack: Stack,
    startup_timeout: float = 30.0,
    cwd: Path = ROOT,
    port_pattern: re.Pattern | None = None,
    pid_pattern: re.Pattern | None = ...,
) -> Iterator[Server]:
    """Start *stack* on 127.0.0.1:0 pinned to CPU 0; its process group is killed on exit, always.

    Yields once the log names its port (*port_pattern*) and worker pid (*pid_pattern*); without
    *pid_pattern* the started process itself is the one measured (Daphne, uvicorn). Both default
    to the stack's own.
    """
    port_pattern = port_pattern or stack.port_pattern
    pid_pattern = stack.pid_pattern if pid_pattern is ... else pid_pattern
    cwd = stack.cwd or cwd
    env = {k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}
    env.update(stack.env, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        pinned(SERVER_CPU, stack.argv),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    log: collections.deque = collections.deque(maxlen=2000)
    found: dict[str, int] = {} if pid_pattern else {"pid": process.pid}
    ready = threading.Event()

    def pump() -> None:
        for line in iter(process.stdout.readline, ""):
            log.append(line)
            for key, pattern in (("port", port_pattern), ("pid", pid_pattern)):
                match = pattern.search(line) if pattern else None
                if match and key not in found:
                    found[key] = int(match.group(1))
            if len(found) == 2:
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        ready.wait(startup_timeout)
        if len(found) < 2:
            raise RuntimeError(f"{stack.name} did not start:\n" + "".join(log))
        yield Server(stack, process, found["port"], found["pid"], log)
    finally:
        stop(process)
        reader.join(timeout=5)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def stacks(args, env: dict[str, str]) -> tuple[list[Stack], list[str]]:
    """The servers of this run, ours first; and notes on the references skipped."""
    reference = Stack("gevent-ws", [*GUNICORN, "-k", STOCK_WORKER, "bench.bare_echo:app"])
    if args.stand_in:
        # For developing the harness before our worker exists: the reference again, under another name.
        ours = Stack("ours", [*GUNICORN, "-k", STOCK_WORKER, "bench.bare_echo:app"])
    else:
        ours = Stack("ours", [*GUNICORN, "-k", OUR_WORKER, "test_project.wsgi:websocket"], env)
    found, skipped = [ours, reference], []
    for i, directory in enumerate(args.against or ()):
        # Another checkout of our stack (e.g. before a change), measured as one more reference.
        tree = Path(directory).resolve()
        found.insert(1 + i, Stack(AGAINST + tree.name, ours.argv, {**env, "PYTHONPATH": str(tree)}, cwd=tree))
    wanted = set(args.only or ("ours", *REFERENCES, "ceiling"))
    wanted |= {st.name for st in found if st.name[0] == AGAINST}
    if "uvicorn" in wanted and not installed("uvicorn", "uvloop", "httptools"):
        skipped.append("uvicorn skipped: not installed (pip install -r bench/requirements.txt)")
    elif "uvicorn" in wanted:
        found.append(Stack("uvicorn", UVICORN, {}, UVICORN_LISTENING, None))
    if "channels" in wanted and not installed("channels", "daphne"):
        skipped.append("channels skipped: not installed (pip install -r bench/requirements.txt)")
    elif "channels" in wanted:
        # The same throwaway database as ours (the session scenario's cookie works on both).
        channels_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.orm_settings"}
        found.append(Stack("channels", DAPHNE, channels_env, DAPHNE_LISTENING, None))
    if not args.no_ceiling:
        found.append(Stack("ceiling", [PY, str(ROOT / "bench" / "ceiling_echo.py")]))
    if WORKER_ONLY in wanted:
        found.append(Stack(WORKER_ONLY, [*GUNICORN, "-k", OUR_WORKER, "bench.upgrade_only:app"], env))
    return [st for st in found if st.name in wanted or st.name == "ours"], skipped


# ---------------------------------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    title: str
    kind: str  # a loadgen.py scenario
    args: list[str]
    figures: list[tuple[str, str]]  # (label, key in loadgen's JSON, dotted for nested)
    paths: dict[str, str] = field(default_factory=dict)  # per stack; "/echo/" when absent
    headers: list[str] = field(default_factory=list)  # sent only to the stacks named in paths
    stacks: tuple[str, ...] = ("ours", *REFERENCES, WORKER_ONLY, "ceiling")  # and every --against checkout
    echo_probe: bool = True

    def path(self, name: str) -> str:
        return self.paths.get(as_ours(name), "/echo/")

    def headers_for(self, name: str) -> list[str]:
        return self.headers if as_ours(name) in self.paths else []

    def runs(self, name: str) -> bool:
        return as_ours(name) in self.stacks


def scenarios(args) -> list[Scenario]:
    found = [
        Scenario(
            "echo, 1 conn, window 1",
            "echo",
            ["--connections", "1", "--window", "1"],
            [
                ("msgs/s", "rate"),
                ("RTT p50 ms", "p50_ms"),
                ("RTT p99 ms", "p99_ms"),
                ("server µs/msg", "server_us_per_msg"),
                ("loadgen CPU", "loadgen_cpu"),
                ("others on CPU 0", "server_cpu_other_load"),
            ],
        ),
        Scenario(
            f"echo, {args.connections} conns, window {args.window}",
            "echo",
            ["--connections", str(args.connections), "--window", str(args.window)],
            [
                ("msgs/s", "rate"),
                ("RTT p50 ms", "p50_ms"),
                ("RTT p99 ms", "p99_ms"),
                ("server µs/msg", "server_us_per_msg"),
                ("loadgen CPU", "loadgen_cpu"),
                ("others on CPU 0", "server_cpu_other_load"),
            ],
        ),
        Scenario(
            f"handshakes, {args.concurrency} loops",
            "handshake",
            ["--concurrency", str(args.concurrency)],
            [
                ("handshakes/s", "rate"),
                ("open p50 ms", "open.p50_ms"),
                ("open p99 ms", "open.p99_ms"),
                ("server µs/hs", "server_us_per_handshake"),
                ("loadgen CPU", "loadgen_cpu"),
                ("others on CPU 0", "server_cpu_other_load"),
            ],
        ),
    ]
    if args.session:
        found.append(
            Scenario(
                f"handshakes + session, {args.concurrency} loops",
                "handshake",
                ["--concurrency", str(args.concurrency)],
                [
                    ("handshakes/s", "rate"),
                    ("open p50 ms", "open.p50_ms"),
                    ("open p99 ms", "open.p99_ms"),
                    ("server µs/hs", "server_us_per_handshake"),
                    ("others on CPU 0", "server_cpu_other_load"),
                ],
                # Channels' /whoami/ (bench/channels_orm.py) loads the session and user too.
                paths={"ours": "/whoami/", "channels": "/whoami/"},
                headers=[f"Cookie: sessionid={args.session}"],
                stacks=("ours", *REFERENCES),
                echo_probe=False,
            )
        )
    return found


SESSION_SCRIPT = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
user = get_user_model().objects.create_user("bench", password="bench-only")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print("SESSION", session.session_key)
"""


def migrate(env: dict[str, str]) -> None:
    """Create test_project's tables in the throwaway database *env* names (``DJANGO_DB_PATH``).

    Without them our worker still serves the views the benchmarks use, but its outbox relay
    logs "no such table" now and then, which shows in the benchmarks' server-log counts.
    """
    subprocess.run(
        [PY, str(ROOT / "test_project" / "manage.py"), "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=180,
        capture_output=True,
    )


def make_session(env: dict[str, str]) -> str:
    """Migrate the throwaway database in *env* and return the key of a logged-in user's session."""
    manage = [PY, str(ROOT / "test_project" / "manage.py")]
    full_env = {**os.environ, **env}
    migrate(env)
    out = subprocess.run(
        [*manage, "shell", "-c", SESSION_SCRIPT],
        cwd=ROOT,
        env=full_env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    return re.search(r"^SESSION (\w+)$", out, re.M).group(1)


def cpu_loads(interval: float = 0.5) -> dict[int, float]:
    """Busy fraction of each CPU over *interval* seconds, from /proc/stat (steal counts as busy)."""

    def sample() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name != "cpu":
                    ticks = [int(v) for v in values[:8]]
                    out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
        return out

    before = sample()
    time.sleep(interval)
    after = sample()
    return {
        cpu: (after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1])
        for cpu in before.keys() & after.keys()
    }


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to *max_wait* s) until no CPU is busier than *threshold*; return the last peak load.

    The machine is shared: another engineer's test suite on the server's CPU would be measured
    as our slowness. Our own servers are idle between runs, so any load seen here is someone else's.
    """
    deadline = time.monotonic() + max_wait
    while True:
        try:
            peak = max(cpu_loads().values(), default=0.0)
        except OSError:
            return 0.0
        if peak <= threshold or time.monotonic() >= deadline:
            return peak


def run_client_process(
    argv: list[str], timeout: float, label: str = "client", env=None, tail: int = 500
) -> dict:
    """Run a benchmark client to completion; return the JSON of its last stdout line.

    A timeout, a crash or unparsable output becomes ``{"errors": {message: 1}}`` naming *label*.
    """
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"errors": {f"{label} timed out": 1}}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"errors": {f"{label} exited {done.returncode}: {done.stderr.strip()[-tail:]}": 1}}


def note_server_exit(result: dict, server: Server, label: str = "server") -> dict:
    """Record in *result*'s errors that *server* died during the run, with its log's tail."""
    if server.process.poll() is not None:
        result.setdefault("errors", {})[f"{label} exited:\n{server.tail()}"] = 1
    return result


def finish(args, results: dict, errors: list[str]) -> int:
    """Save *results* to ``--json`` if asked, print *errors*; return the exit status (1 if any)."""
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "results": results}, indent=1))
    if errors:
        print("\nERRORS:\n  " + "\n  ".join(errors))
        return 1
    return 0


def run_one(server: Server, scenario: Scenario, args) -> dict:
    """One loadgen.py run (pinned to CPU 1) against *server*; returns its JSON, errors included."""
    name = server.stack.name
    argv = [
        PY,
        str(ROOT / "bench" / "loadgen.py"),
        scenario.kind,
        "--port",
        str(server.port),
        "--path",
        scenario.path(name),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--server-pid",
        str(server.worker_pid),
        "--server-cpu",
        str(SERVER_CPU if pinned(SERVER_CPU, []) else -1),
        "--json",
        *scenario.args,
    ]
    for header in scenario.headers_for(name):
        argv += ["--header", header]
    result = run_client_process(pinned(LOADGEN_CPU, argv), args.warmup + args.duration + 60, "loadgen")
    return note_server_exit(result, server, f"{name} server")


def figure(result: dict, key: str):
    for part in key.split("."):
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    return result


# ---------------------------------------------------------------------------------------------------
# report


def fmt(value) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def ratio_over_rounds(ours: list, other: list):
    """Median over rounds of ours ÷ other in the same round; None unless every round has both."""
    pairs = [o / r for r, o in zip(other, ours, strict=False) if r and o is not None]
    return statistics.median(pairs) if pairs and len(pairs) == len(other) == len(ours) else None


def table(scenarios_: list[Scenario], results: dict, names: list[str]) -> str:
    """scenario | figure | each server | ours/each reference | ceiling: medians over rounds, ratios of pairs.

    *names* are the servers that ran, ours first; the ceiling (if it ran) gets the last column.
    """
    refs = [n for n in names if n[0] == AGAINST] + [n for n in (*REFERENCES, WORKER_ONLY) if n in names]
    columns = ["ours", *refs]
    has_ceiling = "ceiling" in names
    rows = [("scenario", "figure", *columns, *(f"ours/{n}" for n in refs), *(("ceiling",) * has_ceiling))]
    for sc in scenarios_:
        for i, (label, key) in enumerate(sc.figures):
            per = {name: [figure(r, key) for r in results[sc.title].get(name, [])] for name in names}
            med = {name: (statistics.median(v) if v and None not in v else None) for name, v in per.items()}
            cpu = key in ("loadgen_cpu", "server_cpu_other_load")
            cells = {}
            for name in names:
                value = med.get(name)
                if not sc.runs(name):
                    cells[name] = ""
                else:
                    cells[name] = (f"{value:.0%}" if value is not None else "—") if cpu else fmt(value)
            ratios = []
            for ref in refs:
                ratio = ratio_over_rounds(per["ours"], per[ref]) if sc.runs(ref) else None
                shown = f"{ratio:.2f}" if ratio is not None else "—"
                ratios.append("" if cpu or not sc.runs(ref) else shown)
            ceiling = (cells["ceiling"],) if has_ceiling else ()
            rows.append((sc.title if i == 0 else "", label, *(cells[n] for n in columns), *ratios, *ceiling))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if c < 2 else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: The distributions whose versions a benchmark prints by default.
STACK = ("gevent", "greenlet", "gunicorn", "gevent-websocket", "websockets", "Django")


def versions(names: tuple[str, ...] = STACK) -> str:
    """``python X.Y.Z, name version, …`` for *names* ("(not installed)" for a missing one)."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"python {platform.python_version()}, " + ", ".join(found)


# ---------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 2 s after 0.5 s warm-up")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each run (default 1)")
    parser.add_argument("--rounds", type=int, help="runs per scenario and server (default 3)")
    parser.add_argument("--connections", type=int, default=100, help="sockets in the throughput scenario")
    parser.add_argument("--window", type=int, default=16, help="messages in flight per socket there")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight (parallel loops)")
    parser.add_argument(
        "--only",
        type=lambda v: [n.strip() for n in v.split(",") if n.strip()],
        help="comma-separated servers to run besides ours, among "
        + ", ".join((*REFERENCES, WORKER_ONLY, "ceiling")),
    )
    parser.add_argument(
        "--no-session",
        action="store_true",
        help="skip the handshake scenario with a logged-in session (/whoami/)",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the generator's ceiling server")
    parser.add_argument(
        "--postgres",
        type=int,
        metavar="POOL",
        help="put the database on a throwaway PostgreSQL through Django's pool of this max_size "
        "(ours: bench.orm_echo_settings, Channels: bench.orm_settings) instead of SQLite",
    )
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="serve the bare app as 'ours' too (to test this harness without our worker)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="before each run, wait until no CPU is busier than this (default 0.15)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="longest wait for quiet CPUs before each run, s (default 20; 5 quick)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        help="run only the scenarios whose title contains this (repeatable), e.g. 'handshakes'",
    )
    parser.add_argument(
        "--against",
        metavar="DIR",
        action="append",
        help=f"also run our stack from the checkout DIR, as the reference '{AGAINST}DIR' (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.rounds = args.rounds or (1 if quick else 3)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (5.0 if quick else 20.0)
    if not (
        0 < args.duration <= 300
        and 0 <= args.warmup <= 60
        and 1 <= args.rounds <= 20
        and 0 <= args.quiet_wait <= 600
    ):
        parser.error("need 0 < duration <= 300, 0 <= warmup <= 60, 1 <= rounds <= 20, 0 <= quiet-wait <= 600")
    if not (1 <= args.connections <= 900 and 1 <= args.window <= 1000 and 1 <= args.concurrency <= 500):
        parser.error("need 1 <= connections <= 900, 1 <= window <= 1000, 1 <= concurrency <= 500")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and the stderr progress lines in order
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep this process and its log pumps off the server's CPU
    print(f"$ {shlex.join([PY, *sys.argv])}")
    print(versions((*STACK, "uvicorn", "uvloop", "httptools", "channels", "daphne")))
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs; servers on CPU {SERVER_CPU}, "
        f"loadgen on CPU {LOADGEN_CPU}; {args.rounds} round(s) of {args.warmup:g} s warm-up + "
        f"{args.duration:g} s per server and scenario\n"
    )
    if not args.stand_in:
        missing = [
            p for p in ("django_websocket/workers.py", "test_project/wsgi.py") if not (ROOT / p).exists()
        ]
        if missing:
            print(
                f"our stack is not there yet ({', '.join(missing)} missing); try --stand-in", file=sys.stderr
            )
            return 2

    with (
        tempfile.TemporaryDirectory(prefix="django-websocket-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        # A throwaway database: the bench never touches the project's db.sqlite3.
        django_env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_MESSAGE_RATE_LIMIT": "none",  # the echo loads flood on purpose
        }
        if args.postgres:
            # The session and user on PostgreSQL through Django's pool, for ours and Channels alike.
            from bench.orm import MAX_CONNECTIONS, pin_postgres
            from tests.postgres_server import PostgresServer

            try:
                pg = stack.enter_context(PostgresServer(max_connections=MAX_CONNECTIONS))
            except RuntimeError as exc:
                print(f"PostgreSQL did not start: {exc}", file=sys.stderr)
                return 2
            pin_postgres(pg.process.pid, LOADGEN_CPU)
            django_env.update(pg.env(pool=args.postgres), DJANGO_SETTINGS_MODULE="bench.orm_echo_settings")
            print(
                f"PostgreSQL at {pg.url}, pinned to CPU {LOADGEN_CPU}; Django pool max_size {args.postgres}"
            )
        args.session = None
        if not args.no_session and not args.stand_in:
            try:
                args.session = make_session(django_env)
            except (subprocess.SubprocessError, AttributeError) as exc:
                print(f"session scenario skipped: could not create a session ({exc})", file=sys.stderr)
        servers: dict[str, Server] = {}
        found, skipped = stacks(args, django_env)
        for note in skipped:
            print(note)
        try:
            for st in found:
                servers[st.name] = stack.enter_context(serve(st))
                print(
                    f"{st.name:9} port {servers[st.name].port}, worker pid {servers[st.name].worker_pid}:"
                    f" {shlex.join(pinned(SERVER_CPU, st.argv))}"
                )
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        plan = [sc for sc in scenarios(args) if any(w in sc.title for w in args.scenario or [""])]
        for sc in plan:
            for name in [n for n in servers if sc.runs(n)]:
                try:
                    loadgen.probe(
                        servers[name].port,
                        sc.path(name),
                        sc.headers_for(name),
                        echo=sc.echo_probe or as_ours(name) not in sc.paths,
                    )
                except (loadgen.ScenarioError, OSError) as exc:
                    print(
                        f"{name} failed the probe for {sc.title!r}: {exc}\n{servers[name].tail()}",
                        file=sys.stderr,
                    )
                    return 2
        print()
        quiet_from = {name: len(server.log) for name, server in servers.items()}

        results: dict[str, dict[str, list]] = {sc.title: collections.defaultdict(list) for sc in plan}
        errors = []
        for rnd in range(args.rounds):
            for sc in plan:
                order = [n for n in servers if sc.runs(n)]
                if rnd % 2:
                    order.reverse()  # alternate who goes first, so slow drift does not favour one side
                for name in order:
                    before = wait_for_quiet(args.quiet_threshold, args.quiet_wait)
                    result = run_one(servers[name], sc, args)
                    result["cpu_load_before"] = before
                    results[sc.title][name].append(result)
                    for err, count in result.get("errors", {}).items():
                        errors.append(f"round {rnd + 1}, {sc.title}, {name}: {err} (×{count})")
                    print(
                        f"  round {rnd + 1}/{args.rounds}  {sc.title:34} {name:9} "
                        f"{fmt(result.get('rate'))}/s   (others on CPU {SERVER_CPU}: "
                        f"{result.get('server_cpu_other_load', 0):.0%}; busiest CPU before: {before:.0%})",
                        file=sys.stderr,
                        flush=True,
                    )
        # The runs should leave the logs alone: a line per connection or message would be measured too.
        chatter = {name: len(server.log) - quiet_from[name] for name, server in servers.items()}

    print()
    print(table(plan, results, list(servers)))
    print("\nours/X = median over rounds of ours ÷ X in the same round: above 1 is better for rates,")
    print("below 1 is better for latencies and µs.  ceiling = the same generator against a trivial")
    print("epoll echo server (bench/ceiling_echo.py): the generator's own limit.")
    print(
        "server log lines written during the runs: "
        + ", ".join(f"{name} {count}" for name, count in chatter.items())
    )
    runs = [r for by_stack in results.values() for rs in by_stack.values() for r in rs]
    noisy = [r for r in runs if r.get("server_cpu_other_load", 0) > NOISY]
    if noisy:
        print(
            f"{len(noisy)} of {len(runs)} runs had other processes using over {NOISY:.0%} of CPU "
            f"{SERVER_CPU}: the machine was busy, rerun for cleaner figures."
        )
    return finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
