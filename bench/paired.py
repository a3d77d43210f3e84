"""Server CPU per handshake of two checkouts, measured at the same time on the same core.

``bench/run.py --against`` and ``bench/handshake_profile.py --against`` alternate the two
checkouts: on this 2-CPU machine, whatever else runs meanwhile (a test run, another benchmark)
lands on one of them and not the other, and a 5 % change drowns in it. Here both servers run at
once, each one gunicorn worker pinned to CPU 0 serving test_project's ``/echo/`` through its whole
``MIDDLEWARE``, each under its own ``bench/loadgen.py handshake`` on CPU 1 (50 loops). They share
the core, its caches and whatever else the machine does, so that noise lands on both alike: the
ratio of their server CPU per handshake is the figure. The two swap ports and start order every
round::

    python bench/paired.py /tmp/before                  # this checkout against /tmp/before, 4 rounds
    python bench/paired.py /tmp/before --rounds 8 --duration 12
    python bench/paired.py /tmp/before --path /whoami/ --session   # a logged-in session (SQLite)

Each checkout gets a throwaway SQLite database, migrated (and given a session) by ``bench/run.py``'s
helpers, which run this checkout's ``test_project/manage.py``; gunicorn runs from this machine's
``.venv`` with ``PYTHONPATH`` set to the checkout. Traffic goes to 127.0.0.1 only; both servers are
stopped (their process groups) when a round ends, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: bench.run's helpers, as bench/run.py imports bench

from bench.run import make_session, migrate  # noqa: E402

LOADGEN = ROOT / "bench" / "loadgen.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def checkout_env(checkout: Path, directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "DJANGO_SETTINGS_MODULE": "test_project.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_DB_PATH": str(directory / "db.sqlite3"),
        "WEBSOCKET_MESSAGE_RATE_LIMIT": "none",
    }


@contextlib.contextmanager
def server(checkout: Path, port: int, session: bool):  # type: ignore[no-untyped-def]
    """One gunicorn worker of *checkout* on CPU 0; yields ``(worker pid, cookie or None)``."""
    with tempfile.TemporaryDirectory(prefix="paired-") as name:
        directory = Path(name)
        env = checkout_env(checkout, directory)
        cookie = None
        if session:
            cookie = "sessionid=" + make_session(env)  # migrates too
        else:
            migrate(env)
        log = directory / "error.log"
        command = [
            "taskset", "-c", "0", sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
            "--worker-connections", "2000", "--error-logfile", str(log), "--graceful-timeout", "3",
            "--no-control-socket", "-k", "django_websocket.workers.GeventWebSocketWorker",
            "test_project.wsgi:websocket",
        ]  # fmt: skip
        process = subprocess.Popen(command, env=env, cwd=checkout, start_new_session=True)
        try:
            yield worker_pid(log, process), cookie
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def worker_pid(log: Path, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited ({process.returncode}):\n{log.read_text()}")
        found = re.search(r"Booting worker with pid: (\d+)", log.read_text() if log.exists() else "")
        if found:
            time.sleep(1.5)  # the worker loads Django and the middleware
            return int(found.group(1))
        time.sleep(0.1)
    raise SystemExit(f"no worker booted:\n{log.read_text()}")


def load(port: int, pid: int, args: argparse.Namespace, cookie: str | None) -> subprocess.Popen:
    command = [
        "taskset", "-c", "1", sys.executable, str(LOADGEN), "handshake", "--port", str(port),
        "--path", args.path, "--concurrency", str(args.concurrency), "--warmup", "2",
        "--duration", str(args.duration), "--server-pid", str(pid), "--server-cpu", "0", "--json",
    ]  # fmt: skip
    if cookie:
        command += ["--header", f"Cookie: {cookie}"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def one_round(checkouts: list[Path], args: argparse.Namespace) -> dict[Path, dict]:
    """Both checkouts at once; ``{checkout: loadgen result}``."""
    with contextlib.ExitStack() as stack:
        started = []
        for checkout in checkouts:
            port = free_port()
            pid, cookie = stack.enter_context(server(checkout, port, args.session))
            started.append((checkout, port, pid, cookie))
        loads = [(checkout, load(port, pid, args, cookie)) for checkout, port, pid, cookie in started]
        results = {}
        for checkout, process in loads:
            out, _ = process.communicate(timeout=args.duration + 60)
            if process.returncode:
                raise SystemExit(f"the load generator failed for {checkout}")
            results[checkout] = json.loads(out)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("against", type=Path, help="the other checkout")
    parser.add_argument("--this", type=Path, default=ROOT, help="this checkout (default: bench/'s own)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per round")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight per server")
    parser.add_argument("--path", default="/echo/")
    parser.add_argument("--session", action="store_true", help="send a logged-in user's session cookie")
    args = parser.parse_args()
    this, other = args.this.resolve(), args.against.resolve()
    ratios, figures = [], {this: [], other: []}
    for number in range(args.rounds):
        order = [this, other] if number % 2 == 0 else [other, this]
        results = one_round(order, args)
        us = {checkout: results[checkout]["server_us_per_handshake"] for checkout in order}
        for checkout in order:
            figures[checkout].append(us[checkout])
        ratios.append(us[this] / us[other])
        print(
            f"round {number + 1}: {this} {us[this]:.0f} µs/hs ({results[this]['rate']:.0f}/s), "
            f"{other} {us[other]:.0f} µs/hs ({results[other]['rate']:.0f}/s), ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"server CPU µs per handshake, {args.path}, both servers at once on CPU 0, {args.rounds} rounds")
    for checkout, values in figures.items():
        print(f"  {str(checkout):40} median {statistics.median(values):6.0f} µs")
    print(
        f"  ratio this/against: median {statistics.median(ratios):.3f} "
        f"(rounds {', '.join(f'{r:.3f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
