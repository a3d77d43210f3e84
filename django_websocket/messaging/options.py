"""The messaging settings, read once at the Django edge and passed down as one frozen object.

``django_websocket.brokers`` builds an :class:`Options` from the ``WEBSOCKET_*`` settings
(again only when a setting changes, as ``override_settings`` does in tests); everything in
:mod:`django_websocket.messaging` takes it as an argument and never reads ``django.conf``,
so it is testable without settings and nothing on the per-message path looks a setting up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

#: Separates a channel from its audience in broker channel names; not allowed in channel names.
AUDIENCE_SEPARATOR = "@"


@dataclass(frozen=True)
class Policy:
    """How much history a channel keeps: *size* messages (0: none), for *ttl* seconds (None: forever)."""

    size: int
    ttl: float | None

    @property
    def enabled(self) -> bool:
        return self.size > 0


@dataclass(frozen=True)
class Options:
    """Every setting messaging uses, with the documented defaults (``django_websocket.conf``).

    *history_channels*: ``(pattern, size or None, ttl or None-given)`` overrides, first match
    wins (``WEBSOCKET_HISTORY_CHANNELS`` in order).
    """

    prefix: str = "django_websocket:"
    queue_size: int = 1000
    timeout: float = 1.0
    history_size: int = 100
    history_ttl: float | None = 3600.0
    history_channels: tuple[tuple[str, dict[str, Any]], ...] = ()
    presence_ttl: float = 30.0
    _policies: dict[str, Policy] = field(default_factory=dict, compare=False, repr=False)

    def policy(self, channel: str) -> Policy:
        """*channel*'s history policy: its first override that matches, else the defaults."""
        rule = self._policies.get(channel)
        if rule is None:
            size, ttl = self.history_size, self.history_ttl
            for pattern, override in self.history_channels:
                if fnmatchcase(channel, pattern):
                    size = override.get("size", size)
                    ttl = override.get("ttl", ttl)
                    break
            rule = Policy(int(size), None if ttl is None else float(ttl))
            if len(self._policies) < 10_000:  # channel names are open-ended: bound the cache
                self._policies[channel] = rule
        return rule

    def key(self, channel: str, audience_suffix: str = "") -> str:
        """The broker channel name of *channel* (with an optional audience suffix).

        Raises ``ValueError`` for a channel that is not a non-empty string without ``@``.
        """
        if not isinstance(channel, str) or not channel or AUDIENCE_SEPARATOR in channel:
            raise ValueError(
                f"channel names are non-empty strings without {AUDIENCE_SEPARATOR!r}: {channel!r}"
            )
        return f"{self.prefix}{channel}{audience_suffix}"

    def channel(self, key: str) -> str:
        """The channel a broker channel name belongs to (prefix and audience removed)."""
        return key[len(self.prefix) :].split(AUDIENCE_SEPARATOR, 1)[0]
