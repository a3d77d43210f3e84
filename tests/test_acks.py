"""django_websocket.acks: send frames unwrapped, ack and nack frames, acknowledging() per id."""

from __future__ import annotations

import json

import pytest

from django_websocket.acks import (
    MAX_ID_LENGTH,
    Refused,
    ack_frame,
    acknowledging,
    client_message,
    nack_frame,
    send_frame,
)
from django_websocket.connection import MessageMixin
from django_websocket.events import ClientMessage
from django_websocket.exceptions import PublishError
from django_websocket.messaging.brokers.local import LocalBroker
from django_websocket.messaging.hub import Hub
from django_websocket.messaging.options import Options


class Socket(MessageMixin):
    """A websocket that records what the view sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message) -> None:
        self.sent.append(message)


class DownBroker:
    """A broker whose server does not answer."""

    def remember(self, scope, token, ttl):
        raise PublishError("down")


def test_a_send_frame_is_unwrapped_with_its_id():
    """{"ws": "send", "id", "data"} becomes ClientMessage(data, id), whoever serialised it."""
    assert client_message(send_frame("p-1", '{"a":1}')) == ClientMessage('{"a":1}', "p-1")
    spaced = json.dumps({"ws": "send", "id": "p-2", "data": "hi"})
    assert client_message(spaced) == ClientMessage("hi", "p-2")


@pytest.mark.parametrize(
    "data",
    [
        "hello",
        b'{"ws":"send","id":"p","data":"x"}',
        '{"ws":"send"',
        '{"ws":"ack","id":"p"}',
        '{"ws":"send","id":7,"data":"x"}',
        '{"ws":"send","id":"","data":"x"}',
        '{"ws":"send","id":"p","data":{"a":1}}',
        json.dumps({"ws": "send", "id": "p" * (MAX_ID_LENGTH + 1), "data": "x"}),
        '["ws"]',
    ],
)
def test_anything_else_is_a_plain_message_as_it_came(data):
    """Binary frames, other JSON and malformed send frames pass through with no id."""
    assert client_message(data) == ClientMessage(data)


def test_answer_frames():
    """ack and nack frames are compact JSON with the client's id."""
    assert json.loads(ack_frame("p-1")) == {"ws": "ack", "id": "p-1"}
    assert json.loads(nack_frame("p-1", "too long")) == {"ws": "nack", "id": "p-1", "error": "too long"}


def test_ack_and_nack_answer_only_messages_with_an_id():
    """websocket.ack()/nack() send the frames; a plain message gets nothing."""
    socket = Socket()
    socket.ack(ClientMessage("x", "p-1"))
    socket.nack(ClientMessage("x", "p-2"), "bad")
    socket.ack(ClientMessage("x"))
    socket.nack(ClientMessage("x"), "bad")
    assert socket.sent == [ack_frame("p-1"), nack_frame("p-2", "bad")]


def test_acknowledging_processes_an_id_once_and_acks_every_copy():
    """The first copy is fresh, a resend is not; both are acked (the first ack may have been lost)."""
    socket, broker = Socket(), LocalBroker(Options())
    message = ClientMessage("x", "p-1")
    seen = []
    for _ in range(2):
        with socket.acknowledging(message, broker=broker) as fresh:
            seen.append(fresh)
    assert seen == [True, False]
    assert socket.sent == [ack_frame("p-1")] * 2


def test_acknowledging_a_plain_message_is_fresh_and_silent():
    """No id: processed every time, never answered, no marker."""
    socket = Socket()
    with acknowledging(socket, ClientMessage("x"), broker=DownBroker()) as fresh:
        assert fresh
    assert socket.sent == []


def test_a_failure_releases_the_mark_so_that_a_resend_is_processed():
    """An exception propagates, nothing is answered, and the next copy is fresh again."""
    socket, broker = Socket(), LocalBroker(Options())
    message = ClientMessage("x", "p-1")
    with pytest.raises(ZeroDivisionError):
        with acknowledging(socket, message, broker=broker):
            raise ZeroDivisionError
    assert socket.sent == []
    with acknowledging(socket, message, broker=broker) as fresh:
        assert fresh
    assert socket.sent == [ack_frame("p-1")]


def test_refused_sends_a_nack_and_releases_the_mark():
    """Refused is swallowed, answered with a nack; a copy of the message is judged again."""
    socket, broker = Socket(), LocalBroker(Options())
    message = ClientMessage("x", "p-1")
    with acknowledging(socket, message, broker=broker):
        raise Refused("no such room")
    assert socket.sent == [nack_frame("p-1", "no such room")]
    assert broker.remember("acks", "p-1", 60) is True


def test_scopes_keep_ids_apart():
    """The same id in two scopes is two messages."""
    socket, broker = Socket(), LocalBroker(Options())
    message = ClientMessage("x", "p-1")
    fresh = []
    for scope in ("room-a", "room-b", "room-a"):
        with acknowledging(socket, message, scope=scope, broker=broker) as first:
            fresh.append(first)
    assert fresh == [True, True, False]


def test_a_broker_that_does_not_answer_raises_before_processing():
    """PublishError comes out of the with statement before its body runs; nothing is answered."""
    socket, ran = Socket(), []
    with pytest.raises(PublishError):
        with acknowledging(socket, ClientMessage("x", "p-1"), broker=DownBroker()):
            ran.append(True)
    assert ran == [] and socket.sent == []


def test_the_broker_is_the_hubs_unless_given():
    """Without a broker argument the socket's hub's broker dedupes; a socket without a hub is an error."""
    socket, broker = Socket(), LocalBroker(Options())
    with pytest.raises(RuntimeError):
        with acknowledging(socket, ClientMessage("x", "p-1")):
            pass
    socket.hub = Hub(broker)
    with acknowledging(socket, ClientMessage("x", "p-1")) as fresh:
        assert fresh
    assert broker.remember("acks", "p-1", 60) is False
