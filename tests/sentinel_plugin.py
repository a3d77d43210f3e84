"""Run the Redis-backed tests on Redis Sentinel: ``pytest -p tests.sentinel_plugin tests/...``.

Every :class:`~tests.redis_server.RedisServer` a test (or a fixture such as ``redis_server``)
starts becomes a Sentinel group (``tests/redis_sentinel.py``) whose ``url`` is the group's
``redis+sentinel://`` URL and whose ``client()`` talks to the primary: ``publish()``, the
hub, history and presence, in this process and in gunicorn workers, all go through the
sentinels. Opt-in (a group per module costs about 5 s), for the few representative runs the
default suite does itself (``ALSO_ON_SENTINEL`` in ``tests/test_publishing.py``).

Tests that cannot mean the same thing on Sentinel are skipped, each with its reason:
killing and restarting "the" Redis, building a plain ``RedisBroker`` from the URL, and
counting the primary's pub/sub clients (each sentinel holds one).
"""

from __future__ import annotations

from typing import Any

import pytest

import tests.redis_sentinel  # bound to the real RedisServer before it is replaced below
import tests.redis_server

#: Test ids (file::name) that do not apply on Sentinel, and why.
NOT_ON_SENTINEL = {
    "tests/messaging/brokers/test_redis.py::test_a_stream_expires_after_the_ttl": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/brokers/test_redis.py::test_redis_members_of_a_dead_process_expire_with_one_leave": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/brokers/test_redis.py::test_redis_heartbeat_re_adds_a_swept_connection_with_a_join": (
        "builds a plain RedisBroker"
    ),
    "tests/messaging/test_hub.py::test_subscribing_during_an_outage_does_not_stall_and_resyncs": (
        "kills and restarts Redis (tests/test_sentinel_integration.py kills the primary instead)"
    ),
    "tests/test_fanout_integration.py::test_thousand_sockets_one_worker_one_redis_connection": (
        "counts the primary's pub/sub clients: each sentinel holds one"
    ),
}


class PrimaryThroughSentinel:
    """Stands in for ``RedisServer``: a Sentinel group, reached through its URL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.group = tests.redis_sentinel.SentinelGroup()

    @property
    def url(self) -> str:
        return self.group.url()

    @property
    def port(self) -> int | None:
        return self.group.primary.port

    def client(self, **kwargs: Any) -> Any:
        return self.group.primary.client(**kwargs)

    def kill(self) -> None:
        pytest.skip(
            "kills and restarts Redis: see tests/test_sentinel_integration.py for the primary's SIGKILL"
        )

    start = stop = kill

    def __enter__(self) -> PrimaryThroughSentinel:
        self.group.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.group.__exit__(*exc_info)


def pytest_configure(config: pytest.Config) -> None:
    tests.redis_server.RedisServer = PrimaryThroughSentinel  # type: ignore[misc]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = NOT_ON_SENTINEL.get(item.nodeid.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"not on Sentinel: {reason}"))
