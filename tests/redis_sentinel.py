"""A real Redis Sentinel group for integration tests: one primary, one replica, three sentinels.

Every process is a ``redis-server`` on 127.0.0.1 and a free port: the two data nodes are
:class:`~tests.redis_server.RedisServer` objects (the replica started with ``--replicaof``),
the sentinels ``redis-server <conf> --sentinel`` with their config file in a temp dir (a
sentinel rewrites its file, so it must be writable). The service is ``mymaster``, quorum
2, ``down-after-milliseconds`` 1000: a killed primary is replaced in a few seconds.

:class:`SentinelGroup` is a context manager that returns once the sentinels see each other
and the replica, and the replica is in sync; it always stops every process it started (by
PID, never by name) and removes its files on exit, even when the test failed.

``SentinelGroup(tls=directory)`` (a directory with ``ca.crt``, ``redis.crt`` and ``redis.key``, see
:func:`make_certificates`) adds a TLS port to every process, replicates and monitors over TLS
(``tls-replication yes``): the sentinels then name TLS ports, and ``url("rediss+sentinel")`` lists
the sentinels' TLS ports. Plain ports stay open for the group's own checks.
``password`` (the data nodes' ``requirepass``, which the sentinels and the replica use) and
``sentinel_password`` (the sentinels' own ``requirepass``) go into :meth:`SentinelGroup.url`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.managed import Managed
from tests.redis_server import PORT_ATTEMPTS, REDIS_SERVER, RedisServer, free_port, wait_until

SERVICE = "mymaster"
#: A sentinel calls the primary down after this long without an answer.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000

SENTINEL_CONF = """\
bind 127.0.0.1
port {port}
daemonize no
dir {directory}
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} {down_after}
sentinel failover-timeout {service} {failover_timeout}
sentinel parallel-syncs {service} 1
{extra}"""


def tls_options(tls: Path, port: int) -> list[tuple[str, str]]:
    """The options of a server (or sentinel) with a TLS *port*, replicating and monitoring over TLS."""
    return [
        ("tls-port", str(port)),
        ("tls-cert-file", str(tls / "redis.crt")),
        ("tls-key-file", str(tls / "redis.key")),
        ("tls-ca-cert-file", str(tls / "ca.crt")),
        ("tls-replication", "yes"),
        ("tls-auth-clients", "no"),
    ]


def make_certificates(directory: Path) -> Path:
    """A throwaway CA (``ca.crt``) and a certificate for 127.0.0.1 signed by it, in *directory*."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    # The extensions Python 3.13's strict verification (VERIFY_X509_STRICT) requires.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=django-websocket test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key", "-out", "redis.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "redis.crt", "-days", "1", "-extfile", "san.cnf")  # fmt: skip
    return directory


class SentinelProcess:
    """One ``redis-server <conf> --sentinel`` on 127.0.0.1 monitoring *primary_port* (TLS with *tls*)."""

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        tls: Path | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = directory
        self.primary_port = primary_port
        self.tls = tls
        self.password = password
        self.sentinel_password = sentinel_password
        self.port: int | None = None
        self.tls_port: int | None = None
        self.process: subprocess.Popen | None = None

    def start(self, startup_timeout: float = 10.0) -> None:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            conf = self.directory / f"sentinel-{port}.conf"
            options: list[tuple[str, str]] = []
            if self.tls is not None:
                self.tls_port = free_port()
                options += tls_options(self.tls, self.tls_port)
            if self.password:
                options.append(("sentinel auth-pass", f"{SERVICE} {self.password}"))
            if self.sentinel_password:
                options += [
                    ("requirepass", self.sentinel_password),
                    ("sentinel sentinel-pass", self.sentinel_password),
                ]
            extra = "".join(f"{name} {value}\n" for name, value in options)
            conf.write_text(
                SENTINEL_CONF.format(
                    port=port,
                    directory=self.directory,
                    service=SERVICE,
                    primary=self.primary_port,
                    down_after=DOWN_AFTER_MS,
                    failover_timeout=FAILOVER_TIMEOUT_MS,
                    extra=extra,
                )
            )
            log = open(self.directory / f"sentinel-{port}.log", "ab")  # noqa: SIM115 - the child keeps it
            self.process = subprocess.Popen(
                [str(REDIS_SERVER), str(conf), "--sentinel"],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self.port = port
            try:
                wait_until(self._answers, startup_timeout, f"sentinel on port {port} answering")
                return
            except AssertionError:
                self.stop()
                if "Address already in use" not in (self.directory / f"sentinel-{port}.log").read_text():
                    raise
        raise RuntimeError(f"no free port for a sentinel in {PORT_ATTEMPTS} attempts")

    def _answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError("sentinel exited")
        return bool(self.client().ping())

    def client(self) -> redis.Redis:
        return redis.Redis(
            "127.0.0.1",
            self.port,
            password=self.sentinel_password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )

    def stop(self) -> None:
        """SIGTERM this sentinel (SIGKILL after a grace period); nothing if it is not running."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


class SentinelGroup(Managed):
    """A started group: ``primary``, ``replica`` (RedisServer), ``sentinels``, ``url()``,
    ``kill_primary()``, ``wait_for_failover()``."""

    def __init__(
        self,
        startup_timeout: float = 30.0,
        tls: Path | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.startup_timeout = startup_timeout
        #: Data nodes keep every write on disk (``RedisServer(persistent=True)``).
        self.persistent = persistent
        self.tls = tls
        self.password = password
        self.sentinel_password = sentinel_password
        #: The port the sentinels name for a data node (its TLS port with ``tls``), by its plain port.
        self.announced: dict[int, int] = {}
        self._next_tls_port = 0
        self.directory = Path(tempfile.mkdtemp(prefix="redis-sentinel-test-"))
        self.primary = RedisServer(extra_args=self._node_args(), persistent=persistent)
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelProcess] = []
        #: Data nodes this group started and killed (kept so close() can remove their files).
        self.killed: list[RedisServer] = []

    def url(self, scheme: str = "redis+sentinel", db: int = 0) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster/0``."""
        tls = scheme.startswith("rediss")
        hosts = ",".join(f"127.0.0.1:{s.tls_port if tls else s.port}" for s in self.sentinels)
        userinfo = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"{scheme}://{userinfo}{hosts}/{SERVICE}/{db}{query}"

    def client(self, server: RedisServer) -> redis.Redis:
        """A redis-py client of data node *server* (with the group's password)."""
        return server.client(password=self.password)

    def _node_args(self) -> tuple[str, ...]:
        """A data node's ``redis-server`` arguments: a TLS port (see :meth:`_started`), a password."""
        options: list[tuple[str, str]] = []
        if self.tls is not None:
            self._next_tls_port = free_port()
            options += tls_options(self.tls, self._next_tls_port)
        if self.password:
            options += [("requirepass", self.password), ("masterauth", self.password)]
        return tuple(arg for name, value in options for arg in (f"--{name}", value))

    def _started(self, server: RedisServer) -> None:
        """Record the port the sentinels will name for *server* (just started)."""
        assert server.port is not None
        self.announced[server.port] = self._next_tls_port if self.tls is not None else server.port

    def sentinel_port(self, server: RedisServer) -> int:
        """The port the sentinels name for *server*."""
        assert server.port is not None
        return self.announced[server.port]

    def start(self) -> None:
        self.primary.start()
        self._started(self.primary)
        primary = str(self.sentinel_port(self.primary))
        self.replica = RedisServer(
            extra_args=("--replicaof", "127.0.0.1", primary, *self._node_args()), persistent=self.persistent
        )
        self.replica.start()
        self._started(self.replica)
        for _ in range(3):
            sentinel = SentinelProcess(
                self.directory,
                self.sentinel_port(self.primary),
                self.tls,
                self.password,
                self.sentinel_password,
            )
            self.sentinels.append(sentinel)
            sentinel.start()
        wait_until(self._ready, self.startup_timeout, "sentinels agreeing on the primary and its replica")

    def _ready(self) -> bool:
        """Every sentinel knows the two others and the replica, and the replica is in sync."""
        assert self.replica is not None
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(SERVICE)
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
        return self.client(self.replica).info("replication")["master_link_status"] == "up"

    def primary_address(self) -> tuple[str, int]:
        """The primary's address as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                return _address(sentinel.client().sentinel_get_master_addr_by_name(SERVICE))
            except redis.RedisError:
                continue
        raise AssertionError("no sentinel answered")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (this group's own process, by PID); return it."""
        killed = self.primary
        killed.kill()
        self.killed.append(killed)
        return killed

    def kill_data_nodes(self) -> None:
        """SIGKILL the primary and the replica: Redis is away (the sentinels stay, with no one to promote)."""
        assert self.replica is not None
        for server in (self.primary, self.replica):
            server.kill()

    def restart_data_nodes(self, timeout: float = 30.0) -> None:
        """Start the primary, then the replica, again on their ports; return once both accept connections.

        The replica starts only once every sentinel sees the primary up again: a replica back
        while they still hold the primary down would be promoted, and the primary demoted
        alive, its clients' open connections then reading a replica that lags.
        """
        primary, replica = self.primary, self.replica
        assert replica is not None
        if primary.process is None:
            primary.start()

        def primary_up() -> bool:
            states = [s.client().sentinel_master(SERVICE) for s in self.sentinels]
            return all(
                _address((state["ip"], state["port"])) == ("127.0.0.1", self.sentinel_port(primary))
                and not state["is_sdown"]
                and not state["is_odown"]
                for state in states
            )

        wait_until(primary_up, timeout, "the sentinels to see the primary up again")
        if replica.process is None:
            replica.start()

    def wait_until_settled(self, timeout: float = 30.0) -> None:
        """Return once the group has been steady for longer than a sentinel's down-after period.

        ``restart_data_nodes()`` returns as soon as the nodes serve, for tests that publish while
        clients are still reconnecting; the Sentinel plugin calls this after such a test.

        Steady: the replica is in sync, and every sentinel names the primary, holds it neither
        down nor disconnected, and knows the replica. A sentinel whose links to a restarted
        primary are still being remade can flag it down for a moment after it first saw it up;
        while every sentinel does, clients get no primary (redis-py and our broker refuse one
        that sentinels call down). Holding the state for a whole down-after period lets such a
        flag show before the next test relies on the group.
        """
        replica = self.replica
        assert replica is not None
        address = ("127.0.0.1", self.sentinel_port(self.primary))

        def steady_now() -> bool:
            if self.client(replica).info("replication")["master_link_status"] != "up":
                return False
            for sentinel in self.sentinels:
                state = sentinel.client().sentinel_master(SERVICE)
                if (
                    _address((state["ip"], state["port"])) != address
                    or state["is_sdown"]
                    or state["is_odown"]
                    or state["is_disconnected"]
                    or state["num-slaves"] < 1
                ):
                    return False
            return True

        steady_since: float | None = None

        def steady_long_enough() -> bool:
            nonlocal steady_since
            try:
                steady = steady_now()
            except redis.RedisError:  # a node or sentinel not answering yet: not steady
                steady = False
            if not steady:
                steady_since = None
                return False
            if steady_since is None:
                steady_since = time.monotonic()
            return time.monotonic() - steady_since > DOWN_AFTER_MS / 1000 * 1.5

        wait_until(steady_long_enough, timeout, "the group to settle after a restart")

    def switch_roles(self, timeout: float = 30.0) -> None:
        """``SENTINEL FAILOVER``: the replica becomes primary, the primary a replica, both alive."""
        assert self.replica is not None
        old = self.primary
        self.sentinels[0].client().sentinel_failover(SERVICE)
        self.wait_for_failover(timeout)
        self.replica = old

    def wait_for_failover(self, timeout: float = 30.0) -> float:
        """Wait until every sentinel names the replica as primary and it says so; return the seconds waited.

        Afterwards ``primary`` is the promoted replica and ``replica`` is ``None``.
        """
        assert self.replica is not None
        replica = self.replica
        started = time.monotonic()

        def promoted() -> bool:
            names = {_address(s.client().sentinel_get_master_addr_by_name(SERVICE)) for s in self.sentinels}
            if names != {("127.0.0.1", self.sentinel_port(replica))}:
                return False
            return self.client(replica).info("replication")["role"] == "master"

        wait_until(promoted, timeout, "a failover to the replica")
        self.primary, self.replica = replica, None
        return time.monotonic() - started

    def close(self) -> None:
        """Stop every process this group started and remove every file it wrote."""
        try:
            for sentinel in self.sentinels:
                sentinel.stop()
        finally:
            for server in (self.primary, self.replica, *self.killed):
                if server is not None:
                    server.close()
            shutil.rmtree(self.directory, ignore_errors=True)


def _address(reply: tuple[bytes | str, int | str]) -> tuple[str, int]:
    host, port = reply
    return (host.decode() if isinstance(host, bytes) else host), int(port)
