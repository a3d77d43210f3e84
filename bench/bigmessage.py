"""The cost of one big message on everyone else: ``python bench/bigmessage.py`` (``--quick``).

Per server (the reference bare gevent-websocket echo, ``bench.bare_echo:app``, and ours, as in
``bench/run.py``: one worker pinned to CPU 0, clients pinned to CPU 1), in the same run:

* 100 *probe* connections each ping-pong a 32-byte text message (window 1) to ``/echo/`` for the
  whole run; their round-trip times are measured;
* phase A, probes only, D seconds; then phase B, D seconds more while one extra connection sends a
  1 MiB binary message every 0.5 s (or as soon as the previous echo is back, if that takes longer)
  and reads the echo, checked byte for byte.

* phase C, the 1 MiB sender alone for D seconds (probes closed).

Reported per phase: probes' RTT p50/p99/max, probe msgs/s, the server worker's CPU use (from
``/proc/PID/stat``), the big message's round-trip time. The probes keep the worker at ~100 % of its
core in A and B, so CPU deltas between them are ~0 (big messages cost probe throughput instead);
the worker's CPU per 1 MiB message is taken from phase C: its CPU time ÷ messages echoed.

Exit status: 0 if every run was clean, 1 if any errored (wrong echo, a dropped connection…),
2 if a server did not start or failed the probe. Slowness is never an error.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import select
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
from bench import loadgen  # noqa: E402
from bench.run import (  # noqa: E402
    GUNICORN,
    LOADGEN_CPU,
    OUR_WORKER,
    PY,
    SERVER_CPU,
    STOCK_WORKER,
    Stack,
    finish,
    fmt,
    note_server_exit,
    pinned,
    run_client_process,
    serve,
    versions,
    wait_for_quiet,
)

BIG_SIZE = 1 << 20
BIG_MAX_SETTING = 4 * BIG_SIZE  # WEBSOCKET_MAX_MESSAGE_SIZE for ours, so 1 MiB is allowed
P99_TARGET_MS = 50.0
SCRIPT = str(Path(__file__).resolve())


# ---------------------------------------------------------------------------------------------------
# the big sender (its own process, so its masking and copying never hold up the probe loop)


def big_frame(payload: bytes) -> bytes:
    """One final, masked binary client frame of any length."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x82, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", n)
    key = (loadgen.MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + loadgen.MASK + masked


def recv_exact(sock: socket.socket, view: memoryview, deadline: float) -> None:
    got = 0
    while got < len(view):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise loadgen.ScenarioError("timed out waiting for the big echo")
        sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            continue
        if not n:
            raise loadgen.ScenarioError("server closed the big-message connection")
        got += n


def read_message(sock: socket.socket, buf: bytearray, deadline: float) -> tuple[int, int]:
    """Read one (possibly fragmented) unmasked server message into *buf*; return (opcode, length)."""
    view, size, opcode = memoryview(buf), 0, None
    head = bytearray(8)
    while True:
        recv_exact(sock, memoryview(head)[:2], deadline)
        fin, op, n = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
        if head[1] & 0x80:
            raise loadgen.ScenarioError("server frame is masked")
        if n == 126:
            recv_exact(sock, memoryview(head)[:2], deadline)
            n = struct.unpack("!H", head[:2])[0]
        elif n == 127:
            recv_exact(sock, memoryview(head)[:8], deadline)
            n = struct.unpack("!Q", head[:8])[0]
        if opcode is None:
            opcode = op
        elif op != 0:
            raise loadgen.ScenarioError(f"opcode {op} inside a fragmented message")
        if size + n > len(buf):
            raise loadgen.ScenarioError(f"echo longer than {len(buf)} bytes")
        recv_exact(sock, view[size : size + n], deadline)
        size += n
        if fin:
            return opcode, size


def run_big(port: int, path: str, duration: float, interval: float, size: int) -> dict:
    payload = os.urandom(size)
    frame = big_frame(payload)
    buf = bytearray(size + 1)
    sock, _ = loadgen.connect_and_upgrade(port, path, [])
    rtts, errors = [], collections.Counter()
    try:
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        print("ready", flush=True)
        start = time.perf_counter()
        next_at = start
        while time.perf_counter() - start < duration and len(errors) < 5:
            wait = next_at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t = time.perf_counter()
            sock.settimeout(30)
            sock.sendall(frame)
            opcode, n = read_message(sock, buf, t + 30)
            rtts.append(time.perf_counter() - t)
            if opcode != 0x2 or n != size or buf[:n] != payload:
                errors[f"wrong echo of the 1 MiB message (opcode {opcode}, {n} bytes)"] += 1
            next_at = t + interval
        sock.settimeout(5)
        sock.sendall(loadgen.CLIENT_CLOSE)
    except (loadgen.ScenarioError, OSError) as exc:
        errors[f"{type(exc).__name__}: {exc}"] += 1
    finally:
        sock.close()
    out = {"big_messages": len(rtts)}
    if rtts:
        ms = sorted(r * 1000 for r in rtts)
        out.update(big_p50_ms=statistics.median(ms), big_max_ms=ms[-1])
    if errors:
        out["errors"] = dict(errors)
    return out


# ---------------------------------------------------------------------------------------------------
# the probes: 100 ping-pong connections, phase A alone, phase B with the big sender running


def run_probes(port, path, connections, warmup, duration, server_pid, big_argv) -> dict:
    clock = loadgen.CpuClock(server_pid, SERVER_CPU if pinned(SERVER_CPU, []) else None)
    ep = select.epoll()
    socks = [loadgen.connect_and_upgrade(port, path, [])[0] for _ in range(connections)]
    perf = time.perf_counter
    buf = bytearray(1 << 16)
    conns = {}  # fd -> [sock, frames sent, bytes received, sent at]
    lats = {"A": [], "B": []}
    counts = {"A": 0, "B": 0}
    marks, phase, sender, sender_out = {}, None, None, b""
    errors = collections.Counter()
    t0 = perf()
    try:
        for s in socks:
            conns[s.fileno()] = [s, 1, 0, perf()]
            s.send(loadgen.CLIENT_FRAME)
            ep.register(s.fileno(), loadgen.IN)
        hard_end = t0 + warmup + 2 * duration + 30  # bounded even if the sender never gets ready
        while True:
            events = ep.poll(loadgen.TICK)
            now = perf()
            if phase is None and now >= t0 + warmup:
                phase, marks["A0"] = "A", clock.read()
            elif phase == "A" and now >= marks["A0"][0] + duration:
                marks["A1"] = clock.read()
                phase = "wait"  # the sender connects; probes keep running, unmeasured
                sender = subprocess.Popen(big_argv, stdout=subprocess.PIPE, cwd=ROOT)
                os.set_blocking(sender.stdout.fileno(), False)
                ep.register(sender.stdout.fileno(), loadgen.IN)
            if now >= hard_end:
                errors["the big sender did not finish in time"] += 1
                break
            for fd, _ in events:
                if sender is not None and fd == sender.stdout.fileno():
                    sender_out += sender.stdout.read() or b""
                    if phase == "wait" and b"ready\n" in sender_out:
                        phase, marks["B0"] = "B", clock.read()
                    if phase == "B" and sender_out.count(b"\n") >= 2:
                        marks["B1"] = clock.read()  # phase B is exactly the sender's sending time
                        ep.unregister(fd)
                        break
                    elif sender.poll() is not None:
                        errors["the big sender exited early"] += 1
                        ep.unregister(fd)
                        hard_end = now
                    continue
                if fd not in conns:
                    continue
                state = conns[fd]
                n = state[0].recv_into(buf)
                if not n:
                    raise loadgen.ScenarioError("server closed a probe connection mid-run")
                state[2] += n
                if state[2] < state[1] * loadgen.RX:
                    continue
                t = perf()
                if phase in lats:
                    lats[phase].append((t - state[3], 1))
                    counts[phase] += 1
                state[1] += 1
                state[3] = t
                state[0].send(loadgen.CLIENT_FRAME)
            if "B1" in marks:
                break
        # Every probe must get exactly its echoes back (34 bytes per frame sent), nothing else.
        deadline = time.monotonic() + 10
        waiting = {fd for fd, st in conns.items() if st[2] < st[1] * loadgen.RX}
        while waiting and time.monotonic() < deadline:
            for fd, _ in ep.poll(loadgen.TICK):
                if fd in conns:
                    n = conns[fd][0].recv_into(buf)
                    if not n:
                        raise loadgen.ScenarioError("server closed a probe connection while draining")
                    conns[fd][2] += n
                    if conns[fd][2] >= conns[fd][1] * loadgen.RX:
                        waiting.discard(fd)
        bad = [st for st in conns.values() if st[2] != st[1] * loadgen.RX]
        if bad:
            errors[f"probe echoes missing or malformed on {len(bad)} connections"] += 1
    finally:
        loadgen._close_all(socks)
        ep.close()
    result: dict = {}
    if sender is not None:
        try:
            out, _ = sender.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            sender.kill()
            out, _ = sender.communicate()
            errors["the big sender timed out"] += 1
        sender_out += out or b""
        try:
            big = json.loads(sender_out.decode().strip().splitlines()[-1])
            errors.update(big.pop("errors", {}))
            result.update(big)
        except (IndexError, ValueError):
            errors[f"the big sender exited {sender.returncode} without a result"] += 1
    for ph, (a, b) in (("A", ("A0", "A1")), ("B", ("B0", "B1"))):
        if a in marks and b in marks:
            usage = loadgen.CpuClock.usage(marks[a], marks[b])
            result[ph] = {
                **usage,
                "rate": counts[ph] / usage["seconds"],
                **loadgen.weighted_percentiles(lats[ph]),
            }
    if errors:
        result["errors"] = dict(errors)
    return result


# ---------------------------------------------------------------------------------------------------
# orchestration and report

FIGURES = [
    ("probes only", "probe RTT p50 ms", "A.p50_ms"),
    ("", "probe RTT p99 ms", "A.p99_ms"),
    ("", "probe RTT max ms", "A.max_ms"),
    ("", "probe msgs/s", "A.rate"),
    ("", "server CPU", "A.server_cpu"),
    ("", "others on CPU 0", "A.server_cpu_other_load"),
    ("probes + 1 MiB / 0.5 s", "probe RTT p50 ms", "B.p50_ms"),
    ("", "probe RTT p99 ms", "B.p99_ms"),
    ("", "probe RTT max ms", "B.max_ms"),
    ("", "probe msgs/s", "B.rate"),
    ("", "server CPU", "B.server_cpu"),
    ("", "others on CPU 0", "B.server_cpu_other_load"),
    ("", "1 MiB messages echoed", "big_messages"),
    ("", "1 MiB RTT p50 ms", "big_p50_ms"),
    ("", "1 MiB RTT max ms", "big_max_ms"),
    ("1 MiB / 0.5 s alone", "1 MiB RTT p50 ms", "alone.big_p50_ms"),
    ("", "1 MiB RTT max ms", "alone.big_max_ms"),
    ("", "server ms per 1 MiB", "alone.server_ms_per_big"),
]
PERCENT = ("server_cpu", "server_cpu_other_load")


def figure(result: dict, key: str):
    for part in key.split("."):
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    return result


def table(results: dict[str, list[dict]]) -> str:
    rows = [("phase", "figure", "reference", "ours", "ours/ref", "target")]
    for phase, label, key in FIGURES:
        per = {n: [figure(r, key) for r in results.get(n, [])] for n in ("reference", "ours")}
        med = {n: statistics.median(v) if v and None not in v else None for n, v in per.items()}
        pct = key.endswith(PERCENT)
        cells = [(f"{v:.0%}" if v is not None else "—") if pct else fmt(v) for v in med.values()]
        pairs = [o / r for r, o in zip(per["reference"], per["ours"], strict=False) if r and o is not None]
        ratio = f"{statistics.median(pairs):.2f}" if pairs and not pct else ("" if pct else "—")
        target = f"< {P99_TARGET_MS:g}" if key == "B.p99_ms" else ""
        rows.append((phase, label, *cells, ratio, target))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def client_argv(args, server, phase_argv) -> list[str]:
    return pinned(LOADGEN_CPU, [PY, SCRIPT, *phase_argv, "--port", str(server.port), "--path", "/echo/"])


def run_one(server, args) -> dict:
    big = client_argv(
        args, server, ["big", "--duration", str(args.duration), "--interval", str(args.interval)]
    )
    probes = client_argv(
        args,
        server,
        [
            "probes",
            "--connections",
            str(args.connections),
            "--warmup",
            str(args.warmup),
            "--duration",
            str(args.duration),
            "--server-pid",
            str(server.worker_pid),
            "--big-argv",
            json.dumps(big),
        ],
    )
    result = run_client_process(probes, args.warmup + 2 * args.duration + 150)
    # Phase C: the big sender alone. With the probes running the worker is saturated (~100 % of
    # its core either way), so CPU deltas there say nothing; alone, its CPU is all the big messages'.
    clock = loadgen.CpuClock(server.worker_pid, None)
    start = clock.read()
    alone = run_client_process(big, args.duration + 90, "big sender alone")
    usage = loadgen.CpuClock.usage(start, clock.read())
    if alone.get("big_messages") and "server_cpu_seconds" in usage:
        alone["server_ms_per_big"] = usage["server_cpu_seconds"] / alone["big_messages"] * 1000
    for err, count in alone.pop("errors", {}).items():
        result.setdefault("errors", {})[f"alone: {err}"] = count
    result["alone"] = alone
    return note_server_exit(result, server)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    for role in ("probes", "big"):  # the client processes this script starts
        p = sub.add_parser(role)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--path", default="/echo/")
        p.add_argument("--duration", type=float, required=True)
        if role == "probes":
            p.add_argument("--connections", type=int, default=100)
            p.add_argument("--warmup", type=float, default=1.0)
            p.add_argument("--server-pid", type=int)
            p.add_argument("--big-argv", required=True)
        else:
            p.add_argument("--interval", type=float, default=0.5)
            p.add_argument("--size", type=int, default=BIG_SIZE)
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s + 2 × 3 s")
    parser.add_argument("--duration", type=float, help="seconds per phase (default 6; 3 quick)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (default 1; 0.5 quick)")
    parser.add_argument("--rounds", type=int, help="runs per server (default 3; 1 quick)")
    parser.add_argument("--connections", type=int, default=100, help="probe connections")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between 1 MiB messages")
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args(argv)

    if args.role == "big":
        result = run_big(args.port, args.path, args.duration, args.interval, args.size)
        print(json.dumps(result), flush=True)
        return 1 if result.get("errors") else 0
    if args.role == "probes":
        try:
            result = run_probes(
                args.port,
                args.path,
                args.connections,
                args.warmup,
                args.duration,
                args.server_pid,
                json.loads(args.big_argv),
            )
        except (loadgen.ScenarioError, OSError) as exc:
            result = {"errors": {f"{type(exc).__name__}: {exc}": 1}}
        print(json.dumps(result))
        return 1 if result.get("errors") else 0

    args.duration = args.duration or (3.0 if args.quick else 6.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 30 and 1 <= args.rounds <= 10):
        parser.error("need 0 < duration <= 120, 0 <= warmup <= 30, 1 <= rounds <= 10")
    if not (1 <= args.connections <= 900 and 0.05 <= args.interval <= 10):
        parser.error("need 1 <= connections <= 900, 0.05 <= interval <= 10")
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    print(f"$ {shlex.join([PY, *sys.argv])}")
    print(versions())
    print(
        f"{args.rounds} round(s) per server of {args.warmup:g} s warm-up, {args.duration:g} s probes "
        f"only, {args.duration:g} s probes + 1 MiB every {args.interval:g} s, {args.duration:g} s "
        f"1 MiB alone; {args.connections} probe connections\n"
    )
    results: dict[str, list[dict]] = {"reference": [], "ours": []}
    errors = []
    with (
        tempfile.TemporaryDirectory(prefix="django-websocket-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        env = {
            "DJANGO_SETTINGS_MODULE": "test_project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_MAX_MESSAGE_SIZE": str(BIG_MAX_SETTING),
        }
        plan = [
            Stack("reference", [*GUNICORN, "-k", STOCK_WORKER, "bench.bare_echo:app"]),
            Stack("ours", [*GUNICORN, "-k", OUR_WORKER, "test_project.wsgi:websocket"], env),
        ]
        servers = {}
        try:
            for st in plan:
                servers[st.name] = server = stack.enter_context(serve(st))
                print(
                    f"{st.name:9} port {server.port}, worker pid {server.worker_pid}: "
                    f"{shlex.join(pinned(SERVER_CPU, st.argv))}"
                )
                loadgen.probe(server.port, "/echo/")
        except (RuntimeError, loadgen.ScenarioError, OSError) as exc:
            print(f"a server did not start or failed the probe: {exc}", file=sys.stderr)
            return 2
        print()
        for rnd in range(args.rounds):
            order = ["reference", "ours"][:: -1 if rnd % 2 else 1]
            for name in order:
                before = wait_for_quiet(0.15, 5.0 if args.quick else 20.0)
                result = run_one(servers[name], args)
                results[name].append(result)
                for err, count in result.get("errors", {}).items():
                    errors.append(f"round {rnd + 1}, {name}: {err} (×{count})")
                print(
                    f"  round {rnd + 1}/{args.rounds}  {name:9}  "
                    f"probe p99 {fmt(figure(result, 'A.p99_ms'))} → "
                    f"{fmt(figure(result, 'B.p99_ms'))} ms, {result.get('big_messages', 0)} × 1 MiB "
                    f"(busiest CPU before: {before:.0%})",
                    file=sys.stderr,
                    flush=True,
                )
    print()
    print(table(results))
    print("\nreference/ours = medians over rounds; ours/ref = median of per-round ratios (below 1 is")
    print("better for latencies and ms, above 1 for msgs/s). server ms per 1 MiB = the worker's CPU")
    print("while the 1 MiB sender runs alone ÷ messages echoed (with the probes the worker is at ~100 %")
    print("either way: big messages cost probe throughput, not extra CPU). target: the issue's, for ours.")
    return finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
