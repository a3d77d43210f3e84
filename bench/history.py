"""History on the hub: fan-out with history on against off, and resuming 1,000 missed messages, in one run.

``python bench/history.py`` (``--quick``, ``--measure fanout|resume``). It starts a Redis server of its own (a
free port on 127.0.0.1, no persistence, pinned to CPU 1) and one gunicorn worker of ours pinned to CPU 0:
``gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket`` with
``DJANGO_SETTINGS_MODULE=bench.history_settings`` (test_project's settings; websockets routed to
``bench/history_urls.py``; ``fanout:off-*`` keeps no history, ``fanout:on-*`` the default 100 messages,
``resume:*`` 2,000). Clients run as their own processes, pinned to CPU 1.

* fan-out — ``bench/fanout.py``'s client against ``/fanout/<room>/`` (``forward=True``): N sockets
  (default 1,000) subscribed to one channel, a steady phase (one message per second) and a burst (M
  messages published back to back with ``django_websocket.publish()``), then a *held* burst: the same
  M messages published while the worker is stopped (``SIGSTOP``), so that from its release
  (``SIGCONT``) to the last delivery only the hub's own fan-out is timed, not the publisher's pace.
  The room is ``off-…`` (history off: a plain ``PUBLISH``, no id) or ``on-…`` (history on: the publish
  script's ``XADD`` + ``PUBLISH``, messages with ids, checked per socket by the hub). Rounds interleave
  off and on (off, on, on, off, …) on the same server, so drift cancels; on/off is the median of the
  per-round ratios.
* resume — ``python bench/history.py resume-client …``, one process per round, one socket at a time to
  ``/resume/<room>/`` (``forward=True, resume=True``):

  1. *live*: a connected socket; 1,000 messages published back to back; first publish → last delivery;
  2. the socket leaves; 1,000 more messages are published;
  3. *resume*: a socket connects with ``?since=resume:<room>@<last id it saw>``; connect → the
     ``{"ws": "subscribed"}`` frame, which comes after the 1,000 replayed messages;
  4. *resume, nothing missed*: the same with the newest id (connection, subscription and history read);
  5. ``django_websocket.publishing.history(channel, since=…)`` of the same 1,000, from the client process.

  Every socket must get exactly the messages published (ids and data), once, in order, and nothing else.
  Delivery times are the kernel's receive timestamps (``SO_TIMESTAMPNS``), as in ``bench/fanout.py``.

Exit status: 0 if every run was clean, 1 if a message was lost, repeated or reordered, or a run errored,
2 if Redis or the server did not start. Slowness is reported (the issue's target: fan-out with history
at least 70 % of without), never an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
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
SERVER_CPU, LOADGEN_CPU = echo_bench.SERVER_CPU, echo_bench.LOADGEN_CPU
SETTINGS = "bench.history_settings"
MODES = ("off", "on")
TARGET_RATIO = 0.7  # fan-out with history ÷ without (the target)
LIVE, MISSED = b"L", b"M"  # payload kinds (bench/fanout.py's 32-byte payloads) of the resume client
HELD = b"H"  # and of the held burst
HOLD_SETTLE = 0.05  # s between the held burst's last publish and the worker's release
HELD_REPEATS = 5  # held bursts per run
PUMP_EVERY = 50  # publishes between the live phase's reads: the socket's buffers never fill


# ---------------------------------------------------------------------------------------------------
# the fan-out client: bench/fanout.py's, plus a burst the hub gets all at once


class HubClient(fanout.FanoutClient):
    """``bench/fanout.py``'s client; after its burst, the same burst again, five times, with the worker held.

    The publisher's pace bounds the ordinary burst (one ``publish()`` after the other, each
    waiting for Redis's reply; with history each is a script with ``XADD``), and the hub
    batches what arrives meanwhile. The *held* burst takes the publisher out: the worker is
    stopped (``SIGSTOP``) while the messages are published, so Redis queues them on its
    subscriber connection, then released (``SIGCONT``): from release to the last delivery
    is the hub's own fan-out rate, with or without ids.
    """

    def burst(self, publish, count: int, clock, redis_clock, drain: float) -> dict:
        out = super().burst(publish, count, clock, redis_clock, drain)
        out["publish_us_each"] = out["publish_s"] / count * 1e6
        # A held burst is over in 15-40 ms, where one disturbance weighs much: the median of a few.
        held = [self.held_burst(publish, count, clock, redis_clock, drain) for _ in range(HELD_REPEATS)]
        out["held"] = {
            "rates": [h.get("rate") for h in held],
            "lost": sum(h["lost"] for h in held),
            **{key: median([h.get(key) for h in held]) for key in ("rate", "last_delivery_s")},
            "server_cpu_other_load": median([h.get("server_cpu_other_load") for h in held]),
            "runs": held,
        }
        return out

    def held_burst(self, publish, count: int, clock, redis_clock, drain: float) -> dict:
        worker = self.args.server_pid
        if not worker:
            raise fanout.Failed("the held burst needs --server-pid")
        self._measure(HELD, count)
        os.kill(worker, signal.SIGSTOP)
        try:
            for k in range(count):
                publish(fanout.payload(HELD, k))
            time.sleep(HOLD_SETTLE)  # Redis writes them out to the stopped worker's connection
            marks = [(clock.read(), redis_clock.read()[2])]
            released = time.time_ns()
        finally:
            os.kill(worker, signal.SIGCONT)
        deadline = time.monotonic() + drain
        while self.complete < self.n and time.monotonic() < deadline:
            time.sleep(fanout.READ_EVERY)
            self.pump(0)
        marks.append((clock.read(), redis_clock.read()[2]))
        out = self._result(HELD, count, marks, released, exact=False)
        if out["deliveries"] and self.last_rx > released:
            out["rate"] = out["deliveries"] / ((self.last_rx - released) / 1e9)
        settle = time.monotonic() + 0.2  # an extra delivery would show up now
        while time.monotonic() < settle:
            self.pump(0.02)
        return out


def fanout_main(argv) -> int:
    """``bench/fanout.py client`` (same arguments and JSON) with :class:`HubClient` as its client."""
    fanout.FanoutClient = HubClient  # client_main() builds its client by this name; this process only
    return fanout.client_main(argv)


# ---------------------------------------------------------------------------------------------------
# the resume client: one websocket at a time, in the resume protocol


class ResumeClient(fanout.FanoutClient):
    """FanoutClient's reads (kernel receive timestamps) and frame parser, for one socket at a time.

    Every text frame is decoded as the resume protocol's JSON and kept in ``frames``;
    ``message_rx`` and ``subscribed_rx`` are the receive times of the last message and of the
    ``subscribed`` frame.
    """

    def __init__(self, port: int) -> None:
        super().__init__(argparse.Namespace(sockets=1, port=port, path=None))
        self.sock: socket.socket | None = None
        self.frames: list[dict] = []
        self.messages = 0
        self.message_rx = self.subscribed_rx = 0
        self.subscribed: dict | None = None

    def open(self, path: str) -> int:
        """Connect and upgrade; return ``time.time_ns()`` at the 101. Forgets the previous socket's frames."""
        self.frames, self.messages, self.subscribed = [], 0, None
        try:
            sock, rest = loadgen.connect_and_upgrade(self.args.port, path, [], timeout=10.0, echo=False)
        except (loadgen.ScenarioError, OSError) as exc:
            raise fanout.Failed(f"{path}: {type(exc).__name__}: {exc}") from exc
        upgraded = time.time_ns()
        sock.setsockopt(socket.SOL_SOCKET, fanout.SO_TIMESTAMPNS, 1)
        self.sock, self.socks, self.rest, self.index = sock, [sock], [b""], {sock.fileno(): 0}
        self.ep.register(sock.fileno(), loadgen.IN)
        if rest:
            self._received(0, rest, upgraded)
        return upgraded

    def _message(self, i: int, body: bytes, now: int) -> None:
        try:
            frame = json.loads(body)
        except ValueError:
            self.others[f"a frame that is not JSON: {body[:60]!r}"] += 1
            return
        self.frames.append(frame)
        if frame.get("ws") == "message":
            self.messages += 1
            self.message_rx = now
        elif frame.get("ws") == "subscribed":
            self.subscribed, self.subscribed_rx = frame, now

    def wait(self, done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.errors or time.monotonic() > deadline:
                raise fanout.Failed(f"no {what} within {timeout:g} s ({self.messages} messages came)")
            self.pump(0.05)

    def hangup(self, settle: float = 0.1) -> None:
        """Read what else arrives for *settle* s (an extra frame would be an error), then close cleanly."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            self.pump(0.02)
        sock, self.sock = self.sock, None
        self.ep.unregister(sock.fileno())
        self.socks, self.index = [], {}
        try:
            sock.setblocking(True)
            sock.sendall(loadgen.CLIENT_CLOSE)
            loadgen.recv_until(sock, loadgen.ends_with_close, time.monotonic() + 5, self.rest[0])
        except (OSError, loadgen.ScenarioError) as exc:
            self.errors[f"closing: {exc}"] += 1
        finally:
            sock.close()


def publish_many(publish, channel: str, kind: bytes, count: int, client: ResumeClient | None = None):
    """Publish *count* payloads back to back; return their ids and texts. Reads *client* now and then."""
    ids, texts = [], []
    for seq in range(count):
        text = fanout.payload(kind, seq)
        ids.append(str(publish(channel, text)))
        texts.append(text)
        if client is not None and seq % PUMP_EVERY == PUMP_EVERY - 1:
            client.pump(0)
    if not all(ids):
        raise fanout.Failed(f"publish() gave no id: {channel} keeps no history (see {SETTINGS})")
    return ids, texts


def check(client: ResumeClient, what: str, channel: str, ids: list[str], texts: list[str], subscribed=None):
    """*client*'s frames must be exactly the messages *ids*/*texts*, in order, then *subscribed* if given."""
    frames = list(client.frames)
    if subscribed is not None:
        if not frames or frames[-1] != subscribed:
            client.errors[f"{what}: the last frame is {str(frames[-1:])[:200]}, not {subscribed}"] += 1
        frames = frames[:-1]
    got = [(f.get("ws"), f.get("channel"), f.get("id"), f.get("data")) for f in frames]
    want = [("message", channel, i, t) for i, t in zip(ids, texts, strict=True)]
    if got != want:
        got_ids = [g[2] for g in got]
        client.errors[
            f"{what}: {len(got)} frames for {len(want)} messages: {len(set(ids) - set(got_ids))} missing, "
            f"{len(got_ids) - len(set(got_ids))} repeated, in order: {got_ids == sorted(got_ids, key=_seq)}, "
            f"other frames: {[f for f in frames if f.get('ws') != 'message'][:3]}"
        ] += 1


def _seq(message_id) -> tuple[int, int]:
    ms, _, seq = str(message_id).partition("-")
    return (int(ms), int(seq)) if ms.isdigit() and seq.isdigit() else (-1, -1)


def cpu(clock: loadgen.CpuClock, start) -> dict:
    """The server's CPU ms and other processes' load on its CPU since *start* (10 ms ticks)."""
    usage = loadgen.CpuClock.usage(start, clock.read())
    return {
        "server_cpu_ms": usage.get("server_cpu_seconds", 0.0) * 1e3,
        "server_cpu_other_load": usage.get("server_cpu_other_load"),
    }


def resume_round(client: ResumeClient, args, clock: loadgen.CpuClock) -> dict:
    from django_websocket import publish
    from django_websocket.publishing import history

    channel, path, count = f"resume:{args.room}", f"/resume/{args.room}/", args.missed
    out: dict = {"channel": channel, "messages": count}

    # live: a connected socket gets `count` messages published back to back
    client.open(path)
    client.wait(lambda: client.subscribed is not None, 10, "subscribed frame")
    if (client.subscribed.get("replayed"), client.subscribed.get("id")) != (0, "0-0"):
        client.errors[f"live: a fresh channel's subscribed frame is {client.subscribed}"] += 1
    client.frames.clear()
    start, first_ns = clock.read(), time.time_ns()
    seen, seen_texts = publish_many(publish, channel, LIVE, count, client)
    published_ns = time.time_ns()
    client.wait(lambda: client.messages >= count, 30, f"{count} live messages")
    out["live"] = {
        "ms": (client.message_rx - first_ns) / 1e6,
        "publish_ms": (published_ns - first_ns) / 1e6,
        **cpu(clock, start),
    }
    client.hangup()
    check(client, "live", channel, seen, seen_texts)

    # away: `count` messages it misses
    missed, missed_texts = publish_many(publish, channel, MISSED, count)

    # back: resume from the last id seen (all missed), or from the newest (nothing missed); order alternates
    plans = [("resume", seen[-1], missed, missed_texts), ("resume_nothing_missed", missed[-1], [], [])]
    for name, since, ids, texts in plans if args.round % 2 else plans[::-1]:
        start = clock.read()
        t0 = time.time_ns()
        upgraded = client.open(f"{path}?since={channel}@{since}")
        client.wait(lambda: client.subscribed is not None, 30, f"{name}: subscribed frame")
        out[name] = {
            "ms": (client.subscribed_rx - t0) / 1e6,
            "open_ms": (upgraded - t0) / 1e6,
            **cpu(clock, start),
        }
        expected = {"ws": "subscribed", "channel": channel, "id": missed[-1], "replayed": len(ids)}
        client.hangup()
        check(client, name, channel, ids, texts, subscribed=expected)

    # the same messages read by history() in this process
    history(channel, since=missed[-2])  # warm: the first call imports and connects
    t0 = time.perf_counter()
    found = history(channel, since=seen[-1])
    out["history"] = {"ms": (time.perf_counter() - t0) * 1e3}
    if [(m.id, m.data) for m in found] != list(zip(missed, missed_texts, strict=True)):
        client.errors[f"history(): {len(found)} messages, not the {count} published"] += 1
    return out


def resume_main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="history.py resume-client", description="one resume round (used by history.py)"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--room", required=True, help="the channel is resume:<room>, a fresh one")
    parser.add_argument("--round", type=int, default=0, help="odd: resume before resume-nothing-missed")
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--server-cpu", type=int, default=SERVER_CPU, help="-1: don't watch its load")
    args = parser.parse_args(argv)
    import django

    django.setup()
    clock = loadgen.CpuClock(args.server_pid, args.server_cpu if args.server_cpu >= 0 else None)
    client = ResumeClient(args.port)
    result: dict = {}
    try:
        result = resume_round(client, args, clock)
    except fanout.Failed as exc:
        client.errors[str(exc)] += 1
    except Exception as exc:  # a publish that raised, a bug: this run's error
        client.errors[f"{type(exc).__name__}: {exc}"] += 1
    finally:
        client.close()
    client.errors.update({f"unexpected: {k}": v for k, v in client.others.items()})
    if client.errors:
        result["errors"] = dict(client.errors)
    print(json.dumps(result))
    return 1 if client.errors else 0


# ---------------------------------------------------------------------------------------------------
# the harness


def run_fanout(server: echo_bench.Server, mode: str, rnd: int, args, redis_url: str, redis_pid: int, env):
    """One fan-out client run (:class:`HubClient`) against a fresh ``fanout:<mode>-…`` room."""
    room = f"{mode}-{rnd + 1}-{secrets.token_hex(3)}"
    argv = [
        PY, str(ROOT / "bench" / "history.py"), "fanout-client",
        "--port", str(server.port),
        "--path", f"/fanout/{room}/",
        "--channel", f"fanout:{room}",
        "--publisher", "django",
        "--redis-url", redis_url,
        "--sockets", str(args.sockets),
        "--steady", str(args.duration),
        "--burst", str(args.messages),
        "--server-pid", str(server.worker_pid),
        "--server-cpu", str(SERVER_CPU if echo_bench.pinned(SERVER_CPU, []) else -1),
        "--redis-pid", str(redis_pid),
    ]  # fmt: skip
    timeout = 120 + args.sockets / 20 + args.duration + args.sockets * args.messages / 1250
    result = echo_bench.run_client_process(
        echo_bench.pinned(LOADGEN_CPU, argv), timeout, "fanout client", {**os.environ, **env}, tail=800
    )
    return echo_bench.note_server_exit(result, server)


def run_resume(server: echo_bench.Server, rnd: int, args, env) -> dict:
    argv = [
        PY, str(ROOT / "bench" / "history.py"), "resume-client",
        "--port", str(server.port),
        "--room", f"r{rnd + 1}-{secrets.token_hex(3)}",
        "--round", str(rnd),
        "--missed", str(args.missed),
        "--server-pid", str(server.worker_pid),
        "--server-cpu", str(SERVER_CPU if echo_bench.pinned(SERVER_CPU, []) else -1),
    ]  # fmt: skip
    result = echo_bench.run_client_process(
        echo_bench.pinned(LOADGEN_CPU, argv), 120 + args.missed / 20, "resume client", {**os.environ, **env}
    )
    return echo_bench.note_server_exit(result, server)


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratios(pairs) -> list[float]:
    return [a / b for a, b in pairs if a is not None and b]


FANOUT_FIGURES = [
    # (section, label, key in the client's JSON, target). No server µs/delivery for the bursts: they last
    # 15-80 ms, a few of /proc's 10 ms ticks (the JSON has them: burst.server_us_per_delivery…).
    ("held", "deliveries/s", "burst.held.rate", f"on/off ≥ {TARGET_RATIO:g}"),
    ("held", "release → last delivery s", "burst.held.last_delivery_s", ""),
    ("held", "others on CPU 0", "burst.held.server_cpu_other_load", ""),
    ("burst", "deliveries/s", "burst.rate", f"on/off ≥ {TARGET_RATIO:g}"),
    ("burst", "first publish → last delivery s", "burst.last_delivery_s", ""),
    ("burst", "publish() µs each", "burst.publish_us_each", ""),
    ("burst", "redis µs/delivery", "burst.redis_us_per_delivery", ""),
    ("burst", "others on CPU 0", "burst.server_cpu_other_load", ""),
    ("steady", "latency p50 ms", "steady.p50_ms", ""),
    ("steady", "latency p99 ms", "steady.p99_ms", ""),
    ("steady", "to last socket ms, median msg", "steady.to_last_socket_median_ms", ""),
    ("steady", "server µs/delivery", "steady.server_us_per_delivery", ""),
    ("steady", "others on CPU 0", "steady.server_cpu_other_load", ""),
    ("connect", "handshakes/s", "connect.rate", ""),
]


def fanout_table(results: dict[str, list[dict]], args) -> str:
    titles = {
        "held": f"held burst, {args.messages} msgs ×{HELD_REPEATS}",
        "burst": f"burst, {args.messages} msgs",
        "steady": f"steady, 1 msg/s × {args.duration} s",
        "connect": f"open {args.sockets} sockets",
    }
    line = "{:22}  {:32}  {:>11}  {:>11}  {:>6}  {}"
    lines = [line.format("phase", "figure", "history off", "history on", "on/off", "target")]
    lines.append(line.format("-" * 22, "-" * 32, "-" * 11, "-" * 11, "-" * 6, "-" * 13).rstrip())
    shown = set()
    for section, label, key, target in FANOUT_FIGURES:
        per = {m: [echo_bench.figure(r, key) for r in results[m]] for m in MODES}
        if key.endswith("server_cpu_other_load"):
            cells = [f"{median(per[m]):.0%}" if median(per[m]) is not None else "—" for m in MODES]
            ratio = ""
        else:
            cells = [echo_bench.fmt(median(per[m])) for m in MODES]
            ratio = echo_bench.fmt(median(ratios(zip(per["on"], per["off"], strict=False))))
        title = titles[section] if section not in shown else ""
        shown.add(section)
        lines.append(line.format(title, label, *cells, ratio, target).rstrip())
    lost = {
        m: sum(
            echo_bench.figure(r, f"{p}.lost") or 0
            for r in results[m]
            for p in ("steady", "burst", "burst.held")
        )
        for m in MODES
    }
    lines.append(line.format("all phases", "lost", lost["off"], lost["on"], "", "0").rstrip())
    return "\n".join(lines)


RESUME_FIGURES = [
    # (label, phase, key)
    ("resume {n} missed: connect → subscribed ms", "resume", "ms"),
    ("  of which connect → 101 ms", "resume", "open_ms"),
    ("  server CPU ms", "resume", "server_cpu_ms"),
    ("resume, nothing missed: connect → subscribed ms", "resume_nothing_missed", "ms"),
    ("  server CPU ms", "resume_nothing_missed", "server_cpu_ms"),
    ("live {n}: first publish → last delivery ms", "live", "ms"),
    ("  of which publishing them ms", "live", "publish_ms"),
    ("  server CPU ms", "live", "server_cpu_ms"),
    ("history() of the {n} missed ms", "history", "ms"),
]


def resume_table(runs: list[dict], args) -> str:
    def values(phase: str, key: str) -> list:
        return [echo_bench.figure(r, f"{phase}.{key}") for r in runs]

    line = "{:50}  {:>8}  {:>8}  {:>8}"
    lines = [
        line.format("figure (per round)", "median", "min", "max"),
        line.format(*("-" * w for w in (50, 8, 8, 8))),
    ]
    for label, phase, key in RESUME_FIGURES:
        found = [v for v in values(phase, key) if v is not None]
        cells = [echo_bench.fmt(x) for x in (median(found), min(found), max(found))] if found else ["—"] * 3
        lines.append(line.format(label.format(n=f"{args.missed:,}"), *cells))
    resume, nothing = values("resume", "ms"), values("resume_nothing_missed", "ms")
    derived = [
        ("resume ÷ live, same round", ratios(zip(resume, values("live", "ms"), strict=True))),
        ("resume ÷ history(), same round", ratios(zip(resume, values("history", "ms"), strict=True))),
        ("resume ÷ resume with nothing missed", ratios(zip(resume, nothing, strict=True))),
        (
            "replay µs/message (resume − nothing missed)",
            [(a - b) * 1e3 / args.missed for a, b in zip(resume, nothing, strict=True) if a and b],
        ),
    ]
    for label, found in derived:
        cells = [echo_bench.fmt(x) for x in (median(found), min(found), max(found))] if found else ["—"] * 3
        lines.append(line.format(label, *cells))
    return "\n".join(lines)


def parse_args(argv=None):
    """This benchmark's own options; the fan-out's are bench/fanout.py's (same names, defaults and limits)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Fan-out options, as for bench/fanout.py: --sockets N (1000), --duration S of steady phase "
        "(10; 5 quick), --messages M in the burst (200; 100 quick), --rounds R, each history off and on "
        "(3; 1 quick), --quiet-threshold, --quiet-wait, --json FILE (every raw result).",
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--measure", choices=["fanout", "resume"], help="run one measurement only")
    parser.add_argument("--missed", type=int, default=1000, help="messages a resuming client missed")
    parser.add_argument("--resume-rounds", type=int, help="resume rounds (default 15; 5 quick)")
    own, rest = parser.parse_known_args(argv)
    args = fanout.parse_args([*rest, *(["--quick"] if own.quick else [])])
    if args.only:
        parser.error("--only is bench/fanout.py's; here, --measure fanout or --measure resume")
    vars(args).update(vars(own))
    args.resume_rounds = args.resume_rounds or (5 if args.quick else 15)
    # resume:* keeps 2,000 messages (bench/history_settings.py)
    if not (1 <= args.missed <= 1900 and 1 <= args.resume_rounds <= 100):
        parser.error("need 1 <= missed <= 1900, 1 <= resume-rounds <= 100")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["resume-client"]:
        return resume_main(argv[1:])
    if argv[:1] == ["fanout-client"]:
        return fanout_main(argv[1:])
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    fanout.raise_nofile()  # inherited by the server, Redis and the clients
    print(f"$ {shlex.join([PY, 'bench/history.py', *argv])}")
    redis_binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis_version = subprocess.run([redis_binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{echo_bench.versions()}\n{redis_version}")
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs; server on CPU {SERVER_CPU}, clients and Redis "
        f"on CPU {LOADGEN_CPU}; fan-out: {args.rounds} round(s) × (off, on) of {args.sockets} sockets, "
        f"{args.duration} s steady + {args.messages}-message burst; resume: {args.resume_rounds} round(s) of "
        f"{args.missed} missed messages\n"
    )
    results: dict = {"fanout": {m: [] for m in MODES}, "resume": []}
    errors: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="django-websocket-history-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            redis_port, redis_pid, redis_argv = stack.enter_context(fanout.redis_server(tmp))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        print(
            f"redis   port {redis_port}, pid {redis_pid}: "
            f"{shlex.join(echo_bench.pinned(LOADGEN_CPU, redis_argv))}"
        )
        env = {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "DJANGO_DEBUG": "0",
            "DJANGO_DB_PATH": str(Path(tmp) / "bench.sqlite3"),
            "WEBSOCKET_REDIS_URL": redis_url,
            "REDIS_URL": redis_url,
        }
        connections = ["--worker-connections", str(max(2000, args.sockets + 100))]
        ours = echo_bench.Stack(
            "ours",
            [*echo_bench.GUNICORN, *connections, "-k", echo_bench.OUR_WORKER, "test_project.wsgi:websocket"],
            env,
        )
        try:
            server = stack.enter_context(echo_bench.serve(ours))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        command = ["env", *(f"{k}={v}" for k, v in env.items()), *echo_bench.pinned(SERVER_CPU, ours.argv)]
        print(f"server  port {server.port}, worker pid {server.worker_pid}: {shlex.join(command)}\n")
        quiet_from = len(server.log)

        noisy = 0

        def record(label: str, result: dict, before: float) -> dict:
            nonlocal noisy
            result["cpu_load_before"] = before
            errors.extend(f"{label}: {err} (×{count})" for err, count in result.get("errors", {}).items())
            # fan-out phases only: a resume's few 10 ms ticks say little about the machine
            loads = [echo_bench.figure(result, f"{p}.server_cpu_other_load") for p in ("steady", "burst")]
            noisy += any((load or 0) > echo_bench.NOISY for load in loads)
            return result

        for rnd in range(args.rounds if args.measure != "resume" else 0):
            for mode in MODES if rnd % 2 == 0 else MODES[::-1]:
                before = echo_bench.wait_for_quiet(args.quiet_threshold, args.quiet_wait)
                result = run_fanout(server, mode, rnd, args, redis_url, redis_pid, env)
                results["fanout"][mode].append(
                    record(f"fan-out round {rnd + 1}, history {mode}", result, before)
                )
                burst, steady = result.get("burst", {}), result.get("steady", {})
                print(
                    f"  fan-out round {rnd + 1}/{args.rounds}  history {mode:3}  held burst "
                    f"{echo_bench.fmt(echo_bench.figure(burst, 'held.rate'))} deliveries/s, burst "
                    f"{echo_bench.fmt(burst.get('rate'))} deliveries/s, steady p99 "
                    f"{echo_bench.fmt(steady.get('p99_ms'))} ms, lost {steady.get('lost', '?')}+"
                    f"{burst.get('lost', '?')}{', ERRORS' if result.get('errors') else ''}  (others on "
                    f"CPU {SERVER_CPU}: {burst.get('server_cpu_other_load', 0):.0%}; busiest CPU before: "
                    f"{before:.0%})",
                    file=sys.stderr,
                )
        for rnd in range(args.resume_rounds if args.measure != "fanout" else 0):
            before = echo_bench.wait_for_quiet(args.quiet_threshold, args.quiet_wait)
            result = record(f"resume round {rnd + 1}", run_resume(server, rnd, args, env), before)
            results["resume"].append(result)
            print(
                f"  resume round {rnd + 1}/{args.resume_rounds}  resume "
                f"{echo_bench.fmt(echo_bench.figure(result, 'resume.ms'))} ms, nothing missed "
                f"{echo_bench.fmt(echo_bench.figure(result, 'resume_nothing_missed.ms'))} ms, live "
                f"{echo_bench.fmt(echo_bench.figure(result, 'live.ms'))} ms, history() "
                f"{echo_bench.fmt(echo_bench.figure(result, 'history.ms'))} ms"
                f"{', ERRORS' if result.get('errors') else ''}  (busiest CPU before: {before:.0%})",
                file=sys.stderr,
            )
        chatter = len(server.log) - quiet_from
        tail = server.tail(10) if chatter else ""

    if args.measure != "resume":
        per_round = {m: [echo_bench.figure(r, "burst.rate") for r in results["fanout"][m]] for m in MODES}
        print(f"\nFan-out, {args.sockets} sockets on one channel (forward=True), history off against on:\n")
        print(fanout_table(results["fanout"], args))
        print(
            "\nburst deliveries/s per round: "
            + "; ".join(
                f"off {echo_bench.fmt(off)} / on {echo_bench.fmt(on)}"
                for off, on in zip(per_round["off"], per_round["on"], strict=True)
            )
            + "\nmedians over rounds; on/off = median over rounds of on ÷ off in the same round (above 1 is"
            "\nbetter for deliveries/s, below 1 for latencies and µs). The target is printed, not asserted."
        )
    if args.measure != "fanout":
        print(f"\nResume of {args.missed:,} missed messages ({args.resume_rounds} rounds, one socket):\n")
        print(resume_table(results["resume"], args))
        print(
            "\nconnect → subscribed: from before connect() to the kernel's receive time of the subscribed"
            "\nframe (after the replay); live: from before the first publish() to the receive time of the"
            "\nlast message. Server CPU counts 10 ms ticks."
        )
    print(f"server log lines written during the runs: {chatter}")
    if tail:
        print(f"--- last lines of the server's log:\n{tail.rstrip()}")
    if noisy:
        print(
            f"{noisy} fan-out runs had other processes using over {echo_bench.NOISY:.0%} of CPU "
            f"{SERVER_CPU} in their steady or burst phase: the machine was busy, rerun for cleaner figures."
        )
    return echo_bench.finish(args, results, errors)


if __name__ == "__main__":
    sys.exit(main())
