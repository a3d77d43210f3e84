"""System checks for the ``WEBSOCKET_*`` settings, run by ``manage.py check`` and at startup.

Registered by :class:`django_websocket.apps.DjangoWebsocketConfig` under the tag
``django_websocket`` (``manage.py check --tag django_websocket``).

======================== ==========================================================
id                       problem
======================== ==========================================================
django_websocket.E001    ``WEBSOCKET_URLCONF`` is not set
django_websocket.E002    ``WEBSOCKET_URLCONF`` cannot be imported or has no ``urlpatterns``
django_websocket.E003    ``WEBSOCKET_URLCONF`` is not a string
django_websocket.E004    ``WEBSOCKET_MAX_MESSAGE_SIZE`` is not a positive integer
django_websocket.E005    ``WEBSOCKET_ALLOWED_ORIGINS`` is not ``None`` or a list/tuple of
                         host patterns and origins
django_websocket.E006    ``WEBSOCKET_ALLOW_MISSING_ORIGIN`` is not a bool
django_websocket.E007    ``WEBSOCKET_SERVER`` is not ``None`` or ``host``, ``host:port``, ``:port``
django_websocket.E008    ``WEBSOCKET_CLOSE_TIMEOUT`` is not a positive number of seconds
django_websocket.E009    ``WEBSOCKET_REDIS_URL`` is not ``None`` or a well-formed URL of a scheme
                         in ``django_websocket.brokers.SCHEMES`` (``redis://``, ``rediss://``,
                         ``unix://``, ``redis+sentinel://``, ``rediss+sentinel://``)
django_websocket.E010    ``WEBSOCKET_CHANNEL_PREFIX`` is not a string
django_websocket.E011    ``WEBSOCKET_CHANNEL_QUEUE_SIZE`` is not a positive integer
django_websocket.E012    ``WEBSOCKET_REDIS_TIMEOUT`` is not a positive number of seconds
django_websocket.E013    ``WEBSOCKET_PING_INTERVAL``, ``WEBSOCKET_SEND_TIMEOUT`` or
                         ``WEBSOCKET_MAX_CONNECTIONS`` is not ``None`` or a positive number;
                         ``WEBSOCKET_PING_TIMEOUT``, ``WEBSOCKET_HANDSHAKE_TIMEOUT``,
                         ``WEBSOCKET_DRAIN_WINDOW`` or ``WEBSOCKET_DRAIN_TIMEOUT`` is not a
                         positive number
django_websocket.E014    ``WEBSOCKET_COMPRESSION`` is not a bool
django_websocket.E015    ``WEBSOCKET_COMPRESSION_THRESHOLD`` is not an integer >= 0
django_websocket.E016    ``WEBSOCKET_HISTORY_SIZE`` is not an integer >= 0, or
                         ``WEBSOCKET_HISTORY_TTL`` is not ``None`` or a positive number
django_websocket.E017    ``WEBSOCKET_HISTORY_CHANNELS`` is not a dict of pattern strings to
                         dicts with only ``size`` and ``ttl`` (valid as in E016)
django_websocket.E018    ``WEBSOCKET_PRESENCE_TTL`` is not a positive number of seconds
django_websocket.E019    ``WEBSOCKET_BLOCKED_LOOP_THRESHOLD`` is not ``None`` or a positive
                         number of seconds
django_websocket.E020    ``WEBSOCKET_TOKEN_MAX_AGE`` is not a positive number of seconds
django_websocket.E021    ``WEBSOCKET_MESSAGE_RATE_LIMIT`` is not ``None`` or a ``(count, seconds)``
                         pair of a positive integer and a positive number
django_websocket.E022    ``WEBSOCKET_MAX_CONNECTIONS_PER_USER`` is not ``None`` or a positive
                         integer
django_websocket.E023    ``ROOT_URLCONF`` or ``WEBSOCKET_URLCONF`` routes
                         ``django_websocket.metrics.metrics_view`` but ``prometheus_client``
                         is not installed
django_websocket.E024    ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a writable directory
django_websocket.E030    ``WEBSOCKET_OUTBOX_RELAY_INTERVAL`` is not ``None`` or a positive number
                         of seconds
django_websocket.E031    (``check --deploy`` only) the servers of ``WEBSOCKET_REDIS_URL``
                         answered, but cannot serve it: no sentinel monitors its service name
django_websocket.W001    no DjangoTemplates backend has the ``request`` context processor
django_websocket.W002    a PostgreSQL database without Django's pool (``OPTIONS["pool"]``)
django_websocket.W003    a database (not SQLite) with ``CONN_MAX_AGE`` other than 0
django_websocket.W004    a database driver that blocks the gevent worker (psycopg2 without
                         psycogreen, mysqlclient, psycopg older than 3.1.14)
django_websocket.W005    ``WebSocketTokenMiddleware`` comes before ``AuthenticationMiddleware``
                         in ``MIDDLEWARE`` (which would replace the token's user)
django_websocket.W006    (``--deploy`` only) the metrics view is routed but
                         ``PROMETHEUS_MULTIPROC_DIR`` is not set: under several gunicorn
                         workers a scrape sees only the worker that answered it
django_websocket.W007    (``check --deploy`` only) no server of ``WEBSOCKET_REDIS_URL`` answered
======================== ==========================================================

Only the two ``--deploy`` checks use the network: ``manage.py check`` (and ``runserver``,
``migrate``, tests) never waits for Redis; ``manage.py check --deploy``, run where the
servers are reachable, asks them once. A server that does not answer is a warning (a CI
job without Redis still passes), a service nobody monitors an error.

The websocket URLconf is imported only inside :func:`check_urlconf`, never when
this module is imported; its patterns then get Django's own URL checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error, Warning, register

from django_websocket import brokers, conf, drivers, metrics
from django_websocket.exceptions import PublishError
from django_websocket.messaging.brokers.redis import safe_url
from django_websocket.messaging.brokers.sentinel_url import EXAMPLE as SENTINEL_EXAMPLE
from django_websocket.urls import split_server

TAG = "django_websocket"
REQUEST_CONTEXT_PROCESSOR = "django.template.context_processors.request"
DJANGO_TEMPLATES = "django.template.backends.django.DjangoTemplates"

_MISSING = object()


def register_checks() -> None:
    """Register every check of this module; called once from ``AppConfig.ready()``."""
    for check in (
        check_urlconf,
        check_settings,
        check_channel_settings,
        check_compression_settings,
        check_history_settings,
        check_blocked_loop_setting,
        check_outbox_setting,
        check_limit_settings,
        check_token_settings,
        check_templates,
        check_databases,
        check_metrics,
    ):
        register(check, TAG)
    register(check_metrics_deploy, TAG, deploy=True)
    register(check_broker_servers, TAG, deploy=True)


def _setting(name: str) -> Any:
    """Return setting *name*, its default, or ``_MISSING`` when it has neither."""
    try:
        return conf.get(name)
    except KeyError:
        return _MISSING


def check_urlconf(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E001-E003: ``WEBSOCKET_URLCONF`` is set, a string, and an importable URLconf."""
    urlconf = _setting("WEBSOCKET_URLCONF")
    if urlconf is _MISSING:
        return [
            Error(
                "The WEBSOCKET_URLCONF setting is missing.",
                hint="Name the URLconf holding your websocket views, "
                "e.g. WEBSOCKET_URLCONF = 'project.websocket_urls'.",
                id="django_websocket.E001",
            )
        ]
    if not isinstance(urlconf, str):
        return [
            Error(
                f"The WEBSOCKET_URLCONF setting must be a dotted module path, not {type(urlconf).__name__}.",
                hint="e.g. WEBSOCKET_URLCONF = 'project.websocket_urls'.",
                id="django_websocket.E003",
            )
        ]
    try:
        module = import_module(urlconf)
    except Exception as exc:  # any error while importing the user's module is worth reporting
        return [
            Error(
                f"The WEBSOCKET_URLCONF setting {urlconf!r} cannot be imported: {type(exc).__name__}: {exc}",
                id="django_websocket.E002",
            )
        ]
    if not hasattr(module, "urlpatterns"):
        return [
            Error(
                f"The WEBSOCKET_URLCONF setting {urlconf!r} names a module without urlpatterns.",
                hint="Define urlpatterns = [path(...), ...] in it, as in any URLconf.",
                id="django_websocket.E002",
            )
        ]
    # Django checks only ROOT_URLCONF; give the websocket patterns the same scrutiny.
    from django.core.checks.urls import check_resolver
    from django.urls import get_resolver

    return list(check_resolver(get_resolver(urlconf)))


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E004-E008: the other ``WEBSOCKET_*`` settings have the documented types and forms."""
    errors: list[CheckMessage] = []

    size = conf.get("WEBSOCKET_MAX_MESSAGE_SIZE")
    if not _is_positive(size, integer=True):
        errors.append(
            Error(
                f"The WEBSOCKET_MAX_MESSAGE_SIZE setting must be a positive integer (bytes), not {size!r}.",
                hint=f"The default is {conf.DEFAULTS['WEBSOCKET_MAX_MESSAGE_SIZE']} (1 MiB).",
                id="django_websocket.E004",
            )
        )

    problem = _origins_problem(conf.get("WEBSOCKET_ALLOWED_ORIGINS"))
    if problem:
        errors.append(
            Error(
                f"The WEBSOCKET_ALLOWED_ORIGINS setting {problem}.",
                hint="Use None to follow ALLOWED_HOSTS, or a list of host patterns and origins, "
                "e.g. ['.example.com', 'https://app.example.net:8443'].",
                id="django_websocket.E005",
            )
        )

    allow_missing = conf.get("WEBSOCKET_ALLOW_MISSING_ORIGIN")
    if not isinstance(allow_missing, bool):
        errors.append(
            Error(
                f"The WEBSOCKET_ALLOW_MISSING_ORIGIN setting must be True or False, not {allow_missing!r}.",
                id="django_websocket.E006",
            )
        )

    problem = _server_problem(conf.get("WEBSOCKET_SERVER"))
    if problem:
        errors.append(
            Error(
                f"The WEBSOCKET_SERVER setting is malformed: {problem}.",
                hint="Use None (the page's own host), 'host', 'host:port' or ':port' "
                "(the page's host with another port), e.g. 'ws.example.com' or ':8001'.",
                id="django_websocket.E007",
            )
        )

    timeout = conf.get("WEBSOCKET_CLOSE_TIMEOUT")
    if not _is_positive(timeout, integer=False):
        errors.append(
            Error(
                f"The WEBSOCKET_CLOSE_TIMEOUT setting must be a positive number of seconds, not {timeout!r}.",
                hint=f"The default is {conf.DEFAULTS['WEBSOCKET_CLOSE_TIMEOUT']}.",
                id="django_websocket.E008",
            )
        )
    return errors


def check_channel_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E009-E012: the publish/subscribe settings."""
    errors: list[CheckMessage] = []
    url = conf.get("WEBSOCKET_REDIS_URL")
    problem = _redis_url_problem(url)
    if problem is not None:
        errors.append(
            Error(
                f"The WEBSOCKET_REDIS_URL setting must be None or a Redis URL: {problem}.",
                hint=f"e.g. 'redis://127.0.0.1:6379/0', or with Sentinel '{SENTINEL_EXAMPLE}'; "
                "None uses the REDIS_URL environment variable, or the in-process broker without it.",
                id="django_websocket.E009",
            )
        )
    prefix = conf.get("WEBSOCKET_CHANNEL_PREFIX")
    if not isinstance(prefix, str):
        errors.append(
            Error(
                f"The WEBSOCKET_CHANNEL_PREFIX setting must be a string, not {prefix!r}.",
                id="django_websocket.E010",
            )
        )
    for name, integer, optional, error_id in (
        ("WEBSOCKET_CHANNEL_QUEUE_SIZE", True, False, "django_websocket.E011"),
        ("WEBSOCKET_REDIS_TIMEOUT", False, False, "django_websocket.E012"),
        ("WEBSOCKET_PING_INTERVAL", False, True, "django_websocket.E013"),
        ("WEBSOCKET_PING_TIMEOUT", False, False, "django_websocket.E013"),
        ("WEBSOCKET_HANDSHAKE_TIMEOUT", False, False, "django_websocket.E013"),
        ("WEBSOCKET_SEND_TIMEOUT", False, True, "django_websocket.E013"),
        ("WEBSOCKET_MAX_CONNECTIONS", True, True, "django_websocket.E013"),
        ("WEBSOCKET_DRAIN_WINDOW", False, False, "django_websocket.E013"),
        ("WEBSOCKET_DRAIN_TIMEOUT", False, False, "django_websocket.E013"),
    ):
        value = conf.get(name)
        if not (optional and value is None) and not _is_positive(value, integer):
            kind = "a positive integer" if integer else "a positive number of seconds"
            errors.append(
                Error(
                    f"The {name} setting must be {kind}, not {value!r}.",
                    hint=f"The default is {conf.DEFAULTS[name]!r}.",
                    id=error_id,
                )
            )
    return errors


def _redis_url_problem(url: Any) -> str | None:
    """What is wrong with *url* as ``WEBSOCKET_REDIS_URL`` (``None``: nothing), without its password."""
    if url is None:
        return None
    if not isinstance(url, str):
        return f"not {type(url).__name__} {url!r}"
    try:
        brokers.broker_class(url)
    except ValueError as error:
        return f"{safe_url(url.partition('?')[0])} cannot be used: {error}"
    return None


def check_broker_servers(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E031, W007 (``check --deploy``): the servers of the broker the settings name, asked once."""
    url = conf.redis_url()
    if url is None or _redis_url_problem(url) is not None:
        return []  # the in-process broker has no server; E009 reports a malformed URL
    broker = brokers.get_broker()
    try:
        problem = broker.probe()
    except PublishError as error:
        return [
            Warning(
                f"WEBSOCKET_REDIS_URL: {error}.",
                hint="Run `manage.py check --deploy` where the servers are reachable to check them.",
                id="django_websocket.W007",
            )
        ]
    if problem is None:
        return []
    return [Error(f"WEBSOCKET_REDIS_URL: {problem}.", id="django_websocket.E031")]


def check_compression_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E014-E015: the permessage-deflate settings."""
    errors: list[CheckMessage] = []
    compression = conf.get("WEBSOCKET_COMPRESSION")
    if not isinstance(compression, bool):
        errors.append(
            Error(
                f"The WEBSOCKET_COMPRESSION setting must be True or False, not {compression!r}.",
                id="django_websocket.E014",
            )
        )
    threshold = conf.get("WEBSOCKET_COMPRESSION_THRESHOLD")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        errors.append(
            Error(
                "The WEBSOCKET_COMPRESSION_THRESHOLD setting must be an integer >= 0 (bytes), "
                f"not {threshold!r}.",
                hint=f"The default is {conf.DEFAULTS['WEBSOCKET_COMPRESSION_THRESHOLD']}; "
                "0 compresses every message.",
                id="django_websocket.E015",
            )
        )
    return errors


def check_history_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E016-E018: history and presence settings."""
    errors: list[CheckMessage] = []
    size, ttl = conf.get("WEBSOCKET_HISTORY_SIZE"), conf.get("WEBSOCKET_HISTORY_TTL")
    for problem in _history_policy_problems(
        size, ttl, "The WEBSOCKET_HISTORY_SIZE setting", "WEBSOCKET_HISTORY_TTL"
    ):
        errors.append(
            Error(problem, hint="The defaults are 100 messages for 3600 s.", id="django_websocket.E016")
        )
    overrides = conf.get("WEBSOCKET_HISTORY_CHANNELS")
    if not isinstance(overrides, dict):
        overrides = {None: overrides}
    for pattern, override in overrides.items():
        if not isinstance(pattern, str) or not isinstance(override, dict) or set(override) - {"size", "ttl"}:
            problems = [
                f"entry {pattern!r}: {override!r} is not a pattern string mapped to {{'size', 'ttl'}}"
            ]
        else:
            size, ttl = override.get("size", 0), override.get("ttl")
            problems = _history_policy_problems(size, ttl, f"{pattern!r}: size", f"{pattern!r}: ttl")
        for problem in problems:
            errors.append(
                Error(
                    f"WEBSOCKET_HISTORY_CHANNELS {problem}",
                    hint='e.g. {"chat:*": {"size": 500, "ttl": 86400}, "live:*": {"size": 0}}',
                    id="django_websocket.E017",
                )
            )
    ttl = conf.get("WEBSOCKET_PRESENCE_TTL")
    if not _is_positive(ttl, integer=False):
        errors.append(
            Error(
                f"The WEBSOCKET_PRESENCE_TTL setting must be a positive number of seconds, not {ttl!r}.",
                hint="The default is 30.0.",
                id="django_websocket.E018",
            )
        )
    return errors


def check_blocked_loop_setting(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E019: ``WEBSOCKET_BLOCKED_LOOP_THRESHOLD`` is ``None`` (off) or a positive number of seconds."""
    hint = (
        "e.g. 0.5 to log code that blocks the event loop for longer than half a second; "
        "None (the default) turns the monitor off."
    )
    return _none_or_seconds("WEBSOCKET_BLOCKED_LOOP_THRESHOLD", hint, "django_websocket.E019")


def check_outbox_setting(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E030: ``WEBSOCKET_OUTBOX_RELAY_INTERVAL`` is ``None`` or a positive number of seconds."""
    hint = (
        "e.g. 1.0 (the default): each worker publishes the durable outbox every second; "
        "None leaves it to `manage.py websocket_relay`."
    )
    return _none_or_seconds("WEBSOCKET_OUTBOX_RELAY_INTERVAL", hint, "django_websocket.E030")


def _none_or_seconds(name: str, hint: str, error_id: str) -> list[CheckMessage]:
    """An error *error_id* unless setting *name* is ``None`` or a positive number of seconds."""
    value = conf.get(name)
    if value is None or _is_positive(value, integer=False):
        return []
    message = f"The {name} setting must be None or a positive number of seconds, not {value!r}."
    return [Error(message, hint=hint, id=error_id)]


def check_limit_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E021-E022: the message rate limit and the per-user connection cap."""
    errors: list[CheckMessage] = []
    rate = conf.get("WEBSOCKET_MESSAGE_RATE_LIMIT")
    if rate is not None and not (
        isinstance(rate, tuple | list)
        and len(rate) == 2
        and _is_positive(rate[0], integer=True)
        and _is_positive(rate[1], integer=False)
    ):
        errors.append(
            Error(
                "The WEBSOCKET_MESSAGE_RATE_LIMIT setting must be None or a (count, seconds) pair of a "
                f"positive integer and a positive number, not {rate!r}.",
                hint=f"The default is {conf.DEFAULTS['WEBSOCKET_MESSAGE_RATE_LIMIT']!r}: bursts of up to "
                "1000 messages, 100 a second on average; None removes the limit.",
                id="django_websocket.E021",
            )
        )
    cap = conf.get("WEBSOCKET_MAX_CONNECTIONS_PER_USER")
    if cap is not None and not _is_positive(cap, integer=True):
        errors.append(
            Error(
                "The WEBSOCKET_MAX_CONNECTIONS_PER_USER setting must be None or a positive integer, "
                f"not {cap!r}.",
                hint="It counts one user's open sockets per worker process; None (the default) sets no cap.",
                id="django_websocket.E022",
            )
        )
    return errors


TOKEN_MIDDLEWARE = "django_websocket.middleware.WebSocketTokenMiddleware"
AUTHENTICATION_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check_token_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E020: ``WEBSOCKET_TOKEN_MAX_AGE``; W005: the token middleware after ``AuthenticationMiddleware``."""
    from django.conf import settings

    messages: list[CheckMessage] = []
    max_age = conf.get("WEBSOCKET_TOKEN_MAX_AGE")
    if not _is_positive(max_age, integer=False):
        messages.append(
            Error(
                f"The WEBSOCKET_TOKEN_MAX_AGE setting must be a positive number of seconds, not {max_age!r}.",
                hint=f"The default is {conf.DEFAULTS['WEBSOCKET_TOKEN_MAX_AGE']}: a token is minted "
                "right before the client connects.",
                id="django_websocket.E020",
            )
        )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if (
        TOKEN_MIDDLEWARE in middleware
        and AUTHENTICATION_MIDDLEWARE in middleware
        and middleware.index(AUTHENTICATION_MIDDLEWARE) > middleware.index(TOKEN_MIDDLEWARE)
    ):
        messages.append(
            Warning(
                f"{TOKEN_MIDDLEWARE} comes before {AUTHENTICATION_MIDDLEWARE} in MIDDLEWARE.",
                hint="AuthenticationMiddleware sets request.user from the session: after the token "
                "middleware, it replaces the token's user. List the token middleware right after it.",
                id="django_websocket.W005",
            )
        )
    return messages


def check_metrics(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E023: the metrics view routed, no ``prometheus_client``; E024: a bad ``PROMETHEUS_MULTIPROC_DIR``."""
    if not _routes_metrics_view():
        return []
    if not metrics.available():
        return [
            Error(
                "The URLconf routes django_websocket.metrics.metrics_view, "
                "but prometheus_client is not installed.",
                hint="pip install 'django-websocket-views[metrics]'.",
                id="django_websocket.E023",
            )
        ]
    import os

    path = metrics.multiprocess_dir()
    if path is not None and not (os.path.isdir(path) and os.access(path, os.W_OK)):
        return [
            Error(
                f"{metrics.MULTIPROC_ENV}={path!r} is not a writable directory.",
                hint="Create it for this gunicorn alone (gunicorn.conf.py's on_starting hook empties it).",
                id="django_websocket.E024",
            )
        ]
    return []


def check_metrics_deploy(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W006 (``manage.py check --deploy``): the metrics view routed without ``PROMETHEUS_MULTIPROC_DIR``."""
    if metrics.multiprocess_dir() is not None or not _routes_metrics_view():
        return []
    return [
        Warning(
            f"The metrics view is routed but {metrics.MULTIPROC_ENV} is not set: under several gunicorn "
            "workers each scrape sees only the worker that answered it.",
            hint=f"Set {metrics.MULTIPROC_ENV} in gunicorn's environment (docs/howto/metrics.md); "
            "ignore this with a single worker process.",
            id="django_websocket.W006",
        )
    ]


def _routes_metrics_view() -> bool:
    """Whether ``ROOT_URLCONF`` or ``WEBSOCKET_URLCONF`` routes ``metrics_view`` (or a wrapper of it)."""
    from django.urls import URLResolver, get_resolver

    def routes(patterns: Any) -> bool:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if routes(pattern.url_patterns):
                    return True
                continue
            view = pattern.callback
            while view is not None:
                if view is metrics.metrics_view:
                    return True
                view = getattr(view, "__wrapped__", None)
        return False

    websocket_urlconf = _setting("WEBSOCKET_URLCONF")
    for urlconf in (None, websocket_urlconf) if websocket_urlconf is not _MISSING else (None,):
        try:
            if routes(get_resolver(urlconf).url_patterns):
                return True
        except Exception:  # an URLconf that does not import is reported by its own check
            continue
    return False


def _history_policy_problems(size: Any, ttl: Any, size_name: str, ttl_name: str) -> list[str]:
    problems = []
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        problems.append(f"{size_name} must be an integer >= 0 (messages; 0: no history), not {size!r}.")
    if ttl is not None and not _is_positive(ttl, integer=False):
        problems.append(f"{ttl_name} must be None or a positive number of seconds, not {ttl!r}.")
    return problems


def _is_positive(value: Any, integer: bool) -> bool:
    """Whether *value* is a positive finite int (or, unless *integer*, float; NaN is not); bools are not."""
    types = int if integer else int | float
    return not isinstance(value, bool) and isinstance(value, types) and 0 < value < math.inf


def _origins_problem(origins: Any) -> str | None:
    """Say what is wrong with a ``WEBSOCKET_ALLOWED_ORIGINS`` value, or return ``None``."""
    if origins is None:
        return None
    if not isinstance(origins, list | tuple):
        return f"must be None, a list or a tuple, not {type(origins).__name__}"
    for entry in origins:
        if not isinstance(entry, str) or not entry:
            return f"must hold non-empty strings only, not {entry!r}"
        if "://" in entry:
            # An Origin header is scheme://host[:port] and nothing more, so an entry
            # with a path (even a trailing slash) would never match one.
            parts = urlsplit(entry)
            if not parts.scheme or not parts.netloc or parts.path or parts.query or parts.fragment:
                return f"entry {entry!r} is not an origin: give scheme://host[:port] with no path"
    return None


def _server_problem(server: Any) -> str | None:
    """Say what is wrong with a ``WEBSOCKET_SERVER`` value, or return ``None``."""
    if server is None:
        return None
    if not isinstance(server, str):
        return f"it must be None or a string, not {type(server).__name__}"
    try:
        split_server(server)
    except ValueError as exc:
        return str(exc)
    return None


def check_templates(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W001: some DjangoTemplates backend puts the request in the context, as the tag needs."""
    from django.conf import settings

    backends = [backend for backend in settings.TEMPLATES if backend.get("BACKEND") == DJANGO_TEMPLATES]
    if not backends or any(
        REQUEST_CONTEXT_PROCESSOR in backend.get("OPTIONS", {}).get("context_processors", ())
        for backend in backends
    ):
        return []
    return [
        Warning(
            f"No DjangoTemplates backend in TEMPLATES has '{REQUEST_CONTEXT_PROCESSOR}' in its "
            "context_processors, so {% websocket_url %} cannot read the request's host and scheme.",
            hint=f"Add '{REQUEST_CONTEXT_PROCESSOR}' to TEMPLATES[...]['OPTIONS']['context_processors'].",
            id="django_websocket.W001",
        )
    ]


DATABASE_DOCS = "docs/howto/databases.md"


def check_databases(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W002-W004: ``DATABASES`` entries that cannot work well under the gevent worker.

    SQLite databases get none of these warnings.
    """
    from django.conf import settings

    warnings: list[CheckMessage] = []
    for alias, database in settings.DATABASES.items():
        vendor = drivers.database_vendor(database)
        if vendor == "sqlite":
            continue  # a local file: no server connections to run out of, no network wait
        if vendor == "postgresql" and not database.get("OPTIONS", {}).get("pool"):
            warnings.append(
                Warning(
                    f"The database {alias!r} is PostgreSQL without Django's connection pool: every "
                    "websocket view busy with the ORM opens a connection of its own, so a burst of "
                    "sockets writing at once can use up the server's max_connections.",
                    hint="Use psycopg 3 with OPTIONS = {'pool': {'max_size': 20, 'timeout': 10}} "
                    "(pip install 'psycopg[binary,pool]'), sized so that workers × max_size plus your "
                    f"HTTP servers' connections stay below max_connections. See {DATABASE_DOCS}.",
                    id="django_websocket.W002",
                )
            )
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age is None or (isinstance(max_age, int | float) and max_age > 0):
            warnings.append(
                Warning(
                    f"The database {alias!r} has CONN_MAX_AGE = {max_age!r}: under the gevent worker "
                    "every greenlet (each socket, each HTTP connection) has connections of its own, "
                    "never reused by the next one, and websocket views give theirs back whenever they "
                    "wait: persistent connections only hold database backends longer.",
                    hint="Leave CONN_MAX_AGE at 0; to reuse connections, use Django's pool "
                    f"(PostgreSQL with psycopg 3: OPTIONS['pool']). See {DATABASE_DOCS}.",
                    id="django_websocket.W003",
                )
            )
        problem = drivers.blocking_driver(database)
        if problem:
            warnings.append(
                Warning(
                    f"The database {alias!r} {problem}",
                    hint="django_websocket's gevent worker refuses to boot with this driver.",
                    id="django_websocket.W004",
                )
            )
    return warnings
