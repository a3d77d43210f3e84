"""Integration: a reload (SIGHUP) under load, on two real gunicorn workers and a real Redis.

500 resuming clients (``resume-room/<room>/``: forward, resume) while the test publishes 10
messages a second. gunicorn reloads: the old workers wait for the new ones, then close their
sockets with 1012 spread over a second; each client reconnects after a random delay below
250 ms (as websocket.js does after 1012) with ``since`` = the last id it had. Every client
comes back, every message arrives exactly once, in order, and no gap is signalled. How long
the clients were away is printed: a benchmark figure; the bound asserted is generous.
"""

from __future__ import annotations

import json
import random
import selectors
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_websocket import publish
from tests.redis_server import RedisServer
from tests.servers import Server, gunicorn
from tests.test_fanout_integration import RawClient, raise_fd_limit

CLIENTS = 500
RATE = 10  # messages a second
RECONNECT_JITTER = 0.25  # websocket.js's RESTART_DELAY
GENEROUS_BOUND = 10.0  # seconds: a client away longer fails the test (the figure is printed)


@pytest.fixture(scope="module")
def reload_redis() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture(scope="module")
def reload_server(reload_redis: RedisServer, server_db: dict[str, str]) -> Iterator[Server]:
    env = {"REDIS_URL": reload_redis.url, "DJANGO_DB_PATH": server_db["path"], "WEBSOCKET_PRESENCE_TTL": "30"}
    with gunicorn(env=env, workers=2, extra_args=["--graceful-timeout", "20"]) as running:
        yield running


class Resumer:
    """One resuming client: its messages' ids, its gaps, and when it was away."""

    def __init__(self, server: Server, room: str, presence: bool) -> None:
        self.server, self.room = server, room
        self.query = "" if presence else "&presence=off"
        self.ids: list[str] = []
        self.gaps = 0
        self.last: str | None = None
        self.subscriptions = 0
        self.away: list[float] = []  # seconds from each close to the next "subscribed"
        self.closed_at: float | None = None
        self.closes: list[float] = []  # when each close arrived (time.monotonic())
        self.backs: list[float] = []  # when each later "subscribed" arrived
        self.reconnect_at: float | None = None
        self.close_codes: list[int | None] = []
        self.client = self.connect()
        self.read = 0

    def connect(self) -> RawClient:
        since = f"&since=room:{self.room}@{self.last}" if self.last else ""
        client = RawClient.connect(self.server.port, f"/resume-room/{self.room}/?name=r{self.query}{since}")
        client.sock.setblocking(False)
        return client

    def consume(self) -> None:
        for text in self.client.messages[self.read :]:
            if isinstance(text, bytes):
                continue
            frame = json.loads(text)
            if frame.get("ws") == "message":
                self.ids.append(frame["id"])
                self.last = frame["id"]
            elif frame.get("ws") == "gap":
                self.gaps += 1
            elif frame.get("ws") == "subscribed":
                self.subscriptions += 1
                self.last = frame["id"]
                if self.closed_at is not None:
                    self.away.append(time.monotonic() - self.closed_at)
                    self.backs.append(time.monotonic())
                    self.closed_at = None
        self.read = len(self.client.messages)


def run_clients(resumers: list[Resumer], until, timeout: float) -> None:
    """Read every client, reconnecting closed ones after a jitter, until *until()*."""
    selector = selectors.DefaultSelector()
    for resumer in resumers:
        selector.register(resumer.client.sock, selectors.EVENT_READ, resumer)
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert time.monotonic() < deadline, "timed out"
            for key, _ in selector.select(0.02):
                resumer = key.data
                try:
                    resumer.client.feed(resumer.client.sock.recv(65536))
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    resumer.client.eof = True
                resumer.consume()
                if resumer.client.closed:
                    selector.unregister(resumer.client.sock)
                    resumer.client.sock.close()
                    resumer.close_codes.append(resumer.client.close_code)
                    resumer.closed_at = time.monotonic()
                    resumer.closes.append(resumer.closed_at)
                    resumer.reconnect_at = resumer.closed_at + random.uniform(0, RECONNECT_JITTER)
            now = time.monotonic()
            for resumer in resumers:
                if resumer.reconnect_at is not None and resumer.reconnect_at <= now:
                    resumer.reconnect_at = None
                    resumer.client, resumer.read = resumer.connect(), 0
                    selector.register(resumer.client.sock, selectors.EVENT_READ, resumer)
    finally:
        selector.close()


@pytest.mark.parametrize("presence", [True, False], ids=["presence", "no-presence"])
def test_reload_under_load_loses_nothing_and_clients_come_back_fast(reload_server, reload_redis, presence):
    """SIGHUP with 500 resuming clients and 10 msg/s: all back, every message once, no gap."""
    raise_fd_limit(4 * CLIENTS)
    room = f"reload-{uuid.uuid4().hex[:8]}"
    resumers = [Resumer(reload_server, room, presence) for _ in range(CLIENTS)]
    published: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        with override_settings(WEBSOCKET_REDIS_URL=reload_redis.url):
            while not stop.wait(1 / RATE):
                published.append(publish(f"room:{room}", {"n": len(published)}))

    try:
        run_clients(resumers, lambda: all(r.subscriptions for r in resumers), timeout=60)
        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            run_clients(resumers, lambda: len(published) >= RATE, timeout=30)  # a second of traffic
            reload_server.process.send_signal(signal.SIGHUP)
            reloaded = time.monotonic()
            run_clients(resumers, lambda: all(r.subscriptions >= 2 for r in resumers), timeout=60)
            run_clients(resumers, lambda: len(published) >= 5 * RATE + len(published) // 2, timeout=30)
        finally:
            stop.set()
            thread.join()
        final = published[-1]
        run_clients(resumers, lambda: all(r.last == final for r in resumers), timeout=30)
    finally:
        for resumer in resumers:
            resumer.client.sock.close()
    away = sorted(seconds for resumer in resumers for seconds in resumer.away)
    codes = {code for resumer in resumers for code in resumer.close_codes}
    closes = sorted(t - reloaded for r in resumers for t in r.closes)
    backs = sorted(t - reloaded for r in resumers for t in r.backs)
    print(
        f"{CLIENTS} clients ({'with' if presence else 'without'} presence), {len(published)} messages: "
        "back after a reload in "
        f"p50 {away[len(away) // 2]:.2f} s, p99 {away[int(len(away) * 0.99)]:.2f} s, max {away[-1]:.2f} s; "
        f"close codes {sorted(code or 0 for code in codes)}; after the SIGHUP, closes from {closes[0]:.2f} "
        f"to {closes[-1]:.2f} s, clients back from {backs[0]:.2f} to {backs[-1]:.2f} s"
    )
    for resumer in resumers:
        assert resumer.ids == published and resumer.gaps == 0  # exactly once, in order, no gap
    assert codes == {1012}
    assert away[-1] < GENEROUS_BOUND
