"""permessage-deflate (RFC 7692), server side: negotiation and a per-message compressor.

The codec and the negotiation rules are ``websockets``' own
(:class:`~websockets.extensions.permessage_deflate.ServerPerMessageDeflateFactory`,
:class:`~websockets.extensions.permessage_deflate.PerMessageDeflate`); this module adds:

- :func:`negotiate`: the ``Sec-WebSocket-Extensions`` request header in, the 101's header
  value and the extension objects for ``protocol.extensions`` out; a malformed header is a
  :class:`~django_websocket.exceptions.HandshakeError` (400) before the upgrade, an offer
  we cannot accept (unknown parameter, invalid value, ``server_max_window_bits=8``) is
  declined and the next offer is tried, as RFC 7692 §5 requires;
- :class:`ServerPerMessageDeflate`: sends messages under ``threshold`` bytes uncompressed
  (RFC 7692 §6: compression is chosen per message, RSV1 unset), and allocates its zlib
  compressor only when a message is first compressed, so a socket that only ever sends
  small messages costs no compressor memory;
- :func:`plain_frame_limit`: the size under which a message's frame is exactly the frame
  sent without extensions, so the connection's fast path still serves small messages;
  :func:`allows_plain_frames`: whether uncompressed frames may bypass the extension at all
  (they may: the fan-out's shared frames go out uncompressed, whatever their size).

Memory and window sizes. zlib's compressor costs ``2**(wbits+2) + 2**(memLevel+9)`` bytes:
262 KiB per socket with zlib's defaults (15 bits, memLevel 8), 38 KiB with the 12 bits and
memLevel 5 used here (``websockets``' own server defaults), for a compression ratio within
a few percent on messages of a few KiB. The decompressor's window (``client_max_window_bits``)
is limited to 12 bits (4 KiB) when the client allows it (browsers do: they offer
``client_max_window_bits`` without a value); otherwise it is the client's choice, up to 32 KiB.

Decompression bombs. The limit on incoming messages applies to their *decompressed* size:
``Protocol`` passes what is left of ``max_size`` to :meth:`ServerPerMessageDeflate.decode`,
which stops zlib at that many bytes and raises ``PayloadTooBig``; the protocol closes 1009.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.headers import build_extension, parse_extension

from .exceptions import HandshakeError

__all__ = [
    "DEFAULT_THRESHOLD",
    "ServerPerMessageDeflate",
    "allows_plain_frames",
    "negotiate",
    "plain_frame_limit",
]

#: Messages under this many bytes are sent uncompressed (``WEBSOCKET_COMPRESSION_THRESHOLD``).
DEFAULT_THRESHOLD = 128
#: The server's LZ77 window: 4 KiB (compressor memory: see the module docstring).
SERVER_MAX_WINDOW_BITS = 12
#: The window asked of clients that offer ``client_max_window_bits``: our decompressor's memory.
CLIENT_MAX_WINDOW_BITS = 12
#: Extra ``zlib.compressobj`` arguments: memLevel 5 is 16 KiB of hash chains instead of 128 KiB.
COMPRESS_SETTINGS: dict[str, Any] = {"memLevel": 5}


class ServerPerMessageDeflate(PerMessageDeflate):
    """``websockets``' permessage-deflate, sending messages under *threshold* bytes uncompressed.

    The first frame of a message decides for the whole message: when its payload is under
    *threshold* bytes, it and its continuation frames go out as they are (RSV1 unset),
    otherwise the message is compressed (RSV1 on its first frame only). A message sent
    uncompressed never touches the compressor, so with context takeover the client's
    decompressor and our compressor keep the same history.

    *max_message_size* caps decompression when the caller's ``Protocol`` passes no limit
    (``max_size=None``); with a limit, the protocol's (the smaller one) applies.
    """

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: dict[Any, Any] | None = None,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        max_message_size: int | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be a non-negative integer, not {threshold!r}")
        super().__init__(
            remote_no_context_takeover,
            local_no_context_takeover,
            remote_max_window_bits,
            local_max_window_bits,
            compress_settings,
        )
        # The compressor is created by the first message that needs it (see encode()).
        self.__dict__.pop("encoder", None)
        self.threshold = threshold
        self.max_message_size = max_message_size
        #: Whether the fragmented message being sent is compressed (its continuation frames are).
        self.encode_cont_data = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}("
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"threshold={self.threshold})"
        )

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Decompress *frame* if it belongs to a compressed message, to at most *max_size* bytes."""
        if max_size is None:
            max_size = self.max_message_size
        return super().decode(frame, max_size=max_size)

    def encode(self, frame: Frame) -> Frame:
        """Compress *frame* unless it is a control frame or belongs to a message sent uncompressed."""
        opcode = frame.opcode
        if opcode in CTRL_OPCODES:
            return frame
        if opcode is Opcode.CONT:
            if not self.encode_cont_data:
                return frame
            if frame.fin:
                self.encode_cont_data = False
            return super().encode(frame)
        if len(frame.data) < self.threshold:
            self.encode_cont_data = False
            return frame
        self.encode_cont_data = not frame.fin
        if not self.local_no_context_takeover and "encoder" not in self.__dict__:
            # First compressed message with context takeover: from now on the compressor
            # holds the history the client's decompressor shares, so it lives with the socket.
            self.encoder = zlib.compressobj(wbits=-self.local_max_window_bits, **self.compress_settings)
        return super().encode(frame)


def negotiate(
    header: str,
    *,
    enabled: bool = True,
    threshold: int = DEFAULT_THRESHOLD,
    max_message_size: int | None = None,
) -> tuple[str | None, list[Extension]]:
    """Negotiate permessage-deflate from the client's ``Sec-WebSocket-Extensions`` *header*.

    Returns the ``Sec-WebSocket-Extensions`` value of the 101 and the extensions to set on
    ``protocol.extensions``: the first permessage-deflate offer we can accept, with the
    parameters it asks for (``*_no_context_takeover``, ``*_max_window_bits``) and our window
    limits. Returns ``(None, [])`` when *enabled* is false (the header is then not even
    parsed, as without compression support), when no header or no permessage-deflate offer
    was sent, and when every offer is declined (unknown parameter, invalid or duplicated
    value, ``server_max_window_bits=8``). Other extensions are ignored.

    Raises ``HandshakeError(400)`` when the header does not parse (RFC 6455 §9.1 syntax).
    """
    if not enabled or not header.strip():
        return None, []
    try:
        offers = parse_extension(header)
    except InvalidHeader:
        raise HandshakeError(400, "Malformed Sec-WebSocket-Extensions header.") from None
    factory = ServerPerMessageDeflateFactory(
        server_max_window_bits=SERVER_MAX_WINDOW_BITS,
        client_max_window_bits=CLIENT_MAX_WINDOW_BITS,
        compress_settings=COMPRESS_SETTINGS,
    )
    for name, params in offers:
        if name != factory.name:
            continue
        try:
            response_params, agreed = factory.process_request_params(params, [])
        except (NegotiationError, ValueError):
            # RFC 7692 §5: decline this offer, try the next one. websockets < 17 accepts
            # server_max_window_bits=8, then zlib refuses it (ValueError): declined too.
            continue
        extension = ServerPerMessageDeflate(
            agreed.remote_no_context_takeover,
            agreed.local_no_context_takeover,
            agreed.remote_max_window_bits,
            agreed.local_max_window_bits,
            agreed.compress_settings,
            threshold=threshold,
            max_message_size=max_message_size,
        )
        return build_extension([(factory.name, response_params)]), [extension]
    return None, []


def plain_frame_limit(extensions: Sequence[Extension]) -> float:
    """The payload size under which *extensions* leave a message's frames untouched.

    ``math.inf`` without extensions, the threshold with :class:`ServerPerMessageDeflate`
    alone, 0 otherwise. A message under this size may be written as the plain frame built
    without extensions (``frames.frame_header`` + payload, or a ``ChannelMessage``'s
    shared frame) — the very bytes ``protocol.send_text/send_binary`` would produce — as
    long as no fragmented message is being sent (``protocol.expect_continuation_frame``).
    """
    if not extensions:
        return math.inf
    if len(extensions) == 1 and isinstance(extensions[0], ServerPerMessageDeflate):
        return extensions[0].threshold
    return 0


def allows_plain_frames(extensions: Sequence[Extension]) -> bool:
    """Whether a plain frame (uncompressed, RSV1 unset) of any size may bypass *extensions*.

    Outside a fragmented message (``protocol.expect_continuation_frame``), that is.
    True without extensions and with :class:`ServerPerMessageDeflate`: RFC 7692 lets any
    message go uncompressed, and one that bypasses the extension leaves its compressor
    untouched, so context takeover stays in sync. The fan-out uses this to write a channel
    message's shared frame to every socket instead of compressing it once per socket.
    """
    return not extensions or (len(extensions) == 1 and isinstance(extensions[0], ServerPerMessageDeflate))
