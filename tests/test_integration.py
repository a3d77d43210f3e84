"""Integration: the documented gunicorn command with our worker, real clients over TCP.

``gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket``
on 127.0.0.1 port 0, with the tests' URLconf (test_project's demos plus scenario views).
"""

from __future__ import annotations

import socket

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def raw_request(server, request: str) -> bytes:
    """Send *request* verbatim; return everything the server answers until it closes or pauses."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request.encode("latin-1"))
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and _body_complete(answer):
                    break
        except TimeoutError:
            pass
    return answer


def _body_complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def handshake(path: str, *extra: str, version: str = "HTTP/1.1") -> str:
    lines = [
        f"GET {path} {version}",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def status_line(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode()


def test_echo_text_and_binary(server):
    """The echo view sends text back as text and binary as binary."""
    with connect(server.ws_url("/echo/")) as websocket:
        websocket.send("hello")
        assert websocket.recv() == "hello"
        websocket.send(b"\x00\x01\x02")
        assert websocket.recv() == b"\x00\x01\x02"


def test_ping_pong(server):
    """ping → pong, pong → ping, anything else: no reply."""
    with connect(server.ws_url("/ping/")) as websocket:
        websocket.send("hello")
        websocket.send("ping")
        assert websocket.recv() == "pong"
        websocket.send("pong")
        assert websocket.recv() == "ping"


@pytest.mark.parametrize(
    "request_text, status",
    [
        (handshake("/no-such-socket/", f"Sec-WebSocket-Key: {KEY}"), "404"),
        (handshake("/echo/", f"Sec-WebSocket-Key: {KEY}", "Origin: http://evil.example"), "403"),
        (handshake("/forbidden/", f"Sec-WebSocket-Key: {KEY}"), "403"),
        ("GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "426"),
        (handshake("/echo/", "Sec-WebSocket-Key: not-base64!"), "400"),
        (handshake("/echo/"), "400"),
        (handshake("/echo/", f"Sec-WebSocket-Key: {KEY}", f"Sec-WebSocket-Key: {KEY}"), "400"),
        (handshake("/echo/", f"Sec-WebSocket-Key: {KEY}", version="HTTP/1.0"), "400"),
        (handshake("/raise-before-accept/", f"Sec-WebSocket-Key: {KEY}"), "500"),
    ],
    ids=[
        "404",
        "403-origin",
        "403-permission",
        "426-plain-get",
        "400-bad-key",
        "400-no-key",
        "400-duplicate-key",
        "400-http10",
        "500-before-accept",
    ],
)
def test_refusals_are_plain_http(server, request_text, status):
    """Every refusal is an ordinary HTTP response with the right status and never a 101."""
    answer = raw_request(server, request_text)
    assert status_line(answer).split(" ")[1] == status, answer[:300]
    assert b"101" not in answer.split(b"\r\n", 1)[0]
    assert b"secret" not in answer


def test_426_and_version_errors_name_version_13(server):
    """A plain GET gets 426 + Sec-WebSocket-Version: 13; a bad version 400 with the same header."""
    plain = raw_request(server, "GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"Sec-WebSocket-Version: 13" in plain
    bad = raw_request(
        server,
        handshake("/echo/", f"Sec-WebSocket-Key: {KEY}").replace(
            "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"
        ),
    )
    assert status_line(bad).startswith("HTTP/1.1 400")
    assert b"Sec-WebSocket-Version: 13" in bad


def test_anonymous_whoami_is_refused_and_session_cookie_accepted(server, server_db):
    """login_required refuses an anonymous handshake (302); alice's session cookie gets "alice"."""
    # (Not websockets' client here: it follows the redirect.)
    answer = raw_request(server, handshake("/whoami/", f"Sec-WebSocket-Key: {KEY}"))
    assert status_line(answer).startswith("HTTP/1.1 302")
    assert b"Location: /accounts/login/?next=/whoami/" in answer
    cookie = f"sessionid={server_db['session']}"
    with connect(server.ws_url("/whoami/"), additional_headers={"Cookie": cookie}) as websocket:
        assert websocket.recv() == "alice"


def test_same_origin_is_accepted(server):
    """The page's own origin (an ALLOWED_HOSTS host) passes the Origin check."""
    with connect(server.ws_url("/echo/"), origin=f"http://127.0.0.1:{server.port}") as websocket:
        websocket.send("ok")
        assert websocket.recv() == "ok"


def test_oversized_message_closes_1009(server):
    """A message over WEBSOCKET_MAX_MESSAGE_SIZE (1 MiB) closes 1009; others are unaffected."""
    with connect(server.ws_url("/echo/"), max_size=None) as bystander:
        with connect(server.ws_url("/echo/"), max_size=None) as websocket:
            websocket.send(b"x" * (2**20 + 1))
            with pytest.raises(ConnectionClosedError) as caught:
                websocket.recv(timeout=5)
            assert caught.value.rcvd.code == 1009
        bystander.send("still here")
        assert bystander.recv(timeout=5) == "still here"


def test_server_close_code_and_reason_arrive_exactly(server):
    """close(4001, "custom reason") in a view arrives as 4001 "custom reason"."""
    with connect(server.ws_url("/close/")) as websocket:
        with pytest.raises(ConnectionClosedError) as caught:
            websocket.recv(timeout=5)
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4001, "custom reason")


def test_concurrent_senders_never_interleave(server):
    """Two greenlets sending 256 KiB and small frames at once: every frame arrives whole."""
    big = bytes(range(256)) * 1024
    with connect(server.ws_url("/concurrent/"), max_size=None) as websocket:
        websocket.send("go")
        received = []
        while (message := websocket.recv(timeout=10)) != "done":
            received.append(message)
    assert [m for m in received if isinstance(m, bytes)] == [big] * 20
    assert [m for m in received if isinstance(m, str)] == [f"small {i}" for i in range(500)]


def test_view_error_closes_1011_and_is_logged(server):
    """An exception after the accept closes 1011 with no details; the server log has them."""
    with connect(server.ws_url("/raise-after-accept/")) as websocket:
        websocket.send("go")
        with pytest.raises(ConnectionClosedError) as caught:
            websocket.recv(timeout=5)
    assert caught.value.rcvd.code == 1011
    assert "secret" not in caught.value.rcvd.reason
    server.wait_for_log("secret detail that must stay in the server log")


def test_garbage_after_handshake_harms_nobody_else(server):
    """A client sending an unmasked frame is closed 1002; a bystander keeps echoing."""
    with connect(server.ws_url("/echo/")) as bystander:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(handshake("/echo/", f"Sec-WebSocket-Key: {KEY}").encode())
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 101")
            sock.sendall(b"\x81\x05hello")  # unmasked: a protocol error from a client
            close = sock.recv(4096)
            assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1002
        bystander.send("fine")
        assert bystander.recv(timeout=5) == "fine"


def test_access_log_shows_handshake_statuses(server):
    """gunicorn's access log records 101, 403 and 404 per handshake."""
    with connect(server.ws_url("/echo/")):
        pass
    raw_request(server, handshake("/no-such-socket/", f"Sec-WebSocket-Key: {KEY}"))
    raw_request(server, handshake("/echo/", f"Sec-WebSocket-Key: {KEY}", "Origin: http://evil.example"))
    server.wait_for_log(r'"GET /echo/ HTTP/1.1" 101')
    server.wait_for_log(r'"GET /no-such-socket/ HTTP/1.1" 404')
    server.wait_for_log(r'"GET /echo/ HTTP/1.1" 403')
