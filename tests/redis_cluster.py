"""A real Redis Cluster for integration tests: six ``redis-server --cluster-enabled yes`` nodes.

Three masters and three replicas on 127.0.0.1, formed with ``redis-cli --cluster create
--cluster-replicas 1``. Each node also listens on its cluster bus port, port + 10000, so
ports are picked below 55536 with both free. :class:`RedisClusterGroup` is a context
manager that always stops every node it started (by PID) and removes their directories;
:meth:`~RedisClusterGroup.kill_master_of` SIGKILLs the master serving a key and returns
once its replica has taken over.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from typing import Any

from redis.cluster import ClusterNode, RedisCluster

from tests.managed import Managed
from tests.redis_server import RedisServer, wait_until

REDIS_CLI = "/usr/bin/redis-cli"
NODES = 6
#: Milliseconds before a silent master is failed over: short, so tests wait seconds, not tens.
NODE_TIMEOUT_MS = 1000


def free_cluster_port() -> int:
    """A port on 127.0.0.1 free a moment ago whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 55000)
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free pair of ports (port, port + 10000) for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisClusterGroup(Managed):
    """Six nodes forming one cluster: ``url`` (``redis+cluster://`` with two seeds), ``client()``."""

    def __init__(self, startup_timeout: float = 30.0, persistent: bool = False) -> None:
        """*persistent*: every node keeps every write on disk (``RedisServer(persistent=True)``)."""
        self.startup_timeout = startup_timeout
        self.nodes = [
            RedisServer(
                persistent=persistent,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # a replica takes over however long its master was away from it
                    "--cluster-replica-validity-factor",
                    "0",
                ],
                port_picker=free_cluster_port,
            )  # fmt: skip
            for _ in range(NODES)
        ]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return f"redis+cluster://{seeds}"

    def client(self, **kwargs: Any) -> RedisCluster:
        """A redis-py cluster client for the test's own checks (explicit timeouts unless *kwargs* say)."""
        startup = [ClusterNode("127.0.0.1", node.port) for node in self.nodes if node.process is not None]
        options = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, **kwargs}
        return RedisCluster(startup_nodes=startup, **options)

    def subscribers(self, key: str) -> int:
        """``PUBSUB SHARDNUMSUB`` of broker channel *key* on the master serving its slot."""
        with self.master_of(key).client(socket_timeout=1.0) as client:
            return client.execute_command("PUBSUB", "SHARDNUMSUB", key)[1]

    def kill_subscriber_connections(self) -> int:
        """``CLIENT KILL TYPE pubsub`` on every master (sharded subscribers too); return how many."""
        return sum(master.kill_subscriber_connections() for master in self.masters())

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        found = []
        for node in self.nodes:
            if node.process is None:
                continue
            role = node.client().execute_command("ROLE")[0]
            if role in (b"master", "master"):
                found.append(node)
        return found

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=self.startup_timeout,
        )
        self.wait_until_ok()
        self.wait_until_replicated()

    def kill_every_node(self) -> None:
        """SIGKILL every node: the whole cluster is away (each node keeps its ``nodes.conf``)."""
        for node in self.nodes:
            node.kill()

    def restart_every_node(self) -> None:
        """Start every node again on its port; return once the cluster, re-formed from each
        node's ``nodes.conf``, is ok (its data is gone, as a restarted Redis's is)."""
        for node in self.nodes:
            if node.process is None:
                node.start()
        self.wait_until_ok()

    def wait_until_replicated(self, timeout: float | None = None) -> None:
        """Return once every master has a replica in sync (what a failover then keeps)."""

        def in_sync() -> bool:
            infos = [master.client().info("replication") for master in self.masters()]
            return len(infos) == 3 and all(_in_sync(info) for info in infos)

        wait_until(in_sync, timeout or self.startup_timeout, "the replicas in sync", 0.1, RuntimeError)

    def wait_until_ok(self, timeout: float | None = None) -> None:
        """Return once every running node reports ``cluster_state:ok``."""

        def ok() -> bool:
            running = [node for node in self.nodes if node.process is not None]
            states = [node.client().execute_command("CLUSTER", "INFO") for node in running]
            return all(b"cluster_state:ok" in _bytes(state) for state in states)

        wait_until(ok, timeout or self.startup_timeout, "cluster_state:ok on every node", 0.1, RuntimeError)

    def master_of(self, key: str) -> RedisServer:
        """The node serving *key*'s slot now."""
        with self.client() as client:
            node = client.get_node_from_key(key)
        return next(server for server in self.nodes if server.port == node.port)

    def kill_master_of(self, key: str, timeout: float = 30.0) -> RedisServer:
        """SIGKILL the master serving *key*; return once another node serves its slot."""
        master = self.master_of(key)
        master.kill()
        self.wait_for_new_master(key, master, timeout)
        return master

    def wait_for_new_master(self, key: str, old: RedisServer, timeout: float = 30.0) -> None:
        """Return once a node other than *old* serves *key*'s slot and the cluster is ok again."""
        deadline = time.monotonic() + timeout
        self.wait_for_takeover(key, old, timeout)
        self.wait_until_ok(timeout=max(0.1, deadline - time.monotonic()))

    def wait_for_takeover(
        self, key: str, old: RedisServer, timeout: float = 30.0, every: float = 0.1
    ) -> None:
        """Return once a surviving node's ``CLUSTER SLOTS`` names a master other than *old* for *key*."""
        slot = self.client().keyslot(key)

        def taken_over() -> bool:
            survivor = next(node for node in self.nodes if node.process is not None)
            slots = survivor.client().execute_command("CLUSTER", "SLOTS")
            owner = [entry for entry in slots if entry[0] <= slot <= entry[1]]
            return bool(owner) and owner[0][2][1] != old.port

        waited_for = f"a replica taking over from 127.0.0.1:{old.port}"
        wait_until(taken_over, timeout, waited_for, every, RuntimeError)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _in_sync(info: dict) -> bool:
    """A master's ``INFO replication``: one replica, online."""
    replica = info.get("slave0")
    online = isinstance(replica, dict) and replica.get("state") == "online"
    return info.get("connected_slaves") == 1 and online


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
