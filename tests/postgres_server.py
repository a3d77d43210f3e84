"""A real PostgreSQL for tests and benchmarks: its own cluster, on 127.0.0.1 and a free port.

``with PostgresServer() as pg:`` runs ``initdb`` in a temporary directory, starts ``postgres``
on it (``max_connections`` as asked, trust authentication, its unix socket in the same
directory), creates the database :attr:`~PostgresServer.dbname`, and on exit stops the server
(fast shutdown, then SIGKILL) and removes the directory, even when the test failed. As root
the cluster belongs to, and the server runs as, the ``postgres`` user (PostgreSQL refuses to
run as root); otherwise as the current user. The role :attr:`~PostgresServer.user` is a
superuser, so pytest-django may create its ``test_<name>`` database.

The binaries are the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout;
``scripts/system-deps.sh`` installs the ``postgresql`` package).

As a command, for a whole pytest run or a benchmark against PostgreSQL::

    python -m tests.postgres_server [--pool N] [--conn-max-age S] [--max-connections N] -- CMD...

starts a cluster, runs CMD with :meth:`~PostgresServer.env` in its environment, stops the
cluster and exits with CMD's status.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (bench/ does this): make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.managed import Managed
from tests.redis_server import PORT_ATTEMPTS, free_port

POSTGRES_ROOT = Path("/usr/lib/postgresql")
DBNAME = "django_websocket"
USER = "postgres"
#: The unprivileged account the cluster runs as when we are root.
SYSTEM_USER = "postgres"

#: Durability off: a test cluster is thrown away, and fsync per commit only slows the tests.
FAST_AND_UNSAFE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``, or None."""
    found = [path.parent for path in POSTGRES_ROOT.glob("*/bin/initdb") if path.parent.parent.name.isdigit()]
    return max(found, key=lambda path: int(path.parent.name), default=None)


class PostgresServer(Managed):
    """A throwaway PostgreSQL cluster: ``host``, ``port``, ``user``, ``dbname``, ``url``, ``env()``,
    ``backends()``, ``psql()``.

    Only the processes this object started are ever signalled.
    """

    host = "127.0.0.1"
    user = USER
    dbname = DBNAME

    def __init__(self, max_connections: int = 100, startup_timeout: float = 30.0) -> None:
        self.max_connections = max_connections
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.bin = postgres_bin()
        self.directory = Path(tempfile.mkdtemp(prefix="postgres-test-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self._run_as = _system_user() if os.geteuid() == 0 else None
        if self._run_as is not None:
            os.chown(self.directory, self._run_as.pw_uid, self._run_as.pw_gid)

    # ------------------------------------------------------------ what clients use

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/django_websocket``."""
        return f"postgresql://{self.user}@{self.host}:{self._started_port()}/{self.dbname}"

    def env(self, pool: int | None = None, conn_max_age: int = 0) -> dict[str, str]:
        """The environment for a Django process of ``tests.settings`` to use this database.

        *pool*: the pool's ``max_size`` (``None`` or 0: no pool); *conn_max_age*: ``CONN_MAX_AGE``.
        """
        return {
            "DJANGO_POSTGRES_HOST": self.host,
            "DJANGO_POSTGRES_PORT": str(self._started_port()),
            "DJANGO_POSTGRES_NAME": self.dbname,
            "DJANGO_POSTGRES_USER": self.user,
            "DJANGO_DB_POOL": str(pool or 0),
            "DJANGO_CONN_MAX_AGE": str(conn_max_age),
        }

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run *sql* with ``psql`` in *dbname*; return its output (unaligned, tuples only), stripped.

        Raises ``subprocess.CalledProcessError`` (with psql's stderr) if the statement fails.
        """
        assert self.bin is not None
        result = subprocess.run(
            [
                str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.host, "-p", str(self._started_port()), "-U", self.user, "-d", dbname,
                "-c", sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )  # fmt: skip
        if result.returncode:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result.stdout.strip()

    def create_database(self, name: str, template: str | None = None, timeout: float = 10.0) -> None:
        """``CREATE DATABASE name`` (a copy of *template*, say a migrated database, if given).

        PostgreSQL refuses to copy a template while anyone is connected to it; a client that
        just disconnected (a ``migrate`` run) may take a moment to leave, so that refusal is
        retried until *timeout*.
        """
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.psql(sql)
                return
            except subprocess.CalledProcessError as error:
                if "is being accessed by other users" not in error.stderr or time.monotonic() > deadline:
                    raise RuntimeError(f"{sql} failed: {error.stderr}") from None
            time.sleep(0.05)  # polling the template's last client out

    def backends(self, dbname: str | None = None) -> int:
        """Client backends connected to *dbname* (default :attr:`dbname`) right now.

        Counts ``pg_stat_activity`` rows of type "client backend"; the query's own
        connection (to the ``postgres`` database) is never among them.
        """
        name = (dbname or self.dbname).replace("'", "''")
        return int(
            self.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                f"AND datname = '{name}' AND pid <> pg_backend_pid()"
            )
        )

    @property
    def log(self) -> str:
        """Everything the server logged so far."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Create the cluster, start the server on a free port and create :attr:`dbname`.

        Raises ``RuntimeError`` (with the server's log) if the binaries are missing or it
        does not come up within ``startup_timeout``.
        """
        if self.bin is None:
            raise RuntimeError(
                f"no {POSTGRES_ROOT}/<version>/bin/initdb: the PostgreSQL tests need a real server. "
                "Run `make setup` (scripts/system-deps.sh installs it), or `apt-get install postgresql`."
            )
        self._initdb()
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            if self._try_start(port):
                self.port = port
                self.create_database(self.dbname)
                return
        raise RuntimeError(f"postgres found no free port in {PORT_ATTEMPTS} attempts:\n{self.log}")

    def _initdb(self) -> None:
        assert self.bin is not None
        result = self._run(
            [
                str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _try_start(self, port: int) -> bool:
        """Start postgres on *port*; True once it accepts connections, False if the port was taken."""
        assert self.bin is not None
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={port}",
            f"unix_socket_directories={self.directory}",
            f"max_connections={self.max_connections}",
            *FAST_AND_UNSAFE,
        ]
        log_offset = len(self.log)
        with open(self.log_path, "ab") as log:
            self.process = self._popen(
                [str(self.bin / "postgres"), "-D", str(self.data), *(f"-c{s}" for s in settings)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log[log_offset:]
                self.process = None
                if "could not bind" in output or "Address already in use" in output:
                    return False
                raise RuntimeError(f"postgres exited at startup:\n{output}")
            if self._ready(port):
                return True
            time.sleep(0.05)  # polling another process's readiness
        self.stop()
        raise RuntimeError(f"postgres was not ready within {self.startup_timeout} s:\n{self.log}")

    def _ready(self, port: int) -> bool:
        assert self.bin is not None
        ready = [str(self.bin / "pg_isready"), "-q", "-h", self.host, "-p", str(port), "-U", self.user]
        return subprocess.run(ready, timeout=10).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect clients); SIGKILL after a grace period."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # The whole session: backends whose postmaster is gone would keep the port.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """Stop the server and remove the cluster."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def _started_port(self) -> int:
        if self.port is None:
            raise RuntimeError("PostgresServer has not been started")
        return self.port

    def _run(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, **self._as_owner(), **kwargs)

    def _popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(cmd, **self._as_owner(), **kwargs)

    def _as_owner(self) -> dict:
        """Popen arguments that run a server binary as the cluster's owner, in its directory."""
        if self._run_as is None:
            return {"cwd": self.directory}
        return {
            "cwd": self.directory,
            "user": self._run_as.pw_uid,
            "group": self._run_as.pw_gid,
            "extra_groups": [],
            "env": {**os.environ, "HOME": self._run_as.pw_dir, "USER": SYSTEM_USER, "LOGNAME": SYSTEM_USER},
        }


def _system_user() -> pwd.struct_passwd:
    """The ``postgres`` account (root may not run the server itself)."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root, and there is no {SYSTEM_USER!r} user to run PostgreSQL as: "
            "install Debian's postgresql package (it creates one), or run the tests as another user."
        ) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.postgres_server [options] -- CMD...``: CMD's exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.postgres_server",
        description="Run CMD with a throwaway PostgreSQL cluster (DJANGO_POSTGRES_* in its environment).",
    )
    parser.add_argument("--pool", type=int, default=0, help="the Django pool's max_size (0: no pool)")
    parser.add_argument("--conn-max-age", type=int, default=0, help="CONN_MAX_AGE (with no pool)")
    parser.add_argument("--max-connections", type=int, default=100, help="the server's max_connections")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given (python -m tests.postgres_server -- CMD...)")
    # SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C: CMD killed, cluster stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with PostgresServer(max_connections=args.max_connections) as server:
        env = {**os.environ, **server.env(pool=args.pool, conn_max_age=args.conn_max_age)}
        print(f"==> PostgreSQL {server.url} (max_connections {args.max_connections})", file=sys.stderr)
        return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
