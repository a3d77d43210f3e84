"""The Redis Cluster broker: channels spread over a cluster's shards, sharded pub/sub (Redis >= 7).

``WEBSOCKET_REDIS_URL = "redis+cluster://[user:password@]host:port[,host:port...]"`` names
seed nodes (``rediss+cluster://`` for TLS); the cluster's slot map is read from them.

Every key of a channel carries the channel in a hash tag, ``<prefix>{room}``: its broker
channels (``<prefix>{room}@user:7``…), its history stream (``<prefix>{room}~history``)
and its presence keys share one slot, so each Lua script runs on one shard and publishes
there with ``SPUBLISH``. The tag is the channel name alone, never the prefix, so channels
spread over the slots (and shards) by their names. Messages reach a worker's hub over one
subscriber connection per shard (``SSUBSCRIBE``,
:class:`~django_websocket.messaging.redis_pubsub.ShardedSubscriber`); a shard's failover or
a slot moved away makes the hub reconnect, resubscribe and recover from the history, or
signal a gap, as with one Redis. While a dead master's slots have no new master yet, the
subscriber reads the slot map every 50 ms until one serves them (``FAILOVER_POLL``), so the
hub resubscribes when the cluster's election ends, not at its next backoff step.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from redis import BlockingConnectionPool
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from ..options import AUDIENCE_SEPARATOR, Options
from ..redis_pubsub import ShardedSubscriber
from .redis import REDIS_CONNECTIONS, RedisBroker, safe_url

SCHEMES = ("redis+cluster", "rediss+cluster")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """``(seed nodes, username, password, tls)`` of a ``redis+cluster://`` URL.

    Raises ``ValueError`` naming what is wrong: another scheme, no seed node, a bad port,
    a database other than 0 (a cluster has only one).
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://: {safe_url(url)!r}"
        )
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    seeds = []
    for address in filter(None, hosts.split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"seed nodes are host:port, comma-separated: {address!r} in {safe_url(url)!r}")
        seeds.append((host, int(port)))
    if not seeds:
        raise ValueError(f"no seed node in {safe_url(url)!r}: redis+cluster://host:7000,host2:7001")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, not {parts.path!r}")
    return seeds, unquote(username) or None, unquote(password) or None, parts.scheme == "rediss+cluster"


class ClusterBroker(RedisBroker):
    """A Redis Cluster (seed nodes in *url*), shared by every process."""

    #: redis-py's cluster client also raises RedisClusterException, which is not a RedisError.
    ERRORS = (RedisError, RedisClusterException)

    def __init__(self, url: str, options: Options) -> None:
        self.seeds, self.username, self.password, self.tls = parse_cluster_url(url)
        super().__init__(url, options)

    @classmethod
    def validate_url(cls, url: str) -> None:
        parse_cluster_url(url)

    def probe(self) -> str | None:
        """Ask every master its version once: sharded pub/sub needs Redis 7.0 or later.

        ``None`` when all have it; a line naming the masters that do not; ``PublishError``
        when the cluster does not answer.
        """
        old = []
        for node in self._call(self.client.get_primaries, "reach"):
            version = self._call(lambda node=node: self.client.info("server", target_nodes=node), "reach")
            release = str(version.get("redis_version", "0"))
            if int(release.split(".")[0]) < 7:
                old.append(f"{node.host}:{node.port} runs Redis {release}")
        if not old:
            return None
        return "sharded pub/sub needs Redis 7.0 or later on every master: " + ", ".join(old)

    def make_client(self) -> Any:
        """A cluster client; it reads the slot map from the seeds now (``PublishError`` if none answers)."""
        timeout = self.options.timeout
        return self._call(lambda: self._cluster_client(timeout), "reach")

    def _cluster_client(self, timeout: float) -> RedisCluster:
        (host, port), *others = self.seeds
        return RedisCluster(
            # Given a URL (here the first seed's: its scheme picks TLS), redis-py builds each
            # node's pool from connection_pool_class; without one, a plain pool that raises
            # "Too many connections" at REDIS_CONNECTIONS instead of queueing, as the plain
            # broker's pool does (hundreds of sockets resuming after a deploy hit that).
            url=f"{'rediss' if self.tls else 'redis'}://{host}:{port}",
            startup_nodes=[ClusterNode(host, port) for host, port in others],
            connection_pool_class=BlockingConnectionPool,
            timeout=timeout,  # the pool's wait for a free connection
            username=self.username,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=REDIS_CONNECTIONS,  # per node
            # Follow a MOVED reply (a failover or resharding) once; never retry behind the caller's back more.
            retry=Retry(NoBackoff(), 1),
        )

    def describe(self) -> str:
        return f"Redis Cluster ({safe_url(self.url)})"

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.disconnect_connection_pools()

    # Names: the channel in a hash tag

    def key(self, channel: str, audience_suffix: str = "") -> str:
        self.options.key(channel, audience_suffix)  # the same rules as everywhere, first
        if "{" in channel or "}" in channel:
            raise ValueError(f"channel names on Redis Cluster have no braces (hash tags): {channel!r}")
        return f"{self.options.prefix}{{{channel}}}{audience_suffix}"

    def channel(self, key: str) -> str:
        tagged = key[len(self.options.prefix) :].split(AUDIENCE_SEPARATOR, 1)[0]
        return tagged[1:-1]

    # Sharded publishing and subscribing

    def publish_payload(self, key: str, payload: bytes) -> int:
        return self._call(lambda: self.client.spublish(key, payload), "publish to")

    def adapt(self, source: str) -> str:
        return source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")

    def subscriber(self) -> ShardedSubscriber:
        return ShardedSubscriber(self.refresh, self.node_of, self.options.timeout)

    def refresh(self) -> None:
        """Read the slot map again (after a failover, a node serves other slots)."""
        self.client.nodes_manager.initialize()

    def node_of(self, key: str) -> tuple[str, int]:
        """``(URL of the master serving broker channel *key*'s slot, the slot)``."""
        node = self.client.get_node_from_key(key)
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"{scheme}://{auth}{node.host}:{node.port}/0", self.client.keyslot(key)
