"""Tests of django_websocket.compression: permessage-deflate (RFC 7692) on the server side.

Negotiation is checked against ``websockets``' client factory (whatever we answer, a
conforming client accepts); frames are checked on the wire (RSV1, payload); the
decompressed-size limit is checked with a real ``Protocol`` fed a real compressed frame.
The last tests go through ``WebSocket(extensions=...)`` and the handler's negotiation.
"""

from __future__ import annotations

import math
import os
import struct
import tracemalloc
import zlib

import gevent
import gevent.socket
import pytest
from django.test import override_settings
from gevent import pywsgi
from websockets.client import ClientProtocol
from websockets.exceptions import PayloadTooBig
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import OPEN, Protocol, Side
from websockets.uri import parse_uri

from django_websocket.compression import (
    CLIENT_MAX_WINDOW_BITS,
    DEFAULT_THRESHOLD,
    SERVER_MAX_WINDOW_BITS,
    ServerPerMessageDeflate,
    allows_plain_frames,
    negotiate,
    plain_frame_limit,
)
from django_websocket.connection import WebSocket
from django_websocket.events import ChannelMessage
from django_websocket.exceptions import ConnectionClosedError, HandshakeError
from django_websocket.frames import frame_header
from django_websocket.handler import KEEP_DB_CONNECTIONS
from django_websocket.server import UpgradeHandler
from django_websocket.testing import HandshakeRejected, WebSocketClient, WebSocketTestConnection

BROWSER_OFFER = "permessage-deflate; client_max_window_bits"  # Chrome, Safari, Firefox
MIB = 2**20
TEXT = ("The quick brown fox jumps over the lazy dog. " * 200).encode()  # compressible


def params(header: str) -> dict[str, str | None]:
    ((name, items),) = parse_extension(header)
    assert name == "permessage-deflate"
    return dict(items)


def client_extension(offer: ClientPerMessageDeflateFactory, response: str) -> PerMessageDeflate:
    """The client's extension for *response*, as websockets' client validates and builds it."""
    ((_name, items),) = parse_extension(response)
    return offer.process_response_params(items, [])


def connected(
    offer: ClientPerMessageDeflateFactory | None = None,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    max_size: int | None = MIB,
) -> tuple[Protocol, Protocol]:
    """A server and a client Protocol, both OPEN, with permessage-deflate negotiated from *offer*."""
    offer = offer or ClientPerMessageDeflateFactory()  # client_max_window_bits, as browsers
    header, extensions = negotiate(
        build_extension([("permessage-deflate", offer.get_request_params())]),
        enabled=True,
        threshold=threshold,
        max_message_size=max_size,
    )
    assert header is not None
    server = Protocol(Side.SERVER, state=OPEN, max_size=max_size)
    server.extensions = extensions
    client = Protocol(Side.CLIENT, state=OPEN, max_size=None)
    client.extensions = [client_extension(offer, header)]
    return server, client


def parse_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """Parse server frames (unmasked): (first byte, RSV1, payload) per frame."""
    frames = []
    while data:
        first, second = data[0], data[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            (length,), offset = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            (length,), offset = struct.unpack("!Q", data[2:10]), 10
        frames.append((first, bool(first & 0x40), data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def server_frames(server: Protocol) -> list[tuple[int, bool, bytes]]:
    """The frames *server* wrote since the last call."""
    return parse_frames(b"".join(server.data_to_send()))


def deliver(sender: Protocol, receiver: Protocol) -> list[Frame]:
    receiver.receive_data(b"".join(sender.data_to_send()))
    return receiver.events_received()


# Negotiation


class TestNegotiate:
    def test_browser_offer(self):
        """Browsers' offer is accepted, both windows limited to 12 bits (4 KiB)."""
        header, extensions = negotiate(BROWSER_OFFER, enabled=True, threshold=128, max_message_size=MIB)
        assert params(header) == {
            "server_max_window_bits": str(SERVER_MAX_WINDOW_BITS),
            "client_max_window_bits": str(CLIENT_MAX_WINDOW_BITS),
        }
        (extension,) = extensions
        assert isinstance(extension, ServerPerMessageDeflate)
        assert extension.threshold == 128
        assert extension.local_max_window_bits == SERVER_MAX_WINDOW_BITS
        assert extension.remote_max_window_bits == CLIENT_MAX_WINDOW_BITS
        assert not extension.local_no_context_takeover
        assert not extension.remote_no_context_takeover

    def test_offer_without_client_window_leaves_it_to_the_client(self):
        """Without client_max_window_bits in the offer we may not limit the client's window."""
        header, (extension,) = negotiate(
            "permessage-deflate", enabled=True, threshold=0, max_message_size=None
        )
        assert params(header) == {"server_max_window_bits": str(SERVER_MAX_WINDOW_BITS)}
        assert extension.remote_max_window_bits == 15

    @pytest.mark.parametrize(
        "offer, expected, local, remote",
        [
            ("server_no_context_takeover", {"server_no_context_takeover": None}, (True, 12), (False, 15)),
            ("client_no_context_takeover", {"client_no_context_takeover": None}, (False, 12), (True, 15)),
            ("server_max_window_bits=10", {"server_max_window_bits": "10"}, (False, 10), (False, 15)),
            ("server_max_window_bits=15", {"server_max_window_bits": "12"}, (False, 12), (False, 15)),
            ("client_max_window_bits=9", {"client_max_window_bits": "9"}, (False, 12), (False, 9)),
            ("client_max_window_bits=15", {"client_max_window_bits": "12"}, (False, 12), (False, 12)),
            ('client_max_window_bits="10"', {"client_max_window_bits": "10"}, (False, 12), (False, 10)),
        ],
    )
    def test_offered_parameters(self, offer, expected, local, remote):
        """Each RFC 7692 parameter is honoured; windows never exceed ours (12 bits)."""
        header, (extension,) = negotiate(
            f"permessage-deflate; {offer}", enabled=True, threshold=128, max_message_size=MIB
        )
        answer = params(header)
        answer.setdefault("server_max_window_bits", "12")
        expected.setdefault("server_max_window_bits", "12")
        assert answer == expected
        assert (extension.local_no_context_takeover, extension.local_max_window_bits) == local
        assert (extension.remote_no_context_takeover, extension.remote_max_window_bits) == remote

    @pytest.mark.parametrize(
        "offer",
        [
            ClientPerMessageDeflateFactory(),
            ClientPerMessageDeflateFactory(client_max_window_bits=None),
            ClientPerMessageDeflateFactory(server_no_context_takeover=True),
            ClientPerMessageDeflateFactory(client_no_context_takeover=True),
            ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9),
            ClientPerMessageDeflateFactory(server_max_window_bits=15, client_max_window_bits=15),
            ClientPerMessageDeflateFactory(True, True, 11, 10),
        ],
    )
    def test_answer_is_accepted_by_a_conforming_client(self, offer):
        """websockets' client accepts every answer, and both ends agree on every parameter."""
        request = build_extension([("permessage-deflate", offer.get_request_params())])
        header, (server,) = negotiate(request, enabled=True, threshold=128, max_message_size=MIB)
        client = client_extension(offer, header)
        assert client.local_no_context_takeover == server.remote_no_context_takeover
        assert client.remote_no_context_takeover == server.local_no_context_takeover
        assert client.local_max_window_bits == server.remote_max_window_bits
        assert client.remote_max_window_bits == server.local_max_window_bits

    def test_first_acceptable_of_several_offers(self):
        """Of several offers the first acceptable one wins; the others are not answered."""
        header, extensions = negotiate(
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover, "
            "permessage-deflate; client_max_window_bits, permessage-deflate",
            enabled=True,
            threshold=128,
            max_message_size=MIB,
        )
        assert len(extensions) == 1
        assert header.count("permessage-deflate") == 1
        assert params(header) == {
            "server_no_context_takeover": None,
            "server_max_window_bits": "12",
            "client_max_window_bits": "10",
        }

    @pytest.mark.parametrize(
        "declined",
        [
            "permessage-deflate; x-unknown-parameter",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",  # needs a value in an offer
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=8",  # zlib cannot compress with 256 B
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",
        ],
    )
    def test_unsupported_offer_is_declined_and_the_next_tried(self, declined):
        """RFC 7692 §5: an offer with an unknown, invalid or duplicated parameter is declined."""
        assert negotiate(declined, enabled=True, threshold=128, max_message_size=MIB) == (None, [])
        header, extensions = negotiate(
            f"{declined}, permessage-deflate; client_no_context_takeover",
            enabled=True,
            threshold=128,
            max_message_size=MIB,
        )
        assert params(header) == {"client_no_context_takeover": None, "server_max_window_bits": "12"}
        assert extensions[0].remote_no_context_takeover

    @pytest.mark.parametrize(
        "header",
        ["", "   ", "x-webkit-deflate-frame", "deflate-frame; no_context_takeover", "permessage-foo"],
    )
    def test_not_offered(self, header):
        """No header, or only other extensions: no compression, nothing in the 101."""
        assert negotiate(header, enabled=True, threshold=128, max_message_size=MIB) == (None, [])

    def test_other_extensions_are_skipped(self):
        header, extensions = negotiate(
            "x-webkit-deflate-frame, permessage-deflate", enabled=True, threshold=128, max_message_size=MIB
        )
        assert header == "permessage-deflate; server_max_window_bits=12"
        assert len(extensions) == 1

    def test_disabled(self):
        """WEBSOCKET_COMPRESSION = False: the header is ignored, malformed or not, as before."""
        assert negotiate(BROWSER_OFFER, enabled=False, threshold=128, max_message_size=MIB) == (None, [])
        assert negotiate("permessage-deflate;;", enabled=False, threshold=128, max_message_size=MIB) == (
            None,
            [],
        )

    @pytest.mark.parametrize(
        "header",
        [
            ",",
            "permessage-deflate;",
            "permessage-deflate; client_max_window_bits=",
            'permessage-deflate; client_max_window_bits="10',
            "permessage-deflate client_max_window_bits",
            "permessage deflate",
            "permessage-deflate; =10",
            "permessage-deflate,,;",
            "permessage-déflate",
        ],
    )
    def test_malformed_header_is_400(self, header):
        """A header that does not parse refuses the handshake with 400, before the upgrade."""
        with pytest.raises(HandshakeError) as caught:
            negotiate(header, enabled=True, threshold=128, max_message_size=MIB)
        assert caught.value.status == 400
        assert "Sec-WebSocket-Extensions" in caught.value.message

    def test_bad_threshold(self):
        for threshold in (-1, 1.5, None, True):
            with pytest.raises(ValueError):
                negotiate(BROWSER_OFFER, enabled=True, threshold=threshold, max_message_size=MIB)


# What goes on the wire


class TestThreshold:
    def test_small_message_uncompressed_large_compressed(self):
        server, client = connected(threshold=128)
        small, large = b"x" * 127, b"x" * 128
        server.send_binary(small)
        server.send_text(large)
        [(first1, rsv1_small, payload_small), (first2, rsv1_large, payload_large)] = server_frames(server)
        assert (first1, rsv1_small, payload_small) == (0x82, False, small)
        assert first2 == 0x81 | 0x40 and rsv1_large
        assert len(payload_large) < len(large)
        assert zlib.decompressobj(wbits=-12).decompress(payload_large + b"\0\0\xff\xff") == large

    def test_small_frame_is_the_plain_frame(self):
        """Under the threshold, the protocol writes exactly the frame built without extensions."""
        server, _client = connected(threshold=200)
        for data in (b"", b"a", os.urandom(125), os.urandom(126), os.urandom(199)):
            server.send_binary(data)
            assert b"".join(server.data_to_send()) == frame_header(0x82, len(data)) + data
        assert plain_frame_limit(server.extensions) == 200

    def test_threshold_zero_compresses_everything(self):
        server, client = connected(threshold=0)
        server.send_text(b"")
        server.send_text(b"hi")
        assert [rsv1 for _first, rsv1, _payload in server_frames(server)] == [True, True]

    def test_compressor_allocated_on_first_compressed_message(self):
        """A socket that only sends small messages never pays for a zlib compressor (38 KiB)."""
        server, client = connected(threshold=128)
        (extension,) = server.extensions
        server.send_text(b"small")
        assert "encoder" not in vars(extension)
        server.send_text(TEXT)
        assert "encoder" in vars(extension)
        assert [bytes(f.data) for f in deliver(server, client)] == [b"small", TEXT]

    def test_context_takeover_survives_skipped_messages(self):
        """Uncompressed messages between compressed ones do not desync the two zlib contexts."""
        server, client = connected(threshold=64)
        noise = os.urandom(1000)  # incompressible, except as a back-reference to its first copy
        sent = [noise]
        for index in range(30):  # well under the 4 KiB window in all
            sent.append(TEXT[: 64 + index * 3] if index % 3 else f"tiny {index}".encode())
        sent.append(noise)
        for message in sent:
            server.send_binary(message)
        output = b"".join(server.data_to_send())
        frames = parse_frames(output)
        assert [rsv1 for _, rsv1, _ in frames] == [len(message) >= 64 for message in sent]
        client.receive_data(output)
        assert [bytes(f.data) for f in client.events_received()] == sent
        # Context takeover is in use: the second copy of the noise is a few bytes of back-reference.
        assert len(frames[0][2]) > 1000
        assert len(frames[-1][2]) < 20

    def test_fragmented_small_first_frame_sends_whole_message_uncompressed(self):
        server, client = connected(threshold=128)
        server.send_text(b"a" * 10, fin=False)
        server.send_continuation(b"b" * 1000, fin=False)
        server.send_continuation(b"c" * 1000, fin=True)
        server.send_text(TEXT)  # the next message is compressed again
        frames = server_frames(server)
        assert [(first, rsv1) for first, rsv1, _ in frames] == [
            (0x01, False),
            (0x00, False),
            (0x80, False),
            (0xC1, True),
        ]
        assert [payload for _, _, payload in frames[:3]] == [b"a" * 10, b"b" * 1000, b"c" * 1000]

    def test_fragmented_large_first_frame_sets_rsv1_on_first_frame_only(self):
        server, client = connected(threshold=128)
        parts = [TEXT[:3000], TEXT[3000:6000], TEXT[6000:]]
        server.send_binary(parts[0], fin=False)
        server.send_continuation(parts[1], fin=False)
        server.send_ping(b"between fragments")
        server.send_continuation(parts[2], fin=True)
        server.send_binary(b"small")
        output = b"".join(server.data_to_send())
        frames = parse_frames(output)
        assert [(first, rsv1) for first, rsv1, _ in frames] == [
            (0x42, True),
            (0x00, False),
            (0x89, False),
            (0x80, False),
            (0x82, False),
        ]
        assert frames[2][2] == b"between fragments"
        client.receive_data(output)
        received = client.events_received()
        data = [bytes(f.data) for f in received if f.opcode is not Opcode.PING]
        assert b"".join(data[:3]) == TEXT
        assert data[3] == b"small"

    @pytest.mark.parametrize(
        "offer",
        [
            ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
            ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9),
            ClientPerMessageDeflateFactory(client_max_window_bits=None),
        ],
    )
    def test_round_trip_both_ways(self, offer):
        """Messages of every size survive both directions, under every negotiated parameter set."""
        server, client = connected(offer, threshold=128)
        messages = [b"", b"x", TEXT[:127], TEXT[:128], TEXT, os.urandom(70000), TEXT * 10, TEXT[:50]]
        for message in messages:
            client.send_binary(message)
        assert [bytes(f.data) for f in deliver(client, server)] == messages
        for message in messages:
            server.send_binary(message)
        assert [bytes(f.data) for f in deliver(server, client)] == messages
        text = "é😀 unicode " * 500
        client.send_text(text.encode())
        (frame,) = deliver(client, server)
        assert frame.opcode is Opcode.TEXT and bytes(frame.data).decode() == text

    def test_control_frames_are_never_compressed(self):
        server, client = connected(threshold=0)
        server.send_ping(b"p" * 100)
        server.send_close(1000, "bye")
        assert [rsv1 for _, rsv1, _ in server_frames(server)] == [False, False]

    def test_plain_frame_limit(self):
        assert plain_frame_limit([]) == math.inf
        assert plain_frame_limit(connected(threshold=77)[0].extensions) == 77
        assert plain_frame_limit([PerMessageDeflate(False, False, 15, 15)]) == 0  # compresses all

    def test_plain_frames_of_any_size_keep_both_ends_in_sync(self):
        """Plain frames written around the extension (the fan-out's shared frames) are valid."""
        server, client = connected(threshold=128)
        assert allows_plain_frames(server.extensions)
        assert allows_plain_frames([])
        assert not allows_plain_frames([PerMessageDeflate(False, False, 15, 15)])
        wire = b""
        for index in range(20):
            if index % 2:
                wire += frame_header(0x82, len(TEXT)) + TEXT  # as a channel message's frame
            else:
                server.send_binary(TEXT[index:])
                wire += b"".join(server.data_to_send())
        client.receive_data(wire)
        assert [bytes(f.data) for f in client.events_received()] == [
            TEXT if index % 2 else TEXT[index:] for index in range(20)
        ]


# Decompression bombs


class TestDecompressedSizeLimit:
    def bomb(self, size: int, **offer) -> tuple[Protocol, bytes]:
        """A server (max_size 1 MiB) and the client's compressed frame of *size* zero bytes."""
        server, client = connected(ClientPerMessageDeflateFactory(**offer), max_size=MIB)
        client.send_binary(bytes(size))
        return server, b"".join(client.data_to_send())

    def test_tiny_frame_expanding_past_the_limit_closes_1009(self):
        server, wire = self.bomb(64 * MIB)
        assert len(wire) < 100_000  # 64 MiB of zeros compress ~1000:1
        tracemalloc.start()
        try:
            server.receive_data(wire)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(server.parser_exc, PayloadTooBig)
        assert server.close_sent.code == 1009
        assert server.events_received() == []
        assert peak < 8 * MIB, f"decompression was not stopped at the limit: {peak} bytes"

    def test_limit_is_on_the_whole_fragmented_message(self):
        """Fragments each under the limit but together over it: 1009 too."""
        server, client = connected(max_size=MIB)
        client.send_binary(bytes(700_000), fin=False)
        client.send_continuation(bytes(400_000), fin=True)
        server.receive_data(b"".join(client.data_to_send()))
        assert isinstance(server.parser_exc, PayloadTooBig)
        assert server.close_sent.code == 1009

    def test_message_of_exactly_the_limit_is_accepted(self):
        server, wire = self.bomb(MIB)
        server.receive_data(wire)
        (frame,) = server.events_received()
        assert len(frame.data) == MIB
        assert server.parser_exc is None

    def test_no_context_takeover_bomb(self):
        server, wire = self.bomb(8 * MIB, client_no_context_takeover=True)
        server.receive_data(wire)
        assert server.close_sent.code == 1009

    def test_extension_limit_applies_when_the_protocol_has_none(self):
        """max_message_size given to negotiate() caps decompression even if Protocol(max_size=None)."""
        _header, extensions = negotiate(BROWSER_OFFER, enabled=True, threshold=128, max_message_size=1000)
        server = Protocol(Side.SERVER, state=OPEN, max_size=None)
        server.extensions = extensions
        client = Protocol(Side.CLIENT, state=OPEN, max_size=None)
        client.extensions = [
            client_extension(
                ClientPerMessageDeflateFactory(), "permessage-deflate; client_max_window_bits=12"
            )
        ]
        client.send_binary(bytes(5000))
        server.receive_data(b"".join(client.data_to_send()))
        assert server.close_sent.code == 1009

    def test_corrupt_deflate_data_closes_1002(self):
        server, _client = connected()
        payload = b"\xff\xff\xff\xff garbage"
        header = bytes([0xC2, 0x80 | len(payload)]) + b"\0\0\0\0"  # RSV1, masked with a zero key
        server.receive_data(header + payload)
        assert server.close_sent.code == 1002

    def test_rsv1_without_compression_closes_1002(self):
        """Without the extension, RSV1 is a protocol error (RFC 6455 §5.2)."""
        server = Protocol(Side.SERVER, state=OPEN, max_size=MIB)
        server.receive_data(bytes([0xC2, 0x81]) + b"\0\0\0\0" + b"x")
        assert server.close_sent.code == 1002


# Through the connection and the handler


class Peer:
    """A client Protocol with permessage-deflate on the other end of a socket pair."""

    def __init__(self, sock, extension):
        self.sock = sock
        self.protocol = Protocol(Side.CLIENT, state=OPEN, max_size=None)
        self.protocol.extensions = [extension]
        self.raw = b""

    def send(self, method, *args):
        getattr(self.protocol, method)(*args)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def frames(self, count, timeout=3.0):
        events = []
        with gevent.Timeout(timeout):
            while len(events) < count:
                data = self.sock.recv(65536)
                self.raw += data
                if not data:
                    self.protocol.receive_eof()
                    break
                self.protocol.receive_data(data)
                events += self.protocol.events_received()
        return events


@pytest.fixture
def deflate_pair():
    offer = ClientPerMessageDeflateFactory()
    request = build_extension([("permessage-deflate", offer.get_request_params())])
    header, extensions = negotiate(request, enabled=True, threshold=128, max_message_size=MIB)
    server_sock, client_sock = gevent.socket.socketpair()
    rfile = server_sock.makefile("rb", -1)
    websocket = WebSocket(
        server_sock, rfile.read1, extensions=extensions, max_message_size=MIB, close_timeout=1
    )
    yield websocket, Peer(client_sock, client_extension(offer, header))
    server_sock.close()
    client_sock.close()


class TestConnection:
    def test_small_on_the_fast_path_large_compressed(self, deflate_pair):
        websocket, peer = deflate_pair
        websocket.send("small")
        websocket.send(TEXT.decode())
        frames = peer.frames(2)
        assert [bytes(f.data) for f in frames] == [b"small", TEXT]
        assert peer.raw.startswith(b"\x81\x05small")  # plain frame
        assert peer.raw[7] == 0xC1  # RSV1 + FIN + text
        assert len(peer.raw) < 7 + 200

    def test_receives_compressed_messages(self, deflate_pair):
        websocket, peer = deflate_pair
        peer.send("send_text", TEXT)
        peer.send("send_binary", b"tiny")
        assert websocket.receive() == TEXT.decode()
        assert websocket.receive() == b"tiny"

    def test_bomb_closes_1009(self, deflate_pair):
        websocket, peer = deflate_pair
        peer.send("send_binary", bytes(32 * MIB))
        with pytest.raises(ConnectionClosedError) as caught:
            websocket.receive()
        assert caught.value.code == 1009

    def test_channel_messages_keep_their_shared_frame(self, deflate_pair):
        """Channel messages go out as their shared, uncompressed frame, whatever their size."""
        websocket, peer = deflate_pair
        small, large = ChannelMessage("c", "hello"), ChannelMessage("c", TEXT.decode())
        websocket.send(small)
        websocket.send(large)
        assert websocket.send_frames_nowait(large.frame + small.frame) is True  # the hub's fan-out
        websocket.send(TEXT)  # compressed after plain frames: both zlib contexts still agree
        frames = peer.frames(5)
        assert [bytes(f.data) for f in frames] == [b"hello", TEXT, TEXT, b"hello", TEXT]
        plain = small.frame + large.frame + large.frame + small.frame
        assert peer.raw.startswith(plain)
        assert peer.raw[len(plain)] == 0xC2  # FIN + RSV1 + binary


@pytest.mark.django_db
class TestHandler:
    """The handler negotiates (or refuses) before the upgrade; websockets' client on the other end."""

    def connect(self, path, extensions_header, **settings):
        """Handshake through the real handler, offering *extensions_header*; return (connection, headers).

        As ``WebSocketClient.connect()``, with a client that speaks permessage-deflate.
        """
        with override_settings(**settings):
            server_end, client_end = gevent.socket.socketpair()
            server = pywsgi.WSGIServer(
                ("127.0.0.1", 0),
                WebSocketClient().application,
                handler_class=UpgradeHandler,
                log=None,
                environ={"SERVER_NAME": "testserver", "SERVER_PORT": "80", KEEP_DB_CONNECTIONS: True},
            )
            gevent.spawn(lambda: UpgradeHandler(server_end, ("127.0.0.1", 0), server).handle())
            protocol = ClientProtocol(
                parse_uri(f"ws://testserver{path}"), extensions=[ClientPerMessageDeflateFactory()]
            )
            request = protocol.connect()
            if extensions_header is None:
                del request.headers["Sec-WebSocket-Extensions"]
            else:
                request.headers["Sec-WebSocket-Extensions"] = extensions_header
            protocol.send_request(request)
            client_end.sendall(b"".join(protocol.data_to_send()))
            client_end.settimeout(5)
            events = []
            while not events:
                data = client_end.recv(65536)
                protocol.receive_data(data) if data else protocol.receive_eof()
                events = protocol.events_received()
                if not data:
                    break
            response = events[0]
            if protocol.handshake_exc is not None:
                raise HandshakeRejected(
                    response.status_code, dict(response.headers.raw_items()), response.body
                )
            return WebSocketTestConnection(client_end, protocol, response), response.headers

    def test_browser_offer_is_accepted_and_echo_works(self):
        connection, headers = self.connect("/echo/", BROWSER_OFFER)
        assert headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        )
        with connection:
            for message in ("hi", TEXT.decode(), os.urandom(5000), TEXT * 3):
                connection.send(message)
                assert connection.receive() == message

    def test_malformed_header_is_400_before_the_upgrade(self):
        with pytest.raises(HandshakeRejected) as caught:
            self.connect("/echo/", "permessage-deflate;")
        assert caught.value.status == 400

    def test_disabled(self):
        connection, headers = self.connect("/echo/", BROWSER_OFFER, WEBSOCKET_COMPRESSION=False)
        assert "Sec-WebSocket-Extensions" not in headers
        with connection:
            connection.send("hello")
            assert connection.receive() == "hello"

    def test_bomb_closes_1009(self):
        connection, _headers = self.connect("/echo/", BROWSER_OFFER, WEBSOCKET_MAX_MESSAGE_SIZE=MIB)
        connection.send(bytes(64 * MIB))
        with pytest.raises(ConnectionClosedError) as caught:
            connection.receive()
        assert caught.value.code == 1009
