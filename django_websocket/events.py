"""What ``websocket.events()`` yields: one stream of client and channel events, in arrival order.

``ChannelMessage`` objects are shared: the hub builds one per published message and
hands the same object to every subscribed socket of the process, so its websocket
frame is encoded once, however many sockets forward it (server frames are unmasked,
so the bytes are the same for every recipient).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .frames import binary_frame, text_frame

Data = str | bytes


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A message the client sent: ``str`` for text, ``bytes`` for binary.

    *id*: the client's id of an acknowledged message (``{"ws": "send"}``, unwrapped: *data*
    is the message itself), ``None`` for a plain one; see ``django_websocket.acks``.
    """

    data: Data
    id: str | None = None

    def json(self) -> Any:
        """The message decoded as JSON; raises ``ValueError`` if it is not JSON."""
        return json.loads(self.data)


@dataclass(eq=False)
class ChannelMessage:
    """A message published to *channel* (the name the view subscribed to, without audience).

    *id*: its id in the channel's history (``None`` when the channel keeps none).
    *kind*: how it was published: ``b"t"`` a ``str``, ``b"j"`` a JSON-able object, ``b"b"`` bytes.
    """

    channel: str
    data: Data
    id: str | None = None
    kind: bytes = b"t"

    @classmethod
    def from_entry(cls, channel: str, entry: Any) -> ChannelMessage:
        """The message of a history entry."""
        data = entry.data if entry.kind == b"b" else entry.data.decode("utf-8", "replace")
        return cls(channel, data, entry.id, entry.kind)

    @cached_property
    def seq(self) -> tuple[int, int]:
        """:attr:`id` as a tuple ordered like the ids; ``(-1, -1)`` without an id."""
        if self.id is None:
            return (-1, -1)
        ms, _, seq = self.id.partition("-")
        return int(ms), int(seq)

    @cached_property
    def envelope_parts(self) -> list[Data]:
        """The messages of the resume protocol for this one: ``{"ws": "message", "channel", "id", "data"}``.

        A binary message is the envelope with ``"binary": true`` followed by the data itself.
        """
        head = f'{{"ws":"message","channel":{json.dumps(self.channel)},"id":{json.dumps(self.id)}'
        if isinstance(self.data, bytes):
            return [head + ',"binary":true}', self.data]
        data = self.data if self.kind == b"j" else json.dumps(self.data)
        return [f'{head},"data":{data}}}']

    @cached_property
    def envelope(self) -> bytes:
        """The frame(s) of :attr:`envelope_parts`, built once."""
        if isinstance(self.data, bytes):
            return text_frame(self.envelope_parts[0]) + self.frame
        return text_frame(self.envelope_parts[0])

    def json(self) -> Any:
        """The message decoded as JSON; raises ``ValueError`` if it is not JSON."""
        return json.loads(self.data)

    @cached_property
    def frame(self) -> bytes:
        """The complete unmasked websocket frame carrying :attr:`data`, built once."""
        if isinstance(self.data, str):
            return text_frame(self.data)
        return binary_frame(self.data)


def compact_json(obj: Any) -> str:
    """*obj* as JSON without spaces: the resume protocol's frames (docs/topics/history.md)."""
    return json.dumps(obj, separators=(",", ":"))


@dataclass(eq=False)
class ChannelBatch:
    """Messages of one channel that arrived together (one broker read), in order.

    Their frames, joined, are built once and written to each forwarding socket with one
    system call.
    """

    messages: list[ChannelMessage]

    @cached_property
    def frames(self) -> bytes:
        if len(self.messages) == 1:
            return self.messages[0].frame
        return b"".join(message.frame for message in self.messages)

    @cached_property
    def envelopes(self) -> bytes:
        """The resume protocol's frames of the messages, joined."""
        if len(self.messages) == 1:
            return self.messages[0].envelope
        return b"".join(message.envelope for message in self.messages)


@dataclass(frozen=True)
class Resync:
    """The hub lost its broker connection and resubscribed: messages on *channels* may be missed.

    A view typically tells its client to reload its state.
    """

    channels: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Gap(Resync):
    """Messages of *channels* after the socket's last id are no longer in the history.

    Either the id a resuming client gave was trimmed or expired, or the hub lost messages
    it could not recover. *id* is the channel's position now: reload the state, then
    continue from there.
    """

    id: str = "0-0"

    @property
    def text(self) -> str:
        """The resume protocol's ``{"ws": "gap", "channel", "id"}``."""
        channel = self.channels[0] if self.channels else ""
        return compact_json({"ws": "gap", "channel": channel, "id": self.id})


@dataclass(frozen=True)
class Presence:
    """Who is in *channel*: one member dict per connection (``conn``, ``user``, ``name``…)."""

    channel: str
    members: tuple[dict, ...]

    @property
    def text(self) -> str:
        """The resume protocol's ``{"ws": "presence", "channel", "members"}``."""
        obj = {"ws": "presence", "channel": self.channel, "members": list(self.members)}
        return compact_json(obj)


@dataclass(eq=False)
class PresenceChange:
    """A connection joined or left *channel*: base of :class:`Join` and :class:`Leave`.

    *raw* is the published JSON (``{"ws": "join", "channel", "member"}``), forwarded as is.
    """

    channel: str
    member: dict
    raw: bytes = b""

    @property
    def text(self) -> str:
        """The resume protocol's ``{"ws": "join"|"leave", "channel", "member"}``, as published."""
        return self.raw.decode()

    @staticmethod
    def decode(raw: bytes) -> PresenceChange:
        obj = json.loads(raw)
        kind = Join if obj["ws"] == "join" else Leave
        return kind(obj["channel"], obj["member"], raw)


class Join(PresenceChange):
    """*member* connected to *channel*."""


class Leave(PresenceChange):
    """*member* left *channel* (closed, unsubscribed, or its worker stopped heartbeating)."""


@dataclass(eq=False)
class PresenceDiff:
    """The joins and leaves of *channel* during one batch window (about 0.1 s), as one frame.

    Each connection (``conn``) appears at most once, with its latest change in the window.
    Forwarding sockets receive it as
    ``{"ws": "presence_diff", "channel", "joins": [...], "leaves": [...]}``; ``events()``
    yields its :meth:`changes` (``Join`` and ``Leave`` events), as before batching.
    """

    channel: str
    joins: tuple[dict, ...]
    leaves: tuple[dict, ...]

    @cached_property
    def text(self) -> str:
        """The resume protocol's ``presence_diff`` frame, built once for every member socket."""
        obj = {"ws": "presence_diff", "channel": self.channel, "joins": self.joins, "leaves": self.leaves}
        return compact_json(obj)

    def changes(self) -> list[PresenceChange]:
        """The diff as ``Leave`` then ``Join`` events."""
        return [Leave(self.channel, member) for member in self.leaves] + [
            Join(self.channel, member) for member in self.joins
        ]


Event = ClientMessage | ChannelMessage | Resync | Presence | PresenceChange
