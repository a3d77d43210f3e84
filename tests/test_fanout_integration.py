"""Integration: channels across gunicorn workers through a real Redis.

gunicorn with two workers (``fanout_server``) and a real ``redis-server``
(``redis_server``), both on 127.0.0.1 and free ports. Clients are real websocket
clients over TCP; the views are ``room/<name>/`` and ``notify/`` in
``tests/websocket_urls.py``, whose first message says which worker (pid) serves
the socket, once its subscription is active.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from django_websocket.brokers import remote_broker
from django_websocket.exceptions import PublishError
from django_websocket.messaging.options import Options
from tests.conftest import MAKE_SESSION
from tests.redis_server import RedisServer
from tests.servers import ROOT, Server, gunicorn

PREFIX = "django_websocket:"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# ---------------------------------------------------------------- clients


class Clients:
    """Websocket clients (``websockets.sync``) of one server, all closed on exit."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stack = ExitStack()

    def join(self, path: str, session: str | None = None) -> tuple[ClientConnection, dict]:
        """Open *path* (as *session*'s user if given); return the connection and its hello message."""
        headers = {"Cookie": f"sessionid={session}"} if session else None
        websocket = self.stack.enter_context(
            connect(
                self.server.ws_url(path),
                additional_headers=headers,
                open_timeout=10,
                close_timeout=2,
                max_size=None,
            )
        )
        hello = json.loads(websocket.recv(timeout=10))
        assert hello["subscribed"], hello
        return websocket, hello

    def on_each_worker(self, path: str, workers: int = 2, timeout: float = 30.0) -> list[ClientConnection]:
        """Open connections to *path* until every worker serves one; return one per worker.

        For *timeout* seconds, not a number of attempts: gunicorn logs "Booting worker" before
        the worker has imported Django, and on a busy machine the first worker can take every
        connection for seconds.
        """
        by_pid: dict[int, ClientConnection] = {}
        deadline = time.monotonic() + timeout
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            websocket, hello = self.join(path)
            if hello["pid"] in by_pid:
                websocket.close()
            else:
                by_pid[hello["pid"]] = websocket
            if len(by_pid) == workers:
                return list(by_pid.values())
        raise AssertionError(f"{attempts} connections landed on workers {sorted(by_pid)} only")

    def on_worker(self, path: str, pid: int, attempts: int = 60) -> ClientConnection:
        """Open connections to *path* until worker *pid* serves one; return it."""
        for _ in range(attempts):
            websocket, hello = self.join(path)
            if hello["pid"] == pid:
                return websocket
            websocket.close()
        raise AssertionError(f"{attempts} connections never landed on worker {pid}")

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def expect(websocket: ClientConnection, *messages: str | bytes, timeout: float = 5.0) -> None:
    """Assert that *websocket* receives exactly *messages*, in order, next."""
    for message in messages:
        assert websocket.recv(timeout=timeout) == message


class RawClient:
    """A minimal websocket client on a plain socket, for what ``websockets`` cannot do cheaply:
    a thousand connections in one thread, or a client that stops reading.

    ``feed()`` parses the 101 response, then the server's (unmasked, unfragmented) frames.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.upgraded = False
        self.messages: list[str | bytes] = []
        self.close_code: int | None = None
        self.eof = False

    @classmethod
    def connect(cls, port: int, path: str, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect(), so the window advertised in the handshake is already small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        return cls(sock)

    @property
    def closed(self) -> bool:
        return self.eof or self.close_code is not None

    def feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
            return
        self.buffer += data
        if not self.upgraded:
            head, separator, rest = self.buffer.partition(b"\r\n\r\n")
            if not separator:
                return
            assert head.startswith(b"HTTP/1.1 101"), bytes(head)
            self.upgraded = True
            self.buffer = bytearray(rest)
        while (frame := _parse_frame(self.buffer)) is not None:
            opcode, payload = frame
            if opcode == 0x1:
                self.messages.append(payload.decode())
            elif opcode == 0x2:
                self.messages.append(payload)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005

    def read_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Read (blocking) until *done()*, EOF or a reset; fail after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while not done() and not self.eof:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out: {len(self.messages)} messages, close code {self.close_code}"
            self.sock.settimeout(remaining)
            try:
                self.feed(self.sock.recv(262144))
            except ConnectionResetError:
                self.eof = True

    def hello(self) -> dict:
        """The view's first message (read it if needed)."""
        self.read_until(lambda: bool(self.messages))
        return json.loads(self.messages[0])


def _parse_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """Remove one complete server frame from *buffer*; return (opcode, payload), or None if incomplete."""
    if len(buffer) < 2:
        return None
    opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(buffer[2:10], "big"), 10
    if len(buffer) < start + length:
        return None
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return opcode, payload


def pump(clients: list[RawClient], done: Callable[[], bool], timeout: float) -> None:
    """Read every client (one thread, a selector) until *done()*; fail after *timeout* seconds."""
    selector = selectors.DefaultSelector()
    try:
        for client in clients:
            if not client.eof:
                client.sock.setblocking(False)
                selector.register(client.sock, selectors.EVENT_READ, client)
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            assert remaining > 0, "timed out waiting for the clients"
            for key, _ in selector.select(remaining):
                client = key.data
                try:
                    client.feed(client.sock.recv(65536))
                except BlockingIOError:
                    continue
                if client.eof:
                    selector.unregister(client.sock)
    finally:
        selector.close()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def publish(settings, redis_server: RedisServer) -> Callable[..., int]:
    """``django_websocket.publish`` from the test process, to ``redis_server``."""
    from django_websocket import publish

    settings.WEBSOCKET_REDIS_URL = redis_server.url
    return publish


@pytest.fixture
def clients(fanout_server: Server) -> Iterator[Clients]:
    with Clients(fanout_server) as opened:
        yield opened


@pytest.fixture(scope="module")
def second_alice_session(server_db: dict[str, str]) -> str:
    """Another logged-in session of alice's (another browser)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_DB_PATH": server_db["path"]}
    return subprocess.run(
        [sys.executable, "-c", MAKE_SESSION],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout.strip()


def numsub(redis_server: RedisServer, channel: str) -> int:
    """Subscriber connections Redis has for *channel* (0 while Redis is unreachable)."""
    try:
        return redis_server.subscribers(remote_broker(redis_server.url, Options()).key(channel))
    except redis.RedisError:
        return 0


def wait_for(condition: Callable[[], bool], timeout: float, message: str) -> float:
    """Poll *condition* until true; return the seconds it took; fail after *timeout*."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, message
        time.sleep(0.01)
    return time.monotonic() - start


# ---------------------------------------------------------------- across workers


def test_clients_on_different_workers_talk(clients):
    """A message one client sends reaches a client on the other worker (and the sender)."""
    first, second = clients.on_each_worker("/room/talk/")
    first.send("hello from the first worker")
    expect(second, "hello from the first worker")
    expect(first, "hello from the first worker")
    second.send(b"\x00binary from the second")
    expect(first, b"\x00binary from the second")
    expect(second, b"\x00binary from the second")


def test_subscriptions_end_with_the_socket(clients, redis_server):
    """When the sockets close, their workers unsubscribe: PUBSUB NUMSUB drops from 2 to 0."""
    sockets = clients.on_each_worker("/room/leaving/")
    assert numsub(redis_server, "room:leaving") == 2
    for websocket in sockets:
        websocket.close()
    wait_for(lambda: numsub(redis_server, "room:leaving") == 0, timeout=5, message="still subscribed")


def test_publish_command_reaches_both_workers(clients, fanout_server, redis_server, server_db):
    """``manage.py websocket_publish`` reaches sockets on both workers and prints 2 (workers)."""
    sockets = clients.on_each_worker("/room/command/")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_DB_PATH": server_db["path"],
        "REDIS_URL": redis_server.url,
    }
    result = subprocess.run(
        [
            sys.executable,
            "test_project/manage.py",
            "websocket_publish",
            "room:command",
            "from the command line",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    for websocket in sockets:
        expect(websocket, "from the command line")


def test_json_and_binary_messages(clients, publish):
    """JSON-ables arrive as JSON text, bytes as binary, str as text, each on both workers."""
    sockets = clients.on_each_worker("/room/kinds/")
    assert publish("room:kinds", {"n": 1, "items": ["a", "é"]}).receivers == 2
    assert publish("room:kinds", b"\xff\x00").receivers == 2
    assert publish("room:kinds", "plain text").receivers == 2
    for websocket in sockets:
        assert json.loads(websocket.recv(timeout=5)) == {"n": 1, "items": ["a", "é"]}
        expect(websocket, b"\xff\x00", "plain text")


# ---------------------------------------------------------------- audiences


@pytest.fixture
def listeners(clients, server_db, second_alice_session, editors_group):
    """Sockets on ``notify/``: alice in two sessions (alice is an editor), and an anonymous one."""
    alice, alice_hello = clients.join("/notify/", session=server_db["session"])
    alice_elsewhere, elsewhere_hello = clients.join("/notify/", session=second_alice_session)
    anonymous, anonymous_hello = clients.join("/notify/")
    assert alice_hello["user"] == elsewhere_hello["user"] == "alice"
    assert anonymous_hello["user"] == ""
    alice_workers = {alice_hello["pid"], elsewhere_hello["pid"]}
    return alice, alice_elsewhere, anonymous, alice_workers


def test_publish_to_user(listeners, publish, alice_pk):
    """user=alice reaches both of alice's sockets and not the anonymous one."""
    alice, alice_elsewhere, anonymous, alice_workers = listeners
    assert publish("notifications", "for alice", user=alice_pk).receivers == len(alice_workers)
    publish("notifications", "for everyone")
    expect(alice, "for alice", "for everyone")
    expect(alice_elsewhere, "for alice", "for everyone")
    expect(anonymous, "for everyone")  # Redis keeps publish order: "for alice" would have come first


def test_publish_to_group(listeners, publish, editors_group):
    """group="editors" reaches alice (an editor) and not the anonymous socket."""
    alice, alice_elsewhere, anonymous, alice_workers = listeners
    assert publish("notifications", "for editors", group=editors_group).receivers == len(alice_workers)
    publish("notifications", "for everyone")
    expect(alice, "for editors", "for everyone")
    expect(alice_elsewhere, "for editors", "for everyone")
    expect(anonymous, "for everyone")


def test_publish_to_session(listeners, publish, server_db):
    """session=<key> reaches the socket of that session only, not alice's other session."""
    alice, alice_elsewhere, anonymous, _ = listeners
    assert publish("notifications", "this browser", session=server_db["session"]).receivers == 1
    publish("notifications", "for everyone")
    expect(alice, "this browser", "for everyone")
    expect(alice_elsewhere, "for everyone")
    expect(anonymous, "for everyone")


# ---------------------------------------------------------------- Redis failures


def test_redis_restart_keeps_sockets_and_resyncs(clients, publish, redis_server, fanout_server):
    """Redis killed and restarted: sockets stay open, workers resubscribe within 2 s, clients get Resync.

    This Redis keeps nothing across a restart, so the channel's history is gone: the hub
    cannot tell what it missed and says so (a ``Gap``, which is a ``Resync``).
    """
    sockets = clients.on_each_worker("/room/restart/")
    assert numsub(redis_server, "room:restart") == 2
    publish("room:restart", "before the restart")
    for websocket in sockets:
        expect(websocket, "before the restart")
    already_lost = fanout_server.log.count("the Redis subscriber connection (")
    redis_server.kill()
    try:
        # Let the workers' backoff grow (0.05 s, 0.1 s, 0.2 s, … up to 1 s) before the restart.
        wait_for(
            lambda: fanout_server.log.count("the Redis subscriber connection (") >= already_lost + 8,
            timeout=10,
            message=f"workers did not retry Redis:\n{fanout_server.log}",
        )
    finally:
        redis_server.start()
    took = wait_for(
        lambda: numsub(redis_server, "room:restart") == 2,
        timeout=2.0,
        message=f"workers did not resubscribe within 2 s:\n{fanout_server.log}",
    )
    print(f"resubscribed {took:.2f} s after the restart")
    for websocket in sockets:
        assert json.loads(websocket.recv(timeout=5)) == {"resync": ["room:restart"]}
    assert publish("room:restart", "after the restart").receivers == 2
    for websocket in sockets:
        expect(websocket, "after the restart")
    sockets[0].send("a client message after the restart")
    for websocket in sockets:
        expect(websocket, "a client message after the restart")


def test_publish_with_redis_down_fails_fast(publish, redis_server):
    """publish() with Redis down raises PublishError at once: no seconds of hidden retries."""
    redis_server.kill()
    try:
        start = time.monotonic()
        with pytest.raises(PublishError):
            publish("room:down", "lost")
        assert time.monotonic() - start < 3.0
    finally:
        redis_server.start()
    assert publish("room:down", "Redis is back").receivers == 0  # the cached client reconnects


def test_publish_to_unresponsive_redis_times_out(settings):
    """A Redis that accepts but never answers: PublishError after about WEBSOCKET_REDIS_TIMEOUT (1 s)."""
    from django_websocket import publish

    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)  # the kernel completes handshakes; nothing ever answers
        settings.WEBSOCKET_REDIS_URL = f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0"
        start = time.monotonic()
        with pytest.raises(PublishError):
            publish("room:silent", "lost")
        elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 3.0, elapsed


# ---------------------------------------------------------------- slow consumers


def test_slow_consumer_is_closed_others_keep_receiving(clients, publish, fanout_server):
    """A client that stops reading is closed (1013 or EOF); a client on the same worker gets every message."""
    slow = RawClient.connect(fanout_server.port, "/room/slow/", rcvbuf=4096)
    try:
        pid = slow.hello()["pid"]
        steady = clients.on_worker("/room/slow/", pid)
        payload = bytes(16 * 1024 - 4)
        sent = received = 0
        for _ in range(60):  # up to 6000 messages of 16 KiB; the queue limit is 1000
            for _ in range(100):
                publish("room:slow", sent.to_bytes(4, "big") + payload)
                sent += 1
            while received < sent:  # keep up, so the steady client's own queue stays short
                expect(steady, received.to_bytes(4, "big") + payload, timeout=10)
                received += 1
            if "slow consumer" in fanout_server.log:
                break
        assert "slow consumer" in fanout_server.log, (
            f"{sent} messages, no slow consumer:\n{fanout_server.log}"
        )
        publish("room:slow", "still here")
        expect(steady, "still here")
        slow.read_until(lambda: slow.closed, timeout=20)
        assert slow.eof or slow.close_code == 1013, slow.close_code
        print(f"slow consumer closed ({slow.close_code or 'EOF'}) after {sent} messages published")
        # Whatever it got before the close is a prefix of what was published, in order. Where the
        # worker's hub lost Redis under this flood (the replicas of a Sentinel group slow Redis
        # down enough for its pub/sub output buffer limit), a resync frame says so, and what it
        # missed meanwhile is skipped: still in order, nothing twice.
        frames = slow.messages[1:]
        resyncs = [frame for frame in frames if isinstance(frame, str)]
        assert all("resync" in json.loads(frame) for frame in resyncs), resyncs
        indices = [int.from_bytes(frame[:4], "big") for frame in frames if isinstance(frame, bytes)]
        if resyncs:
            assert indices == sorted(set(indices)), "out of order or twice"
        else:
            assert indices == list(range(len(indices)))
        assert len(indices) < sent
    finally:
        slow.sock.close()


# ---------------------------------------------------------------- a thousand sockets


SOCKETS = 1000


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft fd limit (gunicorn inherits it) to *needed*, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the fd limit ({hard}) is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_thousand_sockets_one_worker_one_redis_connection(server_db):
    """1000 sockets on one worker: one Redis subscriber connection, NUMSUB 1, everyone gets the broadcast."""
    from django.test import override_settings

    from django_websocket import publish

    raise_fd_limit(2 * SOCKETS + 500)
    with RedisServer() as redis_server, gunicorn(
        workers=1,
        env={"REDIS_URL": redis_server.url, "DJANGO_DB_PATH": server_db["path"]},
        # websockets may take 90 % of --worker-connections before handshakes get 503
        extra_args=["--worker-connections", str(2 * SOCKETS)],
    ) as server:  # fmt: skip
        crowd: list[RawClient] = []
        try:
            for _ in range(SOCKETS):
                crowd.append(RawClient.connect(server.port, "/room/crowd/"))
            pump(crowd, lambda: all(client.messages for client in crowd), timeout=60)
            assert {json.loads(client.messages[0])["pid"] for client in crowd} == {
                json.loads(crowd[0].messages[0])["pid"]
            }
            with redis_server.client() as redis:
                assert redis.pubsub_numsub(PREFIX + "room:crowd")[0][1] == 1
                connections = redis.client_list()
            subscribers = [entry for entry in connections if "P" in entry["flags"]]
            assert len(subscribers) == 1, connections
            assert len(connections) <= 3, connections  # the worker's subscriber, this client, a publisher

            with override_settings(WEBSOCKET_REDIS_URL=redis_server.url):
                assert publish("room:crowd", "to the crowd").receivers == 1
            pump(crowd, lambda: all(len(client.messages) >= 2 for client in crowd), timeout=30)
            assert all(client.messages[1] == "to the crowd" for client in crowd)
            assert not any(client.closed for client in crowd)
        finally:
            for client in crowd:
                client.sock.close()
