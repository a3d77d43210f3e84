"""Step 1 of a connection: validate the opening handshake (RFC 6455 §4.2.1).

Pure functions of the WSGI environ: no sockets, no Django request. Every refusal
is a :class:`~django_websocket.exceptions.HandshakeError` carrying the one HTTP
status it maps to, so the handler answers in one place and before any upgrade:

=========================================================  ======
what is wrong                                              status
=========================================================  ======
not GET, not HTTP/1.1+, no ``Connection: upgrade``          400
missing, malformed or duplicated ``Sec-WebSocket-Key``      400
``Sec-WebSocket-Version`` other than 13 (answer lists 13)   400
malformed ``Sec-WebSocket-Extensions`` (``compression.py``)  400
``Origin`` not allowed                                      403
=========================================================  ======
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.http.request import split_domain_port
from django.utils.http import is_same_domain

from .exceptions import HandshakeError

#: RFC 6455 §1.3: the GUID appended to the client's key to compute the accept value.
ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: RFC 6455 §4.4: the only version this server speaks.
VERSION = "13"


@dataclass(frozen=True)
class Handshake:
    """A validated opening handshake.

    ``subprotocols`` are the client's offers in its order of preference;
    ``origin`` is ``None`` when the client sent no ``Origin`` header.
    """

    key: str
    subprotocols: tuple[str, ...]
    extensions: str
    origin: str | None

    @property
    def accept(self) -> str:
        """The ``Sec-WebSocket-Accept`` value for this handshake's key."""
        return accept_key(self.key)


def header_tokens(value: str) -> list[str]:
    """Split a comma-separated header value into lower-cased, stripped, non-empty tokens."""
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def is_upgrade_request(environ: dict) -> bool:
    """Return whether the request asks to upgrade to websocket (``Upgrade: websocket``).

    Such a request gets a websocket answer (101 or a handshake error); any other
    request is ordinary HTTP.
    """
    value = environ.get("HTTP_UPGRADE")
    if not value:
        return False
    return value == "websocket" or "websocket" in header_tokens(value)  # the first: what clients send


def parse_handshake(environ: dict) -> Handshake:
    """Return the :class:`Handshake` of an upgrade request, or raise ``HandshakeError``.

    Raises ``HandshakeError(400)`` for every malformed handshake; a version other
    than 13 carries ``Sec-WebSocket-Version: 13`` so the client can retry.
    Duplicated headers arrive comma-joined in the environ and fail validation.
    """
    if environ.get("REQUEST_METHOD") != "GET":
        raise HandshakeError(400, "A websocket handshake must use the GET method.")
    if environ.get("SERVER_PROTOCOL", "HTTP/1.0") in ("HTTP/0.9", "HTTP/1.0"):
        raise HandshakeError(400, "A websocket handshake needs HTTP/1.1.")
    connection = environ.get("HTTP_CONNECTION", "")
    if connection != "Upgrade" and "upgrade" not in header_tokens(connection):
        raise HandshakeError(400, "A websocket handshake needs the header 'Connection: Upgrade'.")
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != VERSION:
        raise HandshakeError(
            400,
            f"Unsupported Sec-WebSocket-Version {version!r}: this server speaks version {VERSION}.",
            {"Sec-WebSocket-Version": VERSION},
        )
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    if not is_valid_key(key):
        raise HandshakeError(400, "Missing or invalid Sec-WebSocket-Key header.")
    offered = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")
    return Handshake(
        key=key,
        subprotocols=tuple(token.strip() for token in offered.split(",") if token.strip()) if offered else (),
        extensions=environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""),
        origin=environ.get("HTTP_ORIGIN"),
    )


def is_valid_key(key: str) -> bool:
    """Return whether *key* is base64 of exactly 16 bytes (RFC 6455 §4.1, item 7)."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        # Python 3 raises binascii.Error (not TypeError) for bad base64.
        return False


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for client key *key* (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + ACCEPT_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def select_subprotocol(offered: tuple[str, ...], supported: tuple[str, ...] | list[str]) -> str | None:
    """Return the first of the server's *supported* subprotocols the client *offered*, or ``None``."""
    if not offered:
        return None
    for subprotocol in supported:
        if subprotocol in offered:
            return subprotocol
    return None


def accept_headers(
    handshake: Handshake, subprotocol: str | None = None, extensions: str | None = None
) -> list[tuple[str, str]]:
    """Return the headers of the 101 response accepting *handshake*.

    *extensions* is the agreed ``Sec-WebSocket-Extensions`` value (see
    ``django_websocket.compression.negotiate``), ``None`` when none was agreed.
    """
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", handshake.accept),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions is not None:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    return headers


def check_origin(origin: str | None, allowed: list[str] | tuple[str, ...], allow_missing: bool) -> None:
    """Raise ``HandshakeError(403)`` unless *origin* matches one of the *allowed* patterns.

    Patterns are host patterns as in ``ALLOWED_HOSTS`` (``'example.com'``,
    ``'.example.com'``, ``'*'``; the origin's port is ignored, as Django ignores
    the Host's), or full origins (``'https://example.com:8443'``), compared exactly.
    A missing ``Origin`` (non-browser clients) passes only when *allow_missing*.
    """
    if origin is None:
        if allow_missing:
            return
        raise HandshakeError(403, "This websocket requires an Origin header.")
    if not origin_allowed(origin, tuple(allowed)):
        raise HandshakeError(403, "Cross-origin websocket connections to this server are not allowed.")


@functools.lru_cache(maxsize=1024)
def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether *origin* (an ``Origin`` header's value) matches one of the *allowed* patterns.

    A pure function, remembered for the last 1,024 ``(origin, allowed)`` pairs: a site's
    sockets come from a handful of origins, and parsing one costs more than the lookup.
    """
    origin = origin.strip().lower()
    if "*" in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme and parts.netloc:
        host = _host_without_port(parts.netloc)
        for pattern in allowed:
            pattern = pattern.lower()
            if "://" in pattern:
                if pattern.rstrip("/") == origin.rstrip("/"):
                    return True
            elif is_same_domain(host, pattern):
                return True
    return False


def _host_without_port(netloc: str) -> str:
    """Return *netloc*'s host, lower-cased, keeping an IPv6 literal's brackets as ALLOWED_HOSTS does."""
    domain, _port = split_domain_port(netloc)
    if netloc.startswith("[") and domain and not domain.startswith("["):
        domain = f"[{domain}]"
    return domain
