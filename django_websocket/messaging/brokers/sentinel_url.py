"""Redis Sentinel URLs: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?options]``.

One function, :func:`parse_sentinel_url`, turns such a URL into a frozen
:class:`SentinelURL` or raises ``ValueError`` saying what is wrong (no hosts, a bad port,
no service name, an unknown option...). It never connects to anything.

- The hosts are the *sentinels* (port 26379 when omitted; IPv6 in brackets), never the
  Redis servers: the sentinels name the current primary.
- ``user:password@`` authenticate to the primary (``AUTH``), as in a ``redis://`` URL.
  The sentinels' own password, if they have one (``requirepass`` in sentinel.conf), is the
  ``sentinel_password`` option (and ``sentinel_username``): the two are often different.
- ``rediss+sentinel://`` speaks TLS to the primary, and to the sentinels too unless
  ``sentinel_ssl=false`` (sentinels without a ``tls-port``); ``ssl_ca_certs=/path/ca.crt``
  trusts a private CA, ``ssl_cert_reqs=none`` (or ``optional``) skips certificate
  verification; both options apply to the sentinels and the primary.
- Percent-encode ``@``, ``:``, ``/``, ``,`` in passwords, as in any URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

#: The schemes, and whether they speak TLS to the primary.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
DEFAULT_SENTINEL_PORT = 26379
#: Query options a Sentinel URL accepts.
OPTIONS = ("sentinel_password", "sentinel_username", "sentinel_ssl", "ssl_cert_reqs", "ssl_ca_certs")
EXAMPLE = "redis+sentinel://:password@sentinel1:26379,sentinel2:26379,sentinel3:26379/mymaster/0"

_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True)
class SentinelURL:
    """What a Sentinel URL says: where the sentinels are, which service, how to reach its primary."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: TLS to the primary, to the sentinels; verify certificates (both).
    tls: bool = False
    sentinel_tls: bool = False
    verify: bool = True
    #: A CA bundle file to verify certificates with (else the system's).
    ca_certs: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """The URL without any password or option: for logs and errors."""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        hosts = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.sentinels
        )
        return f"{scheme}://{hosts}/{self.service}/{self.db}"


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a ``redis+sentinel://`` or ``rediss+sentinel://`` URL; ``ValueError`` says what is wrong.

    Error messages never contain the password.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in SENTINEL_SCHEMES:
        raise ValueError(
            f"a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://, e.g. {EXAMPLE}"
        )
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    if "@" in rest[authority_end:]:
        # A password with an unencoded "/" or "?": the rest of it would be echoed in errors below.
        raise ValueError("an '@' after the hosts: percent-encode '@', '/' and '?' in passwords")
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    userinfo, _, hostlist = location.rpartition("@")
    username, _, password = userinfo.partition(":")
    service, db = _service(path)
    options = _options(query)
    tls = SENTINEL_SCHEMES[scheme]
    cert_reqs = options.get("ssl_cert_reqs", "required")
    return SentinelURL(
        sentinels=_sentinels(hostlist),
        service=service,
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=tls,
        sentinel_tls=_boolean(options["sentinel_ssl"]) if "sentinel_ssl" in options else tls,
        verify=cert_reqs == "required",
        ca_certs=options.get("ssl_ca_certs") or None,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _sentinels(hostlist: str) -> tuple[tuple[str, int], ...]:
    if not hostlist.strip(","):
        raise ValueError(f"no sentinel host in the URL: list them as host:port,host:port, e.g. {EXAMPLE}")
    return tuple(_address(item) for item in hostlist.split(","))


def _address(item: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as ``(host, port)``."""
    if not item:
        raise ValueError("an empty sentinel host in the URL (two commas in a row?)")
    if item.startswith("["):
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"a malformed IPv6 sentinel address {item!r}: use [address]:port")
        port = port[1:]
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"a sentinel address without a host: {item!r}")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a bad port in sentinel address {item!r}: a number from 1 to 65535")
    return host, int(port)


def _service(path: str) -> tuple[str, int]:
    """The service name and database number from the URL's path ``service[/db]``."""
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not parts:
        raise ValueError(f"no service name in the URL: the path names it (e.g. /mymaster/0), as in {EXAMPLE}")
    if len(parts) > 2:
        raise ValueError(f"the URL's path is /service or /service/db, not /{path}")
    service = unquote(parts[0])
    if len(parts) == 1:
        return service, 0
    if not parts[1].isdigit():
        raise ValueError(f"a bad database number {parts[1]!r}: an integer >= 0 after the service name")
    return service, int(parts[1])


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS:
            raise ValueError(f"unknown option {name!r} in the Sentinel URL (known: {', '.join(OPTIONS)})")
        options[name] = value
    if "sentinel_ssl" in options:
        _boolean(options["sentinel_ssl"])
    if options.get("ssl_cert_reqs", "required") not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs is one of {', '.join(_CERT_REQS)}")
    return options


def _boolean(value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise ValueError(f"sentinel_ssl is true or false, not {value!r}") from None
