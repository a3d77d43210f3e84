"""Unit tests of django_websocket.events."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from django_websocket.events import ChannelMessage, ClientMessage, Resync


@pytest.mark.parametrize("data, opcode", [("héllo", Opcode.TEXT), (b"\x01" * 70000, Opcode.BINARY)])
def test_channel_message_frame_is_the_serialised_frame(data, opcode):
    """The shared frame equals websockets' own serialisation of the same message."""
    payload = data.encode() if isinstance(data, str) else data
    assert ChannelMessage("c", data).frame == Frame(opcode, payload).serialize(mask=False)


def test_frame_is_built_once():
    """Every recipient gets the very same bytes object."""
    message = ChannelMessage("c", "x")
    assert message.frame is message.frame


def test_json_helpers_and_resync():
    """json() decodes; Resync carries the channels."""
    assert ClientMessage('{"a": 1}').json() == {"a": 1}
    assert ChannelMessage("c", "[1]").json() == [1]
    assert Resync(("a", "b")).channels == ("a", "b")
