"""Run the Redis-backed tests on Redis Sentinel: ``pytest -p tests.sentinel_plugin -m redis``.

Every :class:`~tests.redis_server.RedisServer` a test (or a fixture such as ``redis_server``)
starts becomes a Sentinel group (``tests/redis_sentinel.py``) whose ``url`` is the group's
``redis+sentinel://`` URL and whose ``client()`` talks to the primary: ``publish()``, the
hub, history and presence, in this process and in gunicorn workers, all go through the
sentinels. ``make test`` runs it after the main run, on the tests marked ``redis``
(``tests/conftest.py``); a group costs a few seconds to start, once per module or test that
starts a Redis. The default run itself covers a few representative tests on Sentinel
(``ALSO_ON_SENTINEL`` in ``tests/test_publishing.py``).

A test that kills and restarts "the" Redis kills the primary and the replica and starts
them again on their ports (the sentinels, with no replica to promote, keep naming the
primary; ``persistent=True`` nodes keep their data). Tests that cannot mean the same thing
on Sentinel are skipped, each with its reason (``NOT_ON_SENTINEL`` here, ``NOT_ON_A_GROUP``
in ``tests/redis_standin.py``, which holds what this plugin shares with
``tests/cluster_plugin.py``): testing the plain ``RedisBroker``, counting one server's
connections.
"""

from __future__ import annotations

import pytest

import tests.redis_sentinel  # bound to the real RedisServer before it is replaced below
import tests.redis_server
from tests.redis_standin import StandIn, replace_redis_server, skip_listed

#: Test ids (file::name) that do not apply on Sentinel, and why, beyond ``NOT_ON_A_GROUP``.
NOT_ON_SENTINEL: dict[str, str] = {}

#: Groups the running test restarted: each settles before the test's fixtures are torn down.
RESTARTED: list[tests.redis_sentinel.SentinelGroup] = []


class PrimaryThroughSentinel(StandIn):
    """Stands in for ``RedisServer``: a Sentinel group, reached through its URL."""

    def new_group(self, persistent: bool) -> tests.redis_sentinel.SentinelGroup:
        return tests.redis_sentinel.SentinelGroup(persistent=persistent)

    def data_server(self) -> tests.redis_server.RedisServer:
        return self.group.primary

    @property
    def url(self) -> str:
        return self.group.url()

    @property
    def port(self) -> int | None:
        return self.group.primary.port

    def kill(self) -> None:
        self.group.kill_data_nodes()

    def start(self) -> None:
        self.group.restart_data_nodes()
        RESTARTED.append(self.group)


def pytest_configure(config: pytest.Config) -> None:
    replace_redis_server(PrimaryThroughSentinel)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Wait for each group the test restarted to settle (``wait_until_settled()``).

    Right after a restart the sentinels may still flag the primary down for a moment, while
    the replica resyncs. A module-scoped group then refused the next tests' reads and
    publishes (every sentinel calling the primary down means no primary to connect to).
    """
    while RESTARTED:
        RESTARTED.pop().wait_until_settled()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_listed(items, NOT_ON_SENTINEL, "Sentinel")
