"""A real ``redis-server`` for integration tests, on 127.0.0.1 and a free port.

Redis cannot bind port 0 (``--port 0`` turns TCP off), so a free port is found by
binding a socket to port 0 and releasing it; if another process takes the port in
between, Redis fails to bind and the next free port is tried.

:class:`RedisServer` is a context manager; tests may :meth:`~RedisServer.kill` it and
:meth:`~RedisServer.start` it again on the *same* port, as a Redis restart in production.
No persistence (``--save "" --appendonly no``) unless ``persistent=True`` (an
append-only file synced on every write, so a restart keeps every stream); its files
live in its own temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from tests.managed import Managed

REDIS_SERVER = Path("/usr/bin/redis-server")

#: Attempts at a fresh port when the one found free was taken before Redis bound it.
PORT_ATTEMPTS = 5


class RedisServer(Managed):
    """``redis-server`` on 127.0.0.1: ``url``, ``port``, ``client()``, ``kill()``, ``start()``, ``stop()``.

    ``with RedisServer() as redis_server:`` starts it and always stops it (and removes
    its temp dir) on exit. Only the process this object started is ever signalled.
    """

    def __init__(
        self,
        executable: Path = REDIS_SERVER,
        startup_timeout: float = 10.0,
        persistent: bool = False,
        extra_args: Sequence[str] = (),
        port_picker: Callable[[], int] | None = None,
    ) -> None:
        self.executable = Path(executable)
        #: More ``redis-server`` options, e.g. ``("--replicaof", "127.0.0.1", "6379")``.
        self.extra_args = list(extra_args)
        self.port_picker = port_picker or free_port
        self.persistent = persistent
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.log_path = self.directory / "redis.log"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        if self.port is None:
            raise RuntimeError("RedisServer has not been started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        """Everything Redis logged so far, across restarts."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def client(self, **kwargs: object) -> redis.Redis:
        """A new redis-py client for this server (explicit timeouts; never hides a dead server)."""
        options = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, **kwargs}
        return redis.Redis.from_url(self.url, **options)

    def subscribers(self, key: str) -> int:
        """``PUBSUB NUMSUB`` of broker channel *key*: the connections subscribed to it."""
        with self.client(socket_timeout=1.0) as client:
            return client.pubsub_numsub(key)[0][1]

    def kill_subscriber_connections(self) -> int:
        """``CLIENT KILL TYPE pubsub``: drop every pub/sub connection (a network fault); return how many."""
        with self.client() as client:
            return client.client_kill_filter(_type="pubsub")

    def start(self) -> None:
        """Start Redis and return once it accepts connections.

        The first start picks a free port; later starts (after :meth:`kill` or :meth:`stop`)
        reuse the same one, retrying until ``startup_timeout`` if it is briefly busy.
        Raises ``RuntimeError`` with Redis's log if it does not come up.
        """
        if not self.executable.exists():
            raise RuntimeError(
                f"{self.executable} is missing: the Redis integration tests need a real redis-server. "
                "Run `make setup` (scripts/system-deps.sh installs it), or `apt-get install redis-server`."
            )
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("RedisServer is already running")
        if self.port is not None:
            self._start_on_same_port()
            return
        for _ in range(PORT_ATTEMPTS):
            port = self.port_picker()
            if self._try_start(port):
                self.port = port
                return
        raise RuntimeError(f"redis-server found no free port in {PORT_ATTEMPTS} attempts:\n{self.log}")

    def _start_on_same_port(self) -> None:
        assert self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self._try_start(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server could not bind port {self.port} again:\n{self.log}")
            time.sleep(0.05)  # polling a busy port, not synchronising with our own process

    def _try_start(self, port: int) -> bool:
        """Start Redis on *port*; True once it logs that it is ready, False if the port was taken."""
        log_offset = len(self.log)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.executable),
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--save", "",
                    # persistent: every write on disk before the reply, so even SIGKILL loses nothing
                    "--appendonly", "yes" if self.persistent else "no",
                    "--appendfsync", "always",
                    "--dir", str(self.directory),
                    "--daemonize", "no",
                    "--databases", "1",
                    *self.extra_args,
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log[log_offset:]
                self.process = None
                if "Address already in use" in output:
                    return False
                raise RuntimeError(f"redis-server exited at startup:\n{output}")
            if "Ready to accept connections" in self.log[log_offset:]:
                return True
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server was not ready within {self.startup_timeout} s:\n{self.log}")

    def kill(self) -> None:
        """SIGKILL Redis (a crash: clients see their connections drop) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop Redis: SIGTERM, then SIGKILL after a grace period. Does nothing if not running."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.process = None

    def close(self) -> None:
        """Stop Redis and remove its temp dir."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.05,
    error: type[Exception] = AssertionError,
) -> None:
    """Poll a Redis server's own state until *condition()*; *error* naming *what* after *timeout* s.

    A ``RedisError`` from *condition* (a server still starting, or just killed) means: ask again.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise error(f"{what} within {timeout} s")
        time.sleep(interval)  # polling a server we do not control, not synchronising with our own process
