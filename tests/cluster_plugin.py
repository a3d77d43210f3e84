"""Run the Redis-backed tests on Redis Cluster: ``pytest -p tests.cluster_plugin -m redis``.

Every :class:`~tests.redis_server.RedisServer` a test (or a fixture such as ``redis_server``)
starts becomes a six-node Redis Cluster (``tests/redis_cluster.py``) whose ``url`` is the
cluster's ``redis+cluster://`` URL and whose ``client()`` is a cluster client: ``publish()``,
the hub (sharded pub/sub), history and presence, in this process and in gunicorn workers, all
go through the cluster. ``make test`` runs it after the main run (the ``redis`` marker:
``tests/conftest.py``); a cluster costs a few seconds to form, once per module or test that
starts a Redis.

A test that kills and restarts "the" Redis kills every node and starts every node again
on its port (the cluster re-forms from each node's ``nodes.conf``; ``persistent=True``
nodes keep their data). Tests that cannot mean the same thing on a cluster are skipped,
each with its reason (``NOT_ON_CLUSTER`` here, ``NOT_ON_A_GROUP`` in
``tests/redis_standin.py``, which holds what this plugin shares with
``tests/sentinel_plugin.py``).
"""

from __future__ import annotations

import pytest

import tests.redis_cluster  # bound to the real RedisServer before it is replaced below
from tests.redis_standin import StandIn, replace_redis_server, skip_listed

#: Test ids (file::name) that do not apply on a cluster, and why.
NOT_ON_CLUSTER = {
    "tests/messaging/brokers/test_sentinel.py::"
    "test_the_subscriber_leaves_a_server_the_sentinels_no_longer_name": "fake sentinels name a plain Redis",
}


class ClusterInPlaceOfRedis(StandIn):
    """Stands in for ``RedisServer``: a Redis Cluster, reached through its seed nodes.

    ``kill()``/``stop()`` and ``start()`` take every node away and bring every node back:
    the whole Redis is away, as when a test kills its one Redis.
    """

    def new_group(self, persistent: bool) -> tests.redis_cluster.RedisClusterGroup:
        return tests.redis_cluster.RedisClusterGroup(persistent=persistent)

    @property
    def url(self) -> str:
        return self.group.url

    def kill(self) -> None:
        self.group.kill_every_node()

    def start(self) -> None:
        self.group.restart_every_node()


def pytest_configure(config: pytest.Config) -> None:
    replace_redis_server(ClusterInPlaceOfRedis)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_listed(items, NOT_ON_CLUSTER, "Cluster")
