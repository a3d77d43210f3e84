"""django_websocket.brokers: the broker chosen once from the settings, and again when they change."""

from __future__ import annotations

from unittest import mock

import pytest
from django.test import override_settings

from django_websocket.brokers import get_broker, get_hub, remote_broker, report_problems, reset
from django_websocket.messaging.brokers.local import LocalBroker
from django_websocket.messaging.brokers.redis import RedisBroker
from django_websocket.messaging.brokers.sentinel import SentinelBroker
from django_websocket.messaging.options import Options


@pytest.fixture
def embedded(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with override_settings(WEBSOCKET_REDIS_URL=None):
        yield


def test_the_broker_is_kept_until_a_setting_changes(embedded):
    """Two calls give the same broker and options; override_settings gives new options at once."""
    broker = get_broker()
    assert isinstance(broker, LocalBroker) and get_broker() is broker
    options = broker.options
    assert get_broker().options is options
    overrides = {"WEBSOCKET_CHANNEL_PREFIX": "site2:", "WEBSOCKET_HISTORY_CHANNELS": {"x-*": {"size": 3}}}
    with override_settings(**overrides):
        assert get_broker() is broker  # the in-process broker's state lives as long as the process
        assert broker.key("a") == "site2:a" and broker.options.policy("x-1").size == 3
    assert get_broker().options.prefix == "django_websocket:"


def test_unrelated_settings_do_not_rebuild(embedded):
    """A setting messaging does not read leaves the options as they are."""
    options = get_broker().options
    with override_settings(WEBSOCKET_PING_INTERVAL=5):
        assert get_broker().options is options
    reset()  # no setting named: always read again
    assert get_broker().options is not options


def test_redis_urls_pick_a_redis_broker_once_per_url():
    """The same URL keeps its broker (and its connection pool); another URL gets its own."""
    with override_settings(WEBSOCKET_REDIS_URL="redis://127.0.0.1:1/0"):
        first = get_broker()
        assert isinstance(first, RedisBroker)
    with override_settings(WEBSOCKET_REDIS_URL="redis://127.0.0.1:1/0"):
        assert get_broker() is first
    with override_settings(WEBSOCKET_REDIS_URL="redis://127.0.0.1:2/0"):
        assert get_broker() is not first


def test_one_hub_per_broker_and_gevent_hub(embedded):
    """get_hub() is the same object for the same broker in the same thread."""
    assert get_hub() is get_hub()
    assert get_hub().broker is get_broker()


def test_an_unknown_scheme_names_the_known_ones():
    """A URL no broker serves is a ValueError naming the schemes that work (checks report it first)."""
    with pytest.raises(ValueError, match="'memcached'.*redis"):
        remote_broker("memcached://127.0.0.1:1", Options())


def test_sentinel_urls_pick_the_sentinel_broker():
    """Both Sentinel schemes are served by SentinelBroker; a malformed one names the setting."""
    for url in ("redis+sentinel://127.0.0.1:1/mymaster/0", "rediss+sentinel://127.0.0.1:1/mymaster"):
        assert isinstance(remote_broker(url, Options()), SentinelBroker)
    with pytest.raises(ValueError, match="WEBSOCKET_REDIS_URL: no service name"):
        remote_broker("redis+sentinel://127.0.0.1:1", Options())


def test_worker_start_reports_a_bad_url_and_silent_servers_in_one_line_each():
    """report_problems() logs, never raises: a malformed URL is an error, no answer a warning."""
    log = mock.Mock()
    with override_settings(WEBSOCKET_REDIS_URL="redis+sentinel://:secret@127.0.0.1:1"):
        report_problems(log)
    (call,) = log.error.call_args_list
    assert "no service name" in call.args[1].args[0] and "secret" not in str(call)
    log = mock.Mock()
    with override_settings(WEBSOCKET_REDIS_URL="redis+sentinel://127.0.0.1:1/m", WEBSOCKET_REDIS_TIMEOUT=0.5):
        report_problems(log)
    (call,) = log.warning.call_args_list
    assert "no sentinel of" in str(call.args[1]) and not log.error.called
