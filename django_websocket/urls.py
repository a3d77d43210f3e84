"""Reverse websocket views into paths and absolute ``ws://`` / ``wss://`` URLs.

Websocket views live in their own URLconf, ``WEBSOCKET_URLCONF``, so the
ordinary ``reverse()`` and ``{% url %}`` (which use ``ROOT_URLCONF``) do not
find them. :func:`reverse_websocket` is ``reverse()`` against that URLconf;
:func:`websocket_url` adds the scheme and host a browser needs for
``new WebSocket(url)``. The ``{% websocket_url %}`` template tag is a thin
wrapper around :func:`websocket_url`.

Both honour the script prefix exactly as ``reverse()`` does: Django's handler
sets it per request from ``SCRIPT_NAME`` or ``FORCE_SCRIPT_NAME``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.urls import reverse

from django_websocket import conf

if TYPE_CHECKING:
    from django.http import HttpRequest

# The host grammar Django's request.get_host() accepts: a DNS name or IPv4
# address, or a bracketed IPv6 address; then an optional port.
_SERVER_RE = re.compile(
    r"(?P<host>[a-z0-9.-]*|\[[a-f0-9]*:[a-f0-9.:]+\])(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)


class MissingRequestError(ValueError):
    """:func:`websocket_url` got no request, and ``WEBSOCKET_SERVER`` does not name a host."""


def split_server(value: str) -> tuple[str, str | None]:
    """Split a ``WEBSOCKET_SERVER`` value into ``(host, port)``.

    Accepts ``host``, ``host:port`` and ``:port``; an IPv6 host keeps its
    brackets (``[::1]:8001`` gives ``("[::1]", "8001")``). ``host`` is ``""`` for
    the ``:port`` form and ``port`` is ``None`` when absent. Raises ``ValueError``
    naming the problem for anything else: a scheme, a path, a bare IPv6
    address, a port outside 1-65535, or an empty value. Used both to build URLs
    and by the ``django_websocket.E007`` system check, so both agree.
    """
    if "://" in value:
        raise ValueError(f"{value!r} has a scheme; give only host[:port], the scheme follows the request")
    if "/" in value:
        raise ValueError(f"{value!r} has a path; give only host[:port], the path comes from the URLconf")
    match = _SERVER_RE.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not host, host:port or :port (an IPv6 address must be in brackets: '[::1]:8001')"
        )
    host, port = match["host"], match["port"]
    if not host and port is None:
        raise ValueError("the value is empty; use None to serve websockets from the page's own host")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} has port {port}, outside 1-65535")
    return host, port


def reverse_websocket(viewname: str, /, *args: Any, **kwargs: Any) -> str:
    """Return the path (with script prefix) of websocket view *viewname*.

    Reverses against ``WEBSOCKET_URLCONF``. Give positional or keyword URL
    arguments, not both (as with ``reverse()``). Raises ``NoReverseMatch`` when no
    pattern matches and ``ImproperlyConfigured`` when ``WEBSOCKET_URLCONF`` is unset.
    """
    return reverse(viewname, urlconf=conf.websocket_urlconf(), args=args or None, kwargs=kwargs or None)


def websocket_url(request: HttpRequest | None, viewname: str, /, *args: Any, **kwargs: Any) -> str:
    """Return the absolute ``ws://`` or ``wss://`` URL of websocket view *viewname*.

    The path is :func:`reverse_websocket`'s. The scheme is ``wss`` when
    ``request.is_secure()`` (which honours ``SECURE_PROXY_SSL_HEADER``), else
    ``ws``. The host is ``WEBSOCKET_SERVER`` when set: ``host`` or ``host:port``
    verbatim, or for ``:port`` the request's hostname with that port. When
    ``WEBSOCKET_SERVER`` is ``None`` the host is ``request.get_host()``.

    *request* may be ``None`` only when ``WEBSOCKET_SERVER`` names a host; the
    scheme is then always ``ws``, so pass the request to get ``wss``. Raises
    :class:`MissingRequestError` (a ``ValueError``) when the host cannot be known
    (no request, and ``WEBSOCKET_SERVER`` is ``None`` or ``:port``); ``ValueError``
    when ``WEBSOCKET_SERVER`` is malformed; ``DisallowedHost`` as ``get_host()`` does; ``NoReverseMatch`` and
    ``ImproperlyConfigured`` as :func:`reverse_websocket` does.

    The result contains none of ``"'<>&`` or backslash, so it is inert inside
    HTML attributes and JavaScript string literals alike.
    """
    path = reverse_websocket(viewname, *args, **kwargs)
    # reverse() leaves RFC 3986 sub-delimiters such as & and ' unencoded. Encoding
    # them changes nothing for Django, which decodes the path before resolving it,
    # and spares the URL from HTML escaping inside <script>, where no entity is decoded.
    path = path.replace("&", "%26").replace("'", "%27")
    scheme = "wss" if request is not None and request.is_secure() else "ws"
    return f"{scheme}://{_websocket_host(request)}{path}"


def _websocket_host(request: HttpRequest | None) -> str:
    """Return the ``host[:port]`` websocket URLs point at; see :func:`websocket_url`."""
    server = conf.get("WEBSOCKET_SERVER")
    if server is None:
        if request is None:
            raise MissingRequestError(
                "websocket_url() needs the request to know the host: pass it, or set "
                "WEBSOCKET_SERVER = 'host[:port]' to name the websocket server."
            )
        return request.get_host()
    host, port = split_server(server)
    if host:
        return server
    if request is None:
        raise MissingRequestError(
            f"WEBSOCKET_SERVER = {server!r} takes the host from the request, and there is none: "
            "pass the request, or set WEBSOCKET_SERVER = 'host:port'."
        )
    return f"{_without_port(request.get_host())}:{port}"


def _without_port(host: str) -> str:
    """Return *host* (as ``get_host()`` gives it) without its port; IPv6 keeps its brackets."""
    if host.endswith("]"):
        return host
    hostname, colon, _ = host.rpartition(":")
    return hostname if colon else host
