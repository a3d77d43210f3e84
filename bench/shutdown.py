"""Shutdown at scale: how long one worker holding N websockets takes to stop, ours against uvicorn.

``python bench/shutdown.py`` (``--sockets N``, default as many as one worker can hold: its open-file
limit less 100, 19,900 here). For every (server, signal, client behaviour) it starts a fresh server
(one process, pinned to CPU 0), opens N websockets to it from ``--clients`` processes pinned to CPU 1
(``python bench/shutdown.py client …``), waits until all are open, optionally measures the idle
worker (``--idle S``: its CPU over S seconds while the keepalive pings go back and forth, and its RSS
per socket), then signals the server and times, from the signal:

* ``exit``       — the worker process is gone (gunicorn's worker; uvicorn's only process);
* ``first``/``last close`` — the first and last close frame a client read, and their codes;
* ``last EOF``   — the last TCP close a client saw;
* ``CPU s``      — the worker's CPU time (user + system) from the signal to its last sample alive.

Signals: ``TERM`` to gunicorn's master, a plain shutdown (it forwards SIGTERM to the worker, which
has no younger siblings, so ``WEBSOCKET_DRAIN_WINDOW`` spreads the closes, 1001); ``QUIT`` to the
master (forwarded as SIGQUIT: everything closes with 1001 at once). uvicorn gets the same signal
itself. Clients either ``answer`` the close frame, as browsers do, or stay ``silent`` (they answer
pings but never the close): the server then waits out its close timeout.

gunicorn runs with its default ``--graceful-timeout`` (30 s): past it the master kills the worker,
which shows here as ``exit`` ≈ 30 s and sockets without a close frame. ``--against DIR`` adds our
stack from another checkout (``git archive`` of main before a change), measured in the same run.

Nothing is asserted: figures are printed. Exit status 1 if a server failed to start or a run errored.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
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
GRACEFUL_TIMEOUT = 30  # gunicorn's default, stated so the bench's other servers' 3 s does not leak in
SIGNALS = {"TERM": signal.SIGTERM, "QUIT": signal.SIGQUIT}


# ---------------------------------------------------------------------------------------------------
# the client process


def client_main(argv: list[str]) -> int:
    """Open ``--count`` websockets, print ``ready``, then read until every one is closed; print JSON."""
    parser = argparse.ArgumentParser(prog="shutdown.py client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--silent", action="store_true", help="never answer the server's close frame")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds after ready, at most")
    args = parser.parse_args(argv)
    fanout.raise_nofile()
    ep = select.epoll(sizehint=args.count + 8)
    socks: list[socket.socket] = []
    index: dict[int, int] = {}
    bufs: list[bytearray] = []
    close_at = [0.0] * args.count
    codes = [0] * args.count
    eof_at = [0.0] * args.count
    state = {"pings": 0, "open": args.count}

    def pump(timeout: float) -> None:
        """Read what arrived: answer pings (in both modes), note and answer (or not) close frames."""
        for fd, _ev in ep.poll(timeout):
            i = index[fd]
            try:
                data = socks[i].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            now = time.time()
            if not data:
                eof_at[i] = now
                ep.unregister(fd)
                socks[i].close()
                state["open"] -= 1
                continue
            buf = bufs[i]
            buf += data
            for opcode, payload in frames(buf):
                if opcode == 0x9:  # ping: answered in both modes (only the close goes unanswered)
                    state["pings"] += 1
                    send(socks[i], loadgen.client_frame(payload, opcode=0xA))
                elif opcode == 0x8 and not close_at[i]:
                    close_at[i] = now
                    codes[i] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    if not args.silent:
                        send(socks[i], loadgen.client_frame(payload[:2], opcode=0x8))

    t0 = time.perf_counter()
    read_at = t0 + 0.5
    for _ in range(args.count):
        if time.perf_counter() > read_at:  # the first sockets' keepalive pings come while connecting
            pump(0)
            read_at = time.perf_counter() + 0.5
        sock, rest = loadgen.connect_and_upgrade(args.port, args.path, [], timeout=30.0, echo=False)
        index[sock.fileno()] = len(socks)
        socks.append(sock)
        bufs.append(bytearray(rest))
        ep.register(sock.fileno(), loadgen.IN)
    print(f"ready {time.perf_counter() - t0:.2f}", flush=True)
    deadline = time.monotonic() + args.deadline
    while state["open"] and time.monotonic() < deadline:
        pump(loadgen.TICK)
    for sock in socks:
        sock.close()
    tally: dict[int, int] = {}
    for code in codes:
        tally[code] = tally.get(code, 0) + 1
    closes = [t for t in close_at if t]
    eofs = [t for t in eof_at if t]
    print(
        json.dumps(
            {
                "closes": len(closes),
                "first_close": min(closes, default=None),
                "last_close": max(closes, default=None),
                "eofs": len(eofs),
                "last_eof": max(eofs, default=None),
                "codes": tally,
                "still_open": state["open"],
                "pings": state["pings"],
            }
        ),
        flush=True,
    )
    return 0


def frames(buf: bytearray):
    """Yield ``(opcode, payload)`` for each whole server frame at the start of *buf*, consuming them."""
    while len(buf) >= 2:
        length, head = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return
            length, head = struct.unpack_from("!H", buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return
            length, head = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < head + length:
            return
        opcode, payload = buf[0] & 0x0F, bytes(buf[head : head + length])
        del buf[: head + length]
        yield opcode, payload


def send(sock: socket.socket, frame: bytes) -> None:
    try:
        sock.send(frame)
    except OSError:
        pass  # the server is already gone: its EOF is what the next read sees


# ---------------------------------------------------------------------------------------------------
# the coordinator


def proc_stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat``'s fields after the command name, or None once gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else float("nan")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stacks(args, env: dict[str, str]) -> list[echo_bench.Stack]:
    """Ours, every ``--against`` checkout, and uvicorn (when installed and wanted)."""
    connections = ["--worker-connections", str(int(args.sockets / 0.9) + 200)]
    gunicorn = [*echo_bench.GUNICORN, *connections]
    gunicorn[gunicorn.index("--graceful-timeout") + 1] = str(GRACEFUL_TIMEOUT)
    ours = [*gunicorn, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"]
    found = [echo_bench.Stack("ours", ours, {**env, "PYTHONPATH": str(ROOT)})]
    for directory in args.against or ():
        tree = Path(directory).resolve()
        found.append(echo_bench.Stack("@" + tree.name, ours, {**env, "PYTHONPATH": str(tree)}, cwd=tree))
    if "uvicorn" not in args.skip:
        if echo_bench.installed("uvicorn", "uvloop", "httptools"):
            argv = echo_bench.uvicorn("bench.uvicorn_echo:app")
            found.append(echo_bench.Stack("uvicorn", argv, env, echo_bench.UVICORN_LISTENING, None))
        else:
            print("uvicorn skipped: not installed (pip install -r bench/requirements.txt)")
    return [st for st in found if st.name not in args.skip]


def start_clients(server: echo_bench.Server, args, silent: bool) -> list[subprocess.Popen]:
    path = args.path if server.stack.name != "uvicorn" else "/echo/"
    clients = []
    for count in fanout.shares(args.sockets, args.clients):
        argv = [PY, str(Path(__file__).resolve()), "client", "--port", str(server.port), "--path", path]
        argv += ["--count", str(count), "--deadline", str(args.idle + 3 * GRACEFUL_TIMEOUT)]
        argv += ["--silent"] if silent else []
        clients.append(
            subprocess.Popen(
                echo_bench.pinned(echo_bench.LOADGEN_CPU, argv),
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return clients


def one_run(stack: echo_bench.Stack, sig: str, silent: bool, args) -> dict:
    """Start *stack*, fill it, measure it idle (``--idle``), signal it; return the figures."""
    result: dict = {"server": stack.name, "signal": sig, "clients": "silent" if silent else "answer"}
    with echo_bench.serve(stack) as server:
        worker, target = server.worker_pid, server.process.pid
        rss_before = rss_bytes(worker)
        clients = start_clients(server, args, silent)
        try:
            connect = max(float(client.stdout.readline().split()[1]) for client in clients)
            result["connect s"] = connect
            if args.idle:
                cpu0, wall0 = cpu_seconds(worker), time.monotonic()
                time.sleep(args.idle)
                cpu1, wall1 = cpu_seconds(worker), time.monotonic()
                result["idle CPU %"] = 100 * (cpu1 - cpu0) / (wall1 - wall0)
                result["KB/socket"] = (rss_bytes(worker) - rss_before) / args.sockets / 1024
            cpu_before = cpu_last = cpu_seconds(worker)
            sent = time.time()
            os.kill(target, SIGNALS[sig])
            while proc_stat(worker) is not None and server.process.poll() is None:
                cpu_now = cpu_seconds(worker)
                cpu_last = cpu_now if cpu_now == cpu_now else cpu_last  # nan once gone
                if time.time() - sent > 2 * GRACEFUL_TIMEOUT:
                    raise RuntimeError(f"still running {2 * GRACEFUL_TIMEOUT} s after SIG{sig}")
                time.sleep(0.005)
            result["exit s"] = time.time() - sent
            result["CPU s"] = cpu_last - cpu_before  # the worker's, until its last sample alive
            server.process.wait(timeout=2 * GRACEFUL_TIMEOUT)
            reports = [json.loads(client.stdout.readline() or "{}") for client in clients]
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                client.wait()
    closes = [r["last_close"] for r in reports if r.get("last_close")]
    firsts = [r["first_close"] for r in reports if r.get("first_close")]
    eofs = [r["last_eof"] for r in reports if r.get("last_eof")]
    result["first close s"] = min(firsts) - sent if firsts else None
    result["last close s"] = max(closes) - sent if closes else None
    result["last EOF s"] = max(eofs) - sent if eofs else None
    result["close frames"] = sum(r.get("closes", 0) for r in reports)
    codes: dict[str, int] = {}
    for r in reports:
        for code, n in r.get("codes", {}).items():
            if code != "0":
                codes[code] = codes.get(code, 0) + n
    result["codes"] = " ".join(f"{c}×{n}" for c, n in sorted(codes.items()))
    result["pings"] = sum(r.get("pings", 0) for r in reports)
    result["not closed"] = sum(r.get("still_open", 0) for r in reports)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


COLUMNS = (
    "exit s",
    "CPU s",
    "first close s",
    "last close s",
    "last EOF s",
    "close frames",
    "codes",
    "not closed",
)


def table(results: list[dict], idle: bool) -> str:
    columns = ("connect s", "idle CPU %", "KB/socket", "pings", *COLUMNS) if idle else COLUMNS
    head = ["server", "signal", "clients", *columns]
    rows = [
        [str(r.get(k, "")) if not isinstance(r.get(k), float) else f"{r[k]:.2f}" for k in head]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=fanout.most_sockets())
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--signals", default="TERM,QUIT", help="comma-separated: TERM, QUIT")
    parser.add_argument("--modes", default="answer,silent", help="comma-separated: answer, silent")
    parser.add_argument(
        "--idle", type=float, default=0.0, help="seconds of idle measurement before the signal"
    )
    parser.add_argument("--path", default="/echo/", help="our view's path (uvicorn echoes on any)")
    parser.add_argument("--against", action="append", help="another checkout of ours, measured too")
    parser.add_argument("--skip", default="", help="comma-separated stack names to leave out (e.g. uvicorn)")
    args = parser.parse_args(argv)
    args.skip = set(filter(None, args.skip.split(",")))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    fanout.raise_nofile()
    results, errors = [], 0
    with tempfile.TemporaryDirectory(prefix="bench-shutdown-") as tmp:
        env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
        }
        echo_bench.migrate(env)
        found = stacks(args, env)
        for st in found:
            print(f"{st.name:9} {shlex.join(echo_bench.pinned(echo_bench.SERVER_CPU, st.argv))}")
        cpu = echo_bench.LOADGEN_CPU
        print(f"{args.sockets:,} sockets from {args.clients} client processes pinned to CPU {cpu}")
        for sig in args.signals.split(","):
            for mode in args.modes.split(","):
                for st in found:  # servers back to back for each case: compared a minute apart at most
                    if st.name == "uvicorn" and sig != "TERM":
                        continue  # uvicorn's shutdown signals are SIGTERM and SIGINT (the same path)
                    try:
                        results.append(one_run(st, sig, mode == "silent", args))
                    except Exception as exc:  # a server that died or did not start: report, go on
                        errors += 1
                        print(f"{st.name} {sig} {mode}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(table(results, bool(args.idle)))
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2:]))
    sys.exit(main())
