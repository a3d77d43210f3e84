"""Every ``WEBSOCKET_*`` setting, its default, and how it is read.

Settings are read when used, never at import time, so ``override_settings``
works in tests and importing the package never reads ``django.conf.settings``;
:func:`get` remembers each value until the settings change (``override_settings``).
``django_websocket.checks`` validates them through Django's system checks.

============================== ============ =====================================================
setting                        default      meaning
============================== ============ =====================================================
WEBSOCKET_URLCONF              (required)   dotted path of the URLconf holding websocket views
WEBSOCKET_SERVER               ``None``     host[:port] (or ``:port``) of the websocket server,
                                            for ``{% websocket_url %}``; ``None``: the page's host
WEBSOCKET_ALLOWED_ORIGINS      ``None``     origins allowed to open sockets; ``None`` follows
                                            ``ALLOWED_HOSTS``; entries are host patterns as in
                                            ``ALLOWED_HOSTS`` (``'.example.com'``, ``'*'``) or
                                            full origins (``'https://example.com'``)
WEBSOCKET_ALLOW_MISSING_ORIGIN ``True``     accept handshakes without an ``Origin`` header
                                            (non-browser clients; browsers always send one)
WEBSOCKET_MAX_MESSAGE_SIZE     ``1048576``  largest incoming message in bytes; larger: close 1009
WEBSOCKET_CLOSE_TIMEOUT        ``5.0``      seconds to wait for the peer's close frame
WEBSOCKET_REDIS_URL            ``None``     Redis for publish/subscribe across processes; ``None``
                                            falls back to the ``REDIS_URL`` environment variable,
                                            and without either an in-process broker serves one
                                            process; ``redis+sentinel://s1:26379,s2:26379/
                                            mymaster/0`` follows a Sentinel service's primary
                                            (``rediss+sentinel://`` for TLS, the sentinels'
                                            password as ``?sentinel_password=``)
WEBSOCKET_CHANNEL_PREFIX       ``"django_   prefix of every Redis channel name
                               websocket:"``
WEBSOCKET_CHANNEL_QUEUE_SIZE   ``1000``     channel messages waiting per socket; past it the
                                            socket is closed with 1013 (slow consumer)
WEBSOCKET_REDIS_TIMEOUT        ``1.0``      seconds: Redis connect and publish timeout
WEBSOCKET_COMPRESSION          ``True``     accept permessage-deflate (RFC 7692) when the client
                                            offers it, as browsers do
WEBSOCKET_COMPRESSION_         ``128``      messages ``send()`` sends under this many bytes go
THRESHOLD                                   uncompressed; channel messages always do
WEBSOCKET_PING_INTERVAL        ``20.0``     seconds between keepalive pings; ``None`` disables
WEBSOCKET_PING_TIMEOUT         ``20.0``     seconds to wait for the pong before closing (1011)
WEBSOCKET_HANDSHAKE_TIMEOUT    ``10.0``     seconds a client may take to send its request headers
WEBSOCKET_SEND_TIMEOUT         ``10.0``     seconds a send may wait on a client that stopped
                                            reading before the connection is dropped
WEBSOCKET_MAX_CONNECTIONS      ``None``     open websockets per worker process before handshakes
                                            get 503; ``None``: 90 % of gunicorn's
                                            ``--worker-connections`` under our worker
WEBSOCKET_MAX_CONNECTIONS_     ``None``     open websockets per user (or anonymous session) per
PER_USER                                    worker process before handshakes get 429; ``None``:
                                            no per-user cap
WEBSOCKET_MESSAGE_RATE_LIMIT   ``(1000,     ``(count, seconds)``: a token bucket per socket, burst
                               10.0)``      *count*, refilled at *count*/*seconds* per second; a
                                            client sending faster is closed with 1008; ``None``:
                                            no limit
WEBSOCKET_HISTORY_SIZE         ``100``      messages kept per channel for history and resume
                                            (at least this many with Redis); ``0``: no history
                                            and no ids
WEBSOCKET_HISTORY_TTL          ``3600``     seconds a channel's messages are kept; ``None``: no
                                            age limit
WEBSOCKET_HISTORY_CHANNELS     ``{}``       per-channel overrides: ``{"pattern": {"size": n,
                                            "ttl": s}}``, ``fnmatch`` patterns, first match wins
WEBSOCKET_PRESENCE_TTL         ``30.0``     seconds after which the connections of a worker that
                                            stopped heartbeating leave presence
WEBSOCKET_BLOCKED_LOOP_        ``None``     seconds: under our worker, log (once per event, with
THRESHOLD                                   the path and the stack) code that blocks the event
                                            loop longer than this; ``None``: off
WEBSOCKET_TOKEN_MAX_AGE        ``60``       seconds a token of ``websocket_token()`` opens
                                            sockets for (checked at the handshake only)
WEBSOCKET_DRAIN_WINDOW         ``1.0``      seconds over which a stopping worker closes its
                                            sockets, in batches (reconnections spread out)
WEBSOCKET_DRAIN_TIMEOUT        ``10.0``     seconds an old worker waits, on a reload, for the
                                            new workers to load before closing its sockets
WEBSOCKET_OUTBOX_RELAY_        ``1.0``      seconds between two relays of the durable outbox
INTERVAL                                    (``publish(durable=True)``) in each worker of
                                            our worker class; ``None``: not in the workers
                                            (run ``manage.py websocket_relay`` instead)
============================== ============ =====================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Not django.conf: importing it creates LazySettings, and gevent's monkey-patching in the worker
# then inspects every object (isinstance), which makes LazySettings read an unset
# DJANGO_SETTINGS_MODULE and the worker fail to boot. It is imported in get().
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

#: What ALLOWED_HOSTS means when it is empty and DEBUG is on (as in ``HttpRequest.get_host``).
DEBUG_ALLOWED_HOSTS = (".localhost", "127.0.0.1", "[::1]")

#: The documented defaults. ``WEBSOCKET_URLCONF`` has none: it is required.
DEFAULTS: dict[str, Any] = {
    "WEBSOCKET_SERVER": None,
    "WEBSOCKET_ALLOWED_ORIGINS": None,
    "WEBSOCKET_ALLOW_MISSING_ORIGIN": True,
    "WEBSOCKET_MAX_MESSAGE_SIZE": 2**20,
    "WEBSOCKET_CLOSE_TIMEOUT": 5.0,
    "WEBSOCKET_REDIS_URL": None,
    "WEBSOCKET_CHANNEL_PREFIX": "django_websocket:",
    "WEBSOCKET_CHANNEL_QUEUE_SIZE": 1000,
    "WEBSOCKET_REDIS_TIMEOUT": 1.0,
    "WEBSOCKET_COMPRESSION": True,
    "WEBSOCKET_COMPRESSION_THRESHOLD": 128,
    "WEBSOCKET_PING_INTERVAL": 20.0,
    "WEBSOCKET_PING_TIMEOUT": 20.0,
    "WEBSOCKET_HANDSHAKE_TIMEOUT": 10.0,
    "WEBSOCKET_SEND_TIMEOUT": 10.0,
    "WEBSOCKET_MAX_CONNECTIONS": None,
    "WEBSOCKET_MAX_CONNECTIONS_PER_USER": None,
    "WEBSOCKET_MESSAGE_RATE_LIMIT": (1000, 10.0),
    "WEBSOCKET_HISTORY_SIZE": 100,
    "WEBSOCKET_HISTORY_TTL": 3600,
    "WEBSOCKET_HISTORY_CHANNELS": {},
    "WEBSOCKET_PRESENCE_TTL": 30.0,
    "WEBSOCKET_BLOCKED_LOOP_THRESHOLD": None,
    "WEBSOCKET_TOKEN_MAX_AGE": 60,
    "WEBSOCKET_OUTBOX_RELAY_INTERVAL": 1.0,
    "WEBSOCKET_DRAIN_WINDOW": 1.0,
    "WEBSOCKET_DRAIN_TIMEOUT": 10.0,
}


#: Values :func:`get` returned, by name, for the settings object in :data:`_source`. A handshake
#: reads about a dozen settings, and an unset one costs Django's ``LazySettings`` an
#: ``AttributeError`` raised and caught (4–7 µs) on every lookup.
_values: dict[str, Any] = {}
#: The object behind ``django.conf.settings`` that :data:`_values` were read from:
#: ``override_settings`` (even without arguments) puts a new one there.
_source: Any = None


def get(name: str) -> Any:
    """Return setting *name* from ``django.conf.settings``, or its documented default.

    Raises ``KeyError`` for a name that is neither set nor in :data:`DEFAULTS`
    (that is, a missing ``WEBSOCKET_URLCONF``); ``manage.py check`` reports it first.
    The value is remembered while ``django.conf.settings`` wraps the same settings object and
    until Django's ``setting_changed`` signal: ``override_settings`` (as a decorator, a context
    manager or pytest-django's ``settings``) is seen at once, an assignment to
    ``django.conf.settings`` outside it is not. Settings are still read when used, but from
    Django once per process and override.
    """
    from django.conf import settings

    if settings._wrapped is _source:
        try:
            return _values[name]
        except KeyError:
            pass
    try:
        value = getattr(settings, name)
    except AttributeError:
        value = DEFAULTS[name]
    _remember(settings._wrapped, name, value)
    return value


def _remember(source: Any, name: str, value: Any) -> None:
    global _source, _handshake
    if source is not _source:
        # Connected here too, not only in AppConfig.ready(): a project may serve websockets
        # without listing the app. Idempotent (one dispatch_uid).
        watch_settings()
        _values.clear()
        _handshake = None
        _source = source
    _values[name] = value


def forget(**kwargs: Any) -> None:
    """``setting_changed`` receiver: forget every remembered value (any setting may be ours)."""
    global _handshake
    _values.clear()
    _handshake = None


def watch_settings() -> None:
    """Connect :func:`forget` to Django's ``setting_changed``. Idempotent."""
    setting_changed.connect(forget, dispatch_uid="django_websocket.conf.forget")


@dataclass(frozen=True, slots=True)
class HandshakeSettings:
    """The settings every handshake reads, read once: see :func:`handshake_settings`."""

    #: ``WEBSOCKET_URLCONF``.
    urlconf: str
    #: ``WEBSOCKET_ALLOWED_ORIGINS``, or ``ALLOWED_HOSTS`` (with Django's DEBUG fallback).
    allowed_origins: tuple[str, ...]
    allow_missing_origin: bool
    compression: bool
    compression_threshold: int
    max_message_size: int | None
    close_timeout: float
    #: ``WEBSOCKET_PING_INTERVAL``, ``None`` when off (``0`` too).
    ping_interval: float | None
    ping_timeout: float
    send_timeout: float
    #: ``WEBSOCKET_MESSAGE_RATE_LIMIT`` as ``(count, seconds)``, or ``None``.
    message_rate_limit: tuple[int, float] | None
    max_connections_per_user: int | None


#: The :class:`HandshakeSettings` of :data:`_source`, ``None`` until read (or after a change).
_handshake: HandshakeSettings | None = None


def handshake_settings() -> HandshakeSettings:
    """The settings of a handshake (accept, origin, compression, the socket's limits) in one object.

    Read from :func:`get` (and ``ALLOWED_HOSTS``/``DEBUG``) once, then kept as :func:`get` keeps
    its values: until ``setting_changed`` (``override_settings``) or another settings object.
    A handshake reads about a dozen settings; this makes them one check instead of a dozen
    lookups through Django's ``LazySettings``. Raises ``ImproperlyConfigured`` without
    ``WEBSOCKET_URLCONF``.
    """
    handshake = _handshake
    if handshake is not None and _lazy_settings is not None and _lazy_settings._wrapped is _source:
        return handshake
    return _read_handshake_settings()


#: ``django.conf.settings``, once :func:`handshake_settings` has imported it (not at import: see above).
_lazy_settings: Any = None


def _read_handshake_settings() -> HandshakeSettings:
    """Read and keep :func:`handshake_settings`' object."""
    global _handshake, _lazy_settings
    from django.conf import settings

    _lazy_settings = settings
    origins = get("WEBSOCKET_ALLOWED_ORIGINS")
    if origins is None:
        origins = (
            DEBUG_ALLOWED_HOSTS if settings.DEBUG and not settings.ALLOWED_HOSTS else settings.ALLOWED_HOSTS
        )
    rate_limit = get("WEBSOCKET_MESSAGE_RATE_LIMIT")
    handshake = HandshakeSettings(
        urlconf=websocket_urlconf(),
        allowed_origins=tuple(origins),
        allow_missing_origin=get("WEBSOCKET_ALLOW_MISSING_ORIGIN"),
        compression=get("WEBSOCKET_COMPRESSION"),
        compression_threshold=get("WEBSOCKET_COMPRESSION_THRESHOLD"),
        max_message_size=get("WEBSOCKET_MAX_MESSAGE_SIZE"),
        close_timeout=get("WEBSOCKET_CLOSE_TIMEOUT"),
        ping_interval=get("WEBSOCKET_PING_INTERVAL") or None,
        ping_timeout=get("WEBSOCKET_PING_TIMEOUT"),
        send_timeout=get("WEBSOCKET_SEND_TIMEOUT"),
        message_rate_limit=None if rate_limit is None else tuple(rate_limit),  # type: ignore[arg-type]
        max_connections_per_user=get("WEBSOCKET_MAX_CONNECTIONS_PER_USER"),
    )
    # Read after get(), which may have moved _source to the current settings object (and
    # cleared what was remembered for the previous one).
    _handshake = handshake
    return handshake


def websocket_urlconf() -> str:
    """Return ``WEBSOCKET_URLCONF``; raise ``ImproperlyConfigured`` when it is not set."""
    try:
        return get("WEBSOCKET_URLCONF")
    except (KeyError, AttributeError):
        raise ImproperlyConfigured(
            "WEBSOCKET_URLCONF is not set: name the URLconf holding your websocket views, "
            "e.g. WEBSOCKET_URLCONF = 'project.websocket_urls'."
        ) from None


def redis_url() -> str | None:
    """``WEBSOCKET_REDIS_URL``, else the ``REDIS_URL`` environment variable, else ``None`` (embedded)."""
    return get("WEBSOCKET_REDIS_URL") or os.environ.get("REDIS_URL") or None
