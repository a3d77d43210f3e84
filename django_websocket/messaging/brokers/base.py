"""The broker interface: what publish, history, presence and the hub ask of a backend.

A broker carries messages between the processes that publish them and the hubs that
deliver them to sockets, keeps each channel's history and its presence. ``remote`` tells
the hub how messages arrive: through a subscriber connection it reads (Redis), or handed to
it directly by :meth:`Broker.publish` (the in-process broker, as message objects, with no
encoding in between).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ...events import Data
from ..history import Entry, Reading, is_id
from ..options import Options
from ..redis_pubsub import PubSubConnection

#: Seconds a publish token is remembered (``publish(once=...)``): how long a relay may take to
#: record a delivery (delete its outbox row) without the message ever going out twice.
ONCE_TTL = 3600
#: Markers the in-process broker keeps at most (:meth:`Broker.remember`): the oldest go first.
REMEMBER_LIMIT = 100_000


class Broker(ABC):
    """One messaging backend, configured by *options*.

    *options* may be replaced by the Django edge when a setting changes (tests'
    ``override_settings``); a broker reads it when used, never copies it.
    Every method that talks to a server raises ``PublishError`` when it does not answer
    within ``options.timeout``; none retries behind the caller's back.
    """

    #: True: messages reach a hub through :meth:`subscriber` connections the hub reads.
    remote: bool = True

    def __init__(self, options: Options) -> None:
        self.options = options

    def key(self, channel: str, audience_suffix: str = "") -> str:
        """The broker channel name of *channel* (and audience); ``ValueError`` for a bad name."""
        return self.options.key(channel, audience_suffix)

    def channel(self, key: str) -> str:
        """The channel broker channel name *key* belongs to (the inverse of :meth:`key`)."""
        return self.options.channel(key)

    @abstractmethod
    def publish(
        self, channel: str, key: str, kind: bytes, data: Data, once: str | None = None
    ) -> tuple[str, int]:
        """Publish a message on broker channel *key* of *channel*; return ``(id, receivers)``.

        *kind* is the payload type (``wire.TEXT``, ``JSON``, ``BINARY``), *data* the text or
        bytes. The message is stored in *channel*'s history by its policy, and then its id
        is returned (``""`` without history). *receivers*: processes (Redis) or sockets
        (in-process) that received it.

        *once*: a token unique to this message (the durable outbox's): a second publish
        with the same token within :data:`ONCE_TTL` seconds does nothing and returns
        ``("", -1)``, so a relay that retries after a crash never delivers a message twice.
        """

    def read(self, channel: str, since: str | None) -> Reading:
        """What was published to *channel* after id *since*; ``since=None``: the position only.

        A malformed *since* is a gap (it cannot be in the history).
        """
        if since is not None and not is_id(since):
            return Reading(position=self.read_history(channel, None).position, gap=True)
        return self.read_history(channel, since)

    @abstractmethod
    def read_history(self, channel: str, since: str | None) -> Reading:
        """:meth:`read` for a well-formed *since* (or ``None``)."""

    @abstractmethod
    def entries(self, channel: str) -> list[Entry]:
        """Every message *channel*'s history keeps, oldest first, all audiences."""

    @abstractmethod
    def join(self, channel: str, member: dict) -> None:
        """Add *member* (with its ``conn``) to *channel*'s presence and announce it.

        Server faults are logged, not raised: presence heals itself (heartbeat or expiry).
        """

    @abstractmethod
    def leave(self, channel: str, conn: str) -> None:
        """Remove connection *conn* from *channel*'s presence and announce it (once)."""

    @abstractmethod
    def members(self, channel: str) -> list[dict]:
        """Every connection in *channel*'s presence: its member dict, in no particular order."""

    def remember(self, scope: str, token: str, ttl: int) -> bool:
        """Mark *token* of *scope* (a channel-like name) as seen for *ttl* seconds; ``False`` if it was.

        Atomic across every process sharing the broker (``SET NX EX`` on Redis, one key per
        token, named after ``key(scope)`` so that a cluster keeps a scope's markers on one
        shard): of concurrent callers with the same token exactly one gets ``True``. The
        exactly-once window of acknowledged client messages (``django_websocket.acks``).
        Raises ``PublishError`` when the server does not answer, ``ValueError`` for a bad *scope*.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no markers")

    def forget(self, scope: str, token: str) -> None:
        """Drop *token*'s marker (processing failed: a resend must be processed). No error if absent."""
        raise NotImplementedError(f"{type(self).__name__} keeps no markers")

    def attach(self, hub: Any) -> None:  # noqa: B027 - optional: only in-process brokers track hubs
        """*hub* (a :class:`~django_websocket.messaging.hub.Hub`) of this broker was created."""

    def subscriber(self) -> PubSubConnection:
        """A new, unconnected subscriber connection for a hub to read from (remote brokers)."""
        raise NotImplementedError(f"{type(self).__name__} delivers to hubs directly")

    @classmethod  # noqa: B027 - optional: a broker without a URL accepts any
    def validate_url(cls, url: str) -> None:
        """Raise ``ValueError`` when *url* is not a URL this broker serves (remote brokers); no I/O."""

    def probe(self) -> str | None:
        """Ask the servers once whether this configuration can work (worker start, ``check --deploy``).

        Returns ``None`` when it can, or a line saying what the servers answered that is wrong
        (a Sentinel service they do not know); raises ``PublishError`` when none answers.
        """
        return None

    def describe(self) -> str:
        """The broker for log lines and errors, without secrets."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.describe()}>"
