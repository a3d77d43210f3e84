"""django_websocket.frames: server frames byte for byte as the websockets library serialises them."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from django_websocket.frames import binary_frame, frame_header, text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_frame_header_matches_websockets(opcode, length):
    """frame_header() + payload is what Frame.serialize() builds for an unmasked server frame."""
    payload = b"x" * length
    expected = Frame(opcode, payload).serialize(mask=False)
    assert frame_header(0x80 | opcode.value, length) + payload == expected


def test_text_and_binary_frames():
    """text_frame() encodes UTF-8 under opcode 1; binary_frame() keeps the bytes under opcode 2."""
    assert text_frame("é") == Frame(Opcode.TEXT, "é".encode()).serialize(mask=False)
    assert binary_frame(b"\x00") == Frame(Opcode.BINARY, b"\x00").serialize(mask=False)
