"""Integration: one scrape of ``/metrics`` adds up two real gunicorn workers (multiprocess mode).

gunicorn with ``-w 2`` and our worker serves ``test_project.wsgi:application`` (pages and
sockets on one port) with ``PROMETHEUS_MULTIPROC_DIR`` in a temporary directory and the
shipped ``test_project/deploy/gunicorn.conf.py`` (its ``child_exit`` hook). Real clients
open sockets on both workers, send messages, get refused (400, 403, 404, 429), close with
codes, flood past the rate limit, share a room through a real Redis; each scrape is parsed
with ``prometheus_client``'s own parser and compared with exact values. Then a worker is
killed (SIGKILL, by the pid gunicorn logged) and the connections gauge drops to the sockets
of the worker that is left. Last, the shipped nginx layout keeps ``/metrics`` from the public.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.servers import ROOT, Server, gunicorn
from tests.test_integration import KEY, handshake, raw_request, status_line

prometheus_parser = pytest.importorskip("prometheus_client.parser")

APP = "test_project.wsgi:application"
CONFIG = str(ROOT / "test_project" / "deploy" / "gunicorn.conf.py")
BOOTED = re.compile(r"Booting worker with pid: (\d+)")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Server) -> Samples:
    """GET /metrics; ``{(sample name, sorted labels): value}`` of the django_websocket samples."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("django_websocket_")
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_values(server: Server, expected: dict[tuple, float], timeout: float = 15.0) -> Samples:
    """Scrape until every *expected* sample has its value (workers sync every second); return the scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        wrong = {key: (samples.get(key, 0.0), want) for key, want in expected.items()}
        wrong = {key: pair for key, pair in wrong.items() if pair[0] != pair[1]}
        if not wrong:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"(got, expected) after {timeout} s: {wrong}")
        time.sleep(0.1)


def key(name: str, **labels: str) -> tuple[str, tuple]:
    return (name, tuple(sorted(labels.items())))


def open_on_both_workers(
    stack: ExitStack, server: Server, at_least: int, path: str = "/notify/"
) -> dict[int, list]:
    """Open *path* sockets until both workers hold one and *at_least* are open; by worker pid.

    *path*: a view of ``tests/websocket_urls.py`` whose first message names its worker's pid.

    Which worker accepts is the kernel's choice (and a worker still loading Django accepts
    nothing): keep opening, for up to 30 s or 300 sockets, all kept open so counts stay exact.
    """
    by_pid: dict[int, list[ClientConnection]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(map(len, by_pid.values())) < 300:
        websocket = stack.enter_context(connect(server.ws_url(path), open_timeout=10, close_timeout=2))
        hello = json.loads(websocket.recv(timeout=10))
        by_pid.setdefault(hello["pid"], []).append(websocket)
        if len(by_pid) == 2 and sum(map(len, by_pid.values())) >= at_least:
            return by_pid
    raise AssertionError(f"{sum(map(len, by_pid.values()))} sockets landed on workers {sorted(by_pid)} only")


def worker_pids(server: Server) -> list[int]:
    return [int(pid) for pid in BOOTED.findall(server.log)]


@pytest.fixture
def metrics_env(server_db, tmp_path) -> dict[str, str]:
    """The servers' environment: the test database, a fresh multiprocess directory, tight limits."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return {
        "DJANGO_DB_PATH": server_db["path"],
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "WEBSOCKET_MAX_CONNECTIONS_PER_USER": "1",
        "WEBSOCKET_MESSAGE_RATE_LIMIT": "5,60",
    }


def test_one_scrape_sums_both_workers_and_a_killed_worker_stops_counting(server_db, metrics_env):
    """Exact totals over 2 workers (sockets, handshakes, messages, closes); a killed worker leaves."""
    cookie = {"Cookie": f"sessionid={server_db['session']}"}
    with gunicorn(APP, workers=2, env=metrics_env, extra_args=["-c", CONFIG]) as server, ExitStack() as stack:
        by_pid = open_on_both_workers(stack, server, at_least=6)
        notify = sum(map(len, by_pid.values()))
        for sockets in by_pid.values():
            for websocket in sockets:
                websocket.send("counted")  # received by the view's events(), nothing sent back
        with connect(server.ws_url("/echo/")) as echo:
            for index in range(3):
                echo.send(f"echo {index}")
                assert echo.recv(timeout=5) == f"echo {index}"
        with connect(server.ws_url("/close/")) as closing:
            with pytest.raises(ConnectionClosed):
                closing.recv(timeout=5)
        for path, extra, status in (
            ("/nope/", [f"Sec-WebSocket-Key: {KEY}"], "404"),
            ("/forbidden/", [f"Sec-WebSocket-Key: {KEY}"], "403"),
            ("/echo/", [], "400"),  # no Sec-WebSocket-Key
        ):
            assert status_line(raw_request(server, handshake(path, *extra))).startswith(f"HTTP/1.1 {status}")
        # alice may hold one socket per worker: the third handshake at the latest is a 429.
        alice: list[ClientConnection] = []
        with pytest.raises(InvalidStatus) as refused:
            for _ in range(20):
                whoami = connect(server.ws_url("/whoami/"), additional_headers=cookie)
                alice.append(stack.enter_context(whoami))
                assert alice[-1].recv(timeout=5) == "alice"
        assert refused.value.response.status_code == 429

        accepted = notify + 2 + len(alice)  # notify, echo, close, alice
        samples = wait_for_values(
            server,
            {
                key("django_websocket_connections"): notify + len(alice),
                key("django_websocket_handshakes_total", status="101"): accepted,
                key("django_websocket_handshakes_total", status="400"): 1,
                key("django_websocket_handshakes_total", status="403"): 1,
                key("django_websocket_handshakes_total", status="404"): 1,
                key("django_websocket_handshakes_total", status="429"): 1,
                key("django_websocket_per_user_refusals_total"): 1,
                key("django_websocket_messages_received_total"): notify + 3,
                key("django_websocket_messages_sent_total"): notify + 3 + len(alice),
                key("django_websocket_closes_total", code="1000"): 1,
                key("django_websocket_closes_total", code="4001"): 1,
                key("django_websocket_handshake_duration_seconds_count"): accepted,
            },
        )
        assert value(samples, "django_websocket_received_bytes_total") > 0
        assert value(samples, "django_websocket_sent_bytes_total") > 0
        assert 0 < value(samples, "django_websocket_handshake_duration_seconds_sum") < accepted * 1.0
        assert value(samples, "django_websocket_handshake_duration_seconds_bucket", le="+Inf") == accepted
        for websocket in alice:
            websocket.close()

        # Past WEBSOCKET_MESSAGE_RATE_LIMIT (5 in 60 s): 1008, in closes_total and its own counter.
        with connect(server.ws_url("/echo/"), max_queue=None) as flooder:
            with pytest.raises(ConnectionClosedError) as flooded:
                for index in range(20):
                    flooder.send(f"flood {index}")
                while True:
                    flooder.recv(timeout=5)
        assert flooded.value.rcvd is not None and flooded.value.rcvd.code == 1008
        samples = wait_for_values(
            server,
            {
                key("django_websocket_connections"): notify,
                key("django_websocket_closes_total", code="1008"): 1,
                key("django_websocket_rate_limit_closes_total"): 1,
                key("django_websocket_closes_total", code="1000"): 1 + len(alice),
                key("django_websocket_handshakes_total", status="101"): accepted + 1,
            },
        )

        # A worker killed outright: gunicorn's child_exit hook removes its live gauge file, its
        # sockets leave django_websocket_connections; its counts stay in the totals.
        victim, survivor = sorted(by_pid, key=lambda pid: len(by_pid[pid]))
        assert set(by_pid) <= set(worker_pids(server))
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log(rf"Booting worker with pid: (?!({victim}|{survivor})\b)\d+", timeout=20)
        wait_for_values(
            server,
            {
                key("django_websocket_connections"): len(by_pid[survivor]),
                key("django_websocket_handshakes_total", status="101"): accepted + 1,
                key("django_websocket_handshakes_total", status="429"): 1,
            },
        )
        assert f"gauge_livesum_{victim}.db" not in os.listdir(metrics_env["PROMETHEUS_MULTIPROC_DIR"])


def test_without_the_hook_a_replacement_worker_removes_the_dead_workers_gauge(metrics_env):
    """No child_exit hook: the worker gunicorn boots in place of a killed one sweeps its live gauge file."""
    with gunicorn(APP, workers=2, env=metrics_env) as server, ExitStack() as stack:
        by_pid = open_on_both_workers(stack, server, at_least=2)
        wait_for_values(server, {key("django_websocket_connections"): sum(map(len, by_pid.values()))})
        victim, survivor = sorted(by_pid, key=lambda pid: len(by_pid[pid]))
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log(rf"Booting worker with pid: (?!({victim}|{survivor})\b)\d+", timeout=20)
        wait_for_values(server, {key("django_websocket_connections"): len(by_pid[survivor])})
        assert f"gauge_livesum_{victim}.db" not in os.listdir(metrics_env["PROMETHEUS_MULTIPROC_DIR"])
    # Stopped (SIGTERM), the workers remove their own live gauge files on the way out.
    left = os.listdir(metrics_env["PROMETHEUS_MULTIPROC_DIR"])
    assert not [name for name in left if name.startswith("gauge_live")], left
    assert [name for name in left if name.startswith("counter_")]  # the totals stay


def test_channel_deliveries_and_broker_reconnects_add_up_over_both_workers(redis_server, metrics_env):
    """Real Redis: a room message on both workers, one delivery per socket; an outage counts reconnects."""
    env = {**metrics_env, "REDIS_URL": redis_server.url}
    with gunicorn(APP, workers=2, env=env) as server, ExitStack() as stack:
        by_pid = open_on_both_workers(stack, server, at_least=4, path="/room/metrics/")
        sockets = [websocket for group in by_pid.values() for websocket in group]
        sockets[0].send("to everyone")  # the room view publishes what a client sends
        for websocket in sockets:
            assert websocket.recv(timeout=10) == "to everyone"
        wait_for_values(
            server,
            {
                key("django_websocket_channel_deliveries_total"): len(sockets),
                key("django_websocket_messages_received_total"): 1,
                key("django_websocket_messages_sent_total"): 2 * len(sockets),  # hello + the message
                key("django_websocket_broker_reconnects_total"): 0,
                key("django_websocket_connections"): len(sockets),
            },
        )
        redis_server.kill()
        try:
            deadline = time.monotonic() + 15
            # Each worker's subscriber fails at least once: 2 or more in the sum.
            while value(scrape(server), "django_websocket_broker_reconnects_total") < 2:
                assert time.monotonic() < deadline, "the workers' reconnection attempts were not counted"
                time.sleep(0.1)
        finally:
            redis_server.start()


def test_shipped_nginx_layout_denies_metrics_to_the_public(server_db, tmp_path):
    """Through nginx-single-upstream.conf /metrics is 403; gunicorn's own port serves it to Prometheus."""
    from tests.test_nginx import NGINX, get, nginx

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    values = {"PROXY_READ_TIMEOUT": "60s", "STATIC_ROOT": str(tmp_path)}
    with gunicorn(APP, env={"DJANGO_DB_PATH": server_db["path"]}) as app:
        values["UPSTREAM"] = f"127.0.0.1:{app.port}"
        with nginx(tmp_path, "nginx-single-upstream.conf", values) as proxy:
            assert get(proxy.url("/metrics"))[0] == 403
            assert get(proxy.url("/metrics/"))[0] != 200  # no other spelling reaches the view
            status, _, body = get(app.url("/metrics"))
            assert status == 200 and "django_websocket_connections " in body
