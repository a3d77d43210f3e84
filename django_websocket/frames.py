"""Server frames as bytes (RFC 6455 §5.2): the protocol level, below the socket and the messages.

Server frames are never masked, so the bytes of a frame depend only on its payload: the
hub builds a channel message's frame once and every socket that forwards it writes the
same bytes.
"""

from __future__ import annotations

TEXT = 0x81  # FIN + opcode 1
BINARY = 0x82  # FIN + opcode 2


def frame_header(first_byte: int, length: int) -> bytes:
    """The header of an unmasked server frame: *first_byte* (FIN + opcode), then the length."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return bytes((first_byte, 126)) + length.to_bytes(2, "big")
    return bytes((first_byte, 127)) + length.to_bytes(8, "big")


def text_frame(text: str) -> bytes:
    """The complete unmasked frame carrying *text*."""
    payload = text.encode()
    return frame_header(TEXT, len(payload)) + payload


def binary_frame(data: bytes) -> bytes:
    """The complete unmasked frame carrying *data*."""
    return frame_header(BINARY, len(data)) + data
