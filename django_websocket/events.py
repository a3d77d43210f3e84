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

Data = str | bytes


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A message the client sent: ``str`` for text, ``bytes`` for binary."""

    data: Data

    def json(self) -> Any:
        """The message decoded as JSON; raises ``ValueError`` if it is not JSON."""
        return json.loads(self.data)


@dataclass(eq=False)
class ChannelMessage:
    """A message published to *channel* (the name the view subscribed to, without audience)."""

    channel: str
    data: Data

    def json(self) -> Any:
        """The message decoded as JSON; raises ``ValueError`` if it is not JSON."""
        return json.loads(self.data)

    @cached_property
    def frame(self) -> bytes:
        """The complete unmasked websocket frame carrying :attr:`data`, built once."""
        from .connection import frame_header

        if isinstance(self.data, str):
            payload = self.data.encode()
            return frame_header(0x81, len(payload)) + payload
        return frame_header(0x82, len(self.data)) + self.data


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


@dataclass(frozen=True)
class Resync:
    """The hub lost its broker connection and resubscribed: messages on *channels* may be missed.

    A view typically tells its client to reload its state.
    """

    channels: tuple[str, ...] = field(default_factory=tuple)


Event = ClientMessage | ChannelMessage | Resync
