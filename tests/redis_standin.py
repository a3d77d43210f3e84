"""What the Sentinel and Cluster plugins share: a stand-in for ``RedisServer``, and their skips.

``pytest -p tests.sentinel_plugin -m redis`` and ``pytest -p tests.cluster_plugin -m redis``
rerun the tests marked ``redis`` (``tests/conftest.py``: they start a ``RedisServer``) with
every ``RedisServer`` replaced by a :class:`StandIn`: a group of real processes (a Sentinel
group, a Redis Cluster) reached through its URL. A test that kills and restarts "the" Redis
kills and restarts the group's data nodes; tests that cannot mean the same thing on a group
are skipped at collection, each with its reason.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

import tests.redis_server
from tests.managed import Managed

Self = TypeVar("Self", bound="StandIn")  # typing.Self needs Python 3.11


class StandIn:
    """Stands in for ``RedisServer`` (whatever its arguments): ``url``, ``client()``, ``subscribers()``.

    A subclass makes the group (:meth:`new_group`), says which of its servers a test's
    ``client()`` talks to (:meth:`data_server`), and what a test's ``kill()`` (or ``stop()``)
    and ``start()`` of "the" Redis take away and bring back. ``with`` starts the group and
    always closes it.
    """

    def __init__(self, *args: Any, persistent: bool = False, **kwargs: Any) -> None:
        self.group = self.new_group(persistent)

    def new_group(self, persistent: bool) -> Managed:
        """The group; *persistent*: its data survives a restart (``RedisServer(persistent=True)``)."""
        raise NotImplementedError

    def data_server(self) -> Any:
        """What ``client()`` and ``subscribers()`` ask: a ``RedisServer`` or a ``RedisClusterGroup``."""
        return self.group

    @property
    def url(self) -> str:
        raise NotImplementedError

    def client(self, **kwargs: Any) -> Any:
        return self.data_server().client(**kwargs)

    def subscribers(self, key: str) -> int:
        """The connections subscribed to broker channel *key* (``RedisServer.subscribers``)."""
        return self.data_server().subscribers(key)

    def kill_subscriber_connections(self) -> int:
        return self.data_server().kill_subscriber_connections()

    def kill(self) -> None:
        """Redis is away: SIGKILL every data node (the group's own processes, by PID)."""
        raise NotImplementedError

    def start(self) -> None:
        """Redis is back: start every data node again on its port; return once the group serves."""
        raise NotImplementedError

    def stop(self) -> None:
        self.kill()

    def __enter__(self: Self) -> Self:
        self.group.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.group.__exit__(*exc_info)


def replace_redis_server(standin: type[StandIn]) -> None:
    """Make every ``RedisServer`` a test or fixture starts from now on a *standin*.

    Modules that build on the real class (``tests.redis_sentinel``, ``tests.redis_cluster``)
    must be imported before this, so they keep it.
    """
    tests.redis_server.RedisServer = standin  # type: ignore[misc]


#: Tests (``file::name``) or whole files that do not apply on a group of servers, and why.
NOT_ON_A_GROUP = {
    "tests/messaging/brokers/test_redis.py": (
        "tests the plain RedisBroker (test_sentinel.py and test_cluster.py test the others)"
    ),
    "tests/messaging/test_hub.py::test_subscribing_during_an_outage_does_not_stall_and_resyncs": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/test_hub.py::test_a_refused_history_read_is_tried_again_not_a_gap": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/test_hub.py::test_a_history_refused_for_longer_than_the_patience_is_a_gap": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/test_hub.py::test_a_refused_subscribe_does_not_hold_the_view_and_resyncs": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/test_redis_pubsub.py::test_sharded_connect_polls_the_slot_map_until_a_master_accepts": (
        "a plain Redis stands for one shard's master"
    ),
    "tests/messaging/test_redis_pubsub.py::test_sharded_subscribe_does_not_wait_for_a_failover": (
        "a plain Redis stands for one shard's master"
    ),
    "tests/test_fanout_integration.py::test_thousand_sockets_one_worker_one_redis_connection": (
        "counts the connections of one server (a sentinel or a cluster node holds its own)"
    ),
}


def skip_listed(items: list[pytest.Item], reasons: dict[str, str], where: str) -> None:
    """Skip each item listed in *reasons* or :data:`NOT_ON_A_GROUP` (by ``file::name``, without
    parameters, or by file), saying why."""
    reasons = {**NOT_ON_A_GROUP, **reasons}
    for item in items:
        name = item.nodeid.split("[")[0]
        reason = reasons.get(name, reasons.get(name.split("::")[0]))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"not on {where}: {reason}"))
