"""The broker and hub of this process, chosen once from the settings: messaging's Django edge.

:func:`get_broker` reads the ``WEBSOCKET_*`` settings into one frozen
:class:`~django_websocket.messaging.options.Options` and picks the backend from
``WEBSOCKET_REDIS_URL`` (else the ``REDIS_URL`` environment variable): none, the
in-process broker; ``redis://``, ``rediss://`` or ``unix://``, Redis;
``redis+sentinel://`` or ``rediss+sentinel://``, the primary of a Redis Sentinel service
(:data:`SCHEMES`, which ``manage.py check`` also validates against). Each is kept until
a setting changes (Django's ``setting_changed`` signal, as ``override_settings`` sends it,
calls :func:`reset`; the app connects it), so nothing on the per-message path reads a
setting.

A backend keeps its state for the life of the process: the in-process broker's history
and presence survive a settings change, and a Redis broker is reused for the same URL.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import gevent

from . import conf
from .exceptions import PublishError
from .messaging.brokers.base import Broker
from .messaging.brokers.cluster import ClusterBroker
from .messaging.brokers.local import LocalBroker
from .messaging.brokers.redis import RedisBroker
from .messaging.brokers.sentinel import SentinelBroker
from .messaging.hub import Hub
from .messaging.options import Options

#: Settings whose change makes :func:`reset` rebuild the options and pick the broker again.
SETTINGS = frozenset(
    {
        "WEBSOCKET_REDIS_URL",
        "WEBSOCKET_CHANNEL_PREFIX",
        "WEBSOCKET_CHANNEL_QUEUE_SIZE",
        "WEBSOCKET_REDIS_TIMEOUT",
        "WEBSOCKET_HISTORY_SIZE",
        "WEBSOCKET_HISTORY_TTL",
        "WEBSOCKET_HISTORY_CHANNELS",
        "WEBSOCKET_PRESENCE_TTL",
    }
)


class Registry:
    """The process's brokers (by URL) and hubs (by gevent hub and broker), and the current choice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Broker | None = None
        self.brokers: dict[tuple[str | None, float], Broker] = {}
        self.hubs: dict[tuple[int, int], Hub] = {}

    def broker(self) -> Broker:
        broker = self.current
        if broker is not None:
            return broker
        with self.lock:
            options = read_options()
            url = conf.redis_url()
            # The in-process broker is one per process whatever its timeout: its state is the truth.
            key = (url, options.timeout if url is not None else 0.0)
            broker = self.brokers.get(key)
            if broker is None:
                broker = self.brokers[key] = (
                    LocalBroker(options) if url is None else remote_broker(url, options)
                )
            broker.options = options
            self.current = broker
            return broker

    def hub(self) -> Hub:
        broker = self.broker()
        key = (id(gevent.get_hub()), id(broker))
        hub = self.hubs.get(key)
        if hub is None:
            with self.lock:
                hub = self.hubs.get(key)
                if hub is None:
                    hub = self.hubs[key] = Hub(broker)
        return hub


registry = Registry()

#: The broker class for each URL scheme of ``WEBSOCKET_REDIS_URL``: the one list of the schemes
#: that work (``manage.py check`` accepts exactly these).
SCHEMES: dict[str, type[RedisBroker]] = {
    "redis": RedisBroker,
    "rediss": RedisBroker,
    "unix": RedisBroker,
    "redis+cluster": ClusterBroker,
    "rediss+cluster": ClusterBroker,
    "redis+sentinel": SentinelBroker,
    "rediss+sentinel": SentinelBroker,
}


def broker_class(url: str) -> type[RedisBroker]:
    """The broker class serving *url*, its URL validated (no I/O); ``ValueError`` says what is wrong."""
    scheme = url.partition("://")[0].lower()
    found = SCHEMES.get(scheme) if "://" in url else None
    if found is None:
        raise ValueError(f"no broker for {scheme!r} URLs (known: {', '.join(sorted(SCHEMES))})")
    found.validate_url(url)
    return found


def remote_broker(url: str, options: Options) -> Broker:
    """The broker for *url*, by its scheme; ``ValueError`` for a scheme none serves or a malformed URL."""
    try:
        found = broker_class(url)
    except ValueError as error:
        raise ValueError(f"WEBSOCKET_REDIS_URL: {error}") from None
    return found(url, options)


def read_options() -> Options:
    """The messaging settings, read now (see :mod:`django_websocket.conf` for their meaning)."""
    ttl = conf.get("WEBSOCKET_HISTORY_TTL")
    return Options(
        prefix=conf.get("WEBSOCKET_CHANNEL_PREFIX"),
        queue_size=int(conf.get("WEBSOCKET_CHANNEL_QUEUE_SIZE")),
        timeout=float(conf.get("WEBSOCKET_REDIS_TIMEOUT")),
        history_size=int(conf.get("WEBSOCKET_HISTORY_SIZE")),
        history_ttl=None if ttl is None else float(ttl),
        history_channels=tuple((conf.get("WEBSOCKET_HISTORY_CHANNELS") or {}).items()),
        presence_ttl=float(conf.get("WEBSOCKET_PRESENCE_TTL")),
    )


def get_broker() -> Broker:
    """The broker the settings name, with the current options."""
    return registry.broker()


def get_hub() -> Hub:
    """The hub of this process (of this thread's gevent hub) for the current broker."""
    return registry.hub()


def hubs() -> list[Hub]:
    """Every hub this process has made (for metrics: reading them never makes one)."""
    return list(registry.hubs.values())


def reset(*, setting: str = "", **kwargs: Any) -> None:
    """Read the settings again at the next use (a ``setting_changed`` receiver; no argument: always)."""
    if not setting or setting in SETTINGS:
        registry.current = None


def report_problems(log: logging.Logger) -> None:
    """At worker start: build the broker the settings name and ask its servers once; log what is wrong.

    One line per problem (a malformed URL, a Sentinel service nobody monitors, servers that do not
    answer), never an exception: the worker keeps serving (and publishing raises
    ``PublishError`` until the servers answer) rather than crash-looping at boot.
    """
    try:
        broker = get_broker()
    except ValueError as error:
        log.error("%s: publish and subscribe will fail until it is fixed", error)
        return
    try:
        problem = broker.probe()
    except PublishError as error:
        log.warning("WEBSOCKET_REDIS_URL: %s (at worker start; the hub keeps trying)", error)
        return
    if problem is not None:
        log.error("WEBSOCKET_REDIS_URL: %s: publish and subscribe will fail until it is fixed", problem)


def disconnect() -> None:
    """Drop the pooled Redis connections of every broker (they reconnect when next used)."""
    for broker in list(registry.brokers.values()):
        if isinstance(broker, RedisBroker):
            broker.disconnect()
