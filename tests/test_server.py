"""django_websocket.server: what the upgrade hands over, and a frame sent with the handshake.

Unit tests run on a gevent socket pair; the last test sends a handshake and its first frame in
one write to a real gunicorn worker, so the frame sits in the HTTP parser's buffer when the
view starts reading.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import re
import socket as stdlib_socket
import time
from http import client

import gevent
import pytest
from django.test import override_settings
from gevent import pywsgi, socket
from gunicorn.workers.ggevent import PyWSGIHandler

from django_websocket.server import (
    DETACH_ENVIRON_KEY,
    NO_HEADERS,
    UPGRADE_ENVIRON_KEY,
    IndexedMessage,
    PackedHeaders,
    UpgradeHandler,
    buffered_bytes,
    connection_limit,
    direct_call,
    gunicorn_access_format,
    handshake_timeout,
    header_atoms,
    http_date,
    logged_headers,
    own_socket,
    python_call,
    read_headers,
    send_all,
    shared_keys,
    socket_reader,
)
from django_websocket.workers import GunicornUpgradeHandler
from tests.servers import gunicorn


def test_buffered_bytes_takes_what_the_parser_read_ahead_and_never_waits():
    server, client = socket.socketpair()
    rfile = server.makefile("rb")
    client.sendall(b"GET / HTTP/1.1\r\n\r\nframe bytes")
    assert rfile.readline() == b"GET / HTTP/1.1\r\n"
    assert rfile.readline() == b"\r\n"
    assert buffered_bytes(rfile, server) == b"frame bytes"
    assert buffered_bytes(rfile, server) == b""  # nothing more, and no wait for it
    assert server.gettimeout() is None  # the socket is left blocking, as it was


def test_socket_reader_without_a_leftover_is_the_socket_s_recv():
    server, client = socket.socketpair()
    assert socket_reader(server, b"") == server.recv
    server.close()
    client.close()


def test_socket_reader_serves_the_leftover_first_then_the_socket():
    server, client = socket.socketpair()
    read = socket_reader(server, b"abcdef")
    assert read(4) == b"abcd"
    assert read(4) == b"ef"
    client.sendall(b"from the socket")
    assert read(65536) == b"from the socket"
    client.close()
    assert read(65536) == b""


HEADER_BLOCKS = [
    b"Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"Host:a\nX-Empty:\nX-Blanks: \t  v  \t\nCookie: a=1\nCookie: b=2\n\n",
    b"Host: a\r\nX-Latin: caf\xe9 \x00\x7f\r\n\r\n",
    b"Host: a\r\nX-Folded: one\r\n  two\r\n\ttree\r\n\r\n",  # obsolete line folding
    b"  Leading: continuation first\r\nHost: a\r\n\r\n",
    b"Host: a\r\nNo colon here\r\nAfter: dropped by email\r\n\r\n",
    b"Host: a\r\nBad Name: space\r\nAfter: x\r\n\r\n",
    b"Host : a\r\n\r\n",
    b": empty name\r\nHost: a\r\n\r\n",
    b"From nobody\r\nHost: a\r\n\r\n",
    b"Host: a\r\nX-CR: one\rtwo\r\n\r\n",
    b"Host: a\r\nX-CRCR: v\r\r\n\r\n",
    b"Host: a\r\nX_Under: smuggled\r\n\r\n",
    b"Host: a\r\nX: \xff\xa0\x85 \r\n\r\n",
    b"Host: a\r\nNo-End: at eof",
    b"Host: a\r\n",
    b"",
    b"\r\n",
    b"Host: a\r\nX-Long: " + b"v" * 70000 + b"\r\n\r\n",
    b"".join(b"H%d: v\r\n" % i for i in range(120)) + b"\r\n",
    b"".join(b"H%d: v\r\n" % i for i in range(99)) + b"\r\n",
]


def parse(factory, block: bytes):
    """vars() of the message *factory* makes of *block* (or the exception), and what is left unread."""
    fp = io.BufferedReader(io.BytesIO(block + b"BODY"))
    try:
        message = factory(fp)
    except client.HTTPException as error:
        return type(error), str(error)
    state = dict(vars(message), defects=[(type(d), d.args) for d in message.defects])  # no __eq__
    return state, fp.read()


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_read_headers_makes_the_message_pywsgi_makes(block):
    assert parse(read_headers, block) == parse(pywsgi.headers_factory, block)


def test_read_headers_makes_the_message_pywsgi_makes_for_random_bytes():
    rng = random.Random(6455)
    alphabet = b"Aa-_:; \t\r\n\x00\x7f\xe9,=F"
    for _ in range(3000):
        block = bytes(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        assert parse(read_headers, block) == parse(pywsgi.headers_factory, block), block


def test_the_handler_reads_headers_with_read_headers():
    assert UpgradeHandler.MessageClass(None, io.BytesIO(b"Host: a\r\n\r\n"), 0).get("host") == "a"


def test_direct_call_binds_a_python_class_s_call_and_leaves_functions_alone():
    """An application instance becomes its bound ``__call__`` (called inline); a function stays."""

    class Base:
        def __call__(self, environ, start_response):
            return [environ["x"]]

    class App(Base):
        pass

    app = App()
    bound = direct_call(app)
    assert bound.__self__ is app and bound({"x": b"1"}, None) == [b"1"]

    def function(environ, start_response):
        return []

    assert direct_call(function) is function
    assert direct_call(print) is print
    assert python_call(App) is Base.__call__  # looked up once per class, not per request
    assert python_call(type(function)) is None


def test_packed_headers_give_back_the_pairs_they_were_given():
    """What the access log reads after the upgrade: str pairs via items(), bytes pairs by iterating."""
    request = [("Host", "h"), ("Cookie", "a=1; b=\x002"), ("Host", "dup")]
    assert PackedHeaders(request).items() == request
    response = [(b"Upgrade", b"websocket"), (b"Date", b"x")]
    assert list(PackedHeaders(response)) == response


def test_logged_headers_keep_the_named_ones_as_sent_repeats_included():
    """Names compared in lowercase; repeats and underscores kept; nothing named: one shared object."""
    request = [("Host", "h"), ("X-Id", "1"), ("x-id", "2"), ("X_Under", "u"), ("Cookie", "c")]
    assert logged_headers(request, frozenset({"x-id", "x_under"})).items() == request[1:4]
    assert logged_headers(request, None).items() == request
    assert logged_headers(request, frozenset()) is NO_HEADERS
    assert logged_headers(request, frozenset({"absent"})) is NO_HEADERS
    response = [(b"Upgrade", b"websocket"), (b"Date", b"x")]
    assert list(logged_headers(response, frozenset({"date"}))) == [(b"Date", b"x")]


def test_header_atoms_are_the_format_s_request_or_response_header_names():
    log_format = '%(h)s "%(r)s" %({X-Request-Id}i)s %({user_agent}i)s %({date}o)s %({PATH_INFO}e)s'
    assert header_atoms(log_format, "i") == {"x-request-id", "user_agent"}
    assert header_atoms(log_format, "o") == {"date"}
    assert header_atoms('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', "i") == frozenset()


def test_only_gunicorn_s_own_logger_gives_its_format():
    """A logger class that overrides access() or atoms() may read any header: no format then."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    class Atoms(Logger):
        def atoms(self, *args):
            return super().atoms(*args)

    config = Config()
    config.set("accesslog", None)
    assert gunicorn_access_format(Logger(config)) == config.access_log_format
    assert gunicorn_access_format(pywsgi.LoggingLogAdapter(Logger(config))) == config.access_log_format
    assert gunicorn_access_format(Atoms(config)) is None
    assert gunicorn_access_format(object()) is None


def test_shared_keys_make_equal_environs_share_their_key_strings():
    """The keys of two handshakes' environs are the same objects; the values are untouched."""
    first = shared_keys({"HTTP_" + "X_SHARED": "1", "PATH_INFO": "/a"})
    second = shared_keys({"HTTP_" + "X_SHARED": "2", "PATH_INFO": "/b"})
    assert first == {"HTTP_X_SHARED": "1", "PATH_INFO": "/a"}
    (key_one,) = (key for key in first if key.startswith("HTTP_"))
    (key_two,) = (key for key in second if key.startswith("HTTP_"))
    assert key_one is key_two


def test_shared_keys_leave_the_other_keys_and_every_value_as_they_were():
    environ = {"PATH_INFO": "/a", "wsgi.input": None, "HTTP_HOST": "h"}
    assert shared_keys(environ) is environ
    assert environ == {"PATH_INFO": "/a", "wsgi.input": None, "HTTP_HOST": "h"}


def bare_handler(sock) -> UpgradeHandler:
    """An UpgradeHandler on *sock* in the state pywsgi leaves before the application runs."""
    handler = object.__new__(UpgradeHandler)
    handler.socket = sock
    handler.request_version = "HTTP/1.1"
    handler.close_connection = True
    handler.headers_sent = handler.response_use_chunked = handler.connection_upgraded = False
    handler.status = handler.result = None
    handler.response_length = 0
    return handler


HEADERS_101 = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("X-Latin", "caf\xe9")]


def test_the_101_is_the_one_pywsgi_would_send_in_one_write():
    """The bytes of pywsgi's start_response() + write(b""), and the state its access line reads."""
    ours_server, ours_client = socket.socketpair()
    theirs_server, theirs_client = socket.socketpair()
    ours, theirs = bare_handler(ours_server), bare_handler(theirs_server)
    ours.send_switching_protocols(list(HEADERS_101))
    theirs.start_response("101 Switching Protocols", [*HEADERS_101, ("Date", http_date())])
    theirs.write(b"")
    sent, expected = ours_client.recv(4096), theirs_client.recv(4096)
    assert sent.startswith(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
    date = re.compile(rb"\r\nDate: [^\r\n]+ GMT\r\n\r\n$")
    assert date.search(sent) and date.search(expected)
    assert date.sub(b"", sent) == date.sub(b"", expected)
    for name in ("code", "status", "_orig_status", "headers_sent", "connection_upgraded", "close_connection"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.response_length == len(sent)
    # As str pairs, which gunicorn's %({name}o)s finds (pywsgi's bytes names it never matches).
    assert ours.response_headers[:3] == HEADERS_101 and ours.response_headers[3][0] == "Date"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (("X-Split", "a\r\nSet-Cookie: injected=1"), ValueError),
        (("X-Split", "a\nb"), ValueError),
        (("X-Split", "a\rb"), ValueError),
        (("X-Split\r\nInjected", "1"), ValueError),
        (("X-Wide", "\u2603"), UnicodeError),
        (("X-Bytes", b"value"), UnicodeError),
    ],
)
def test_a_101_header_that_would_split_the_response_is_refused_before_anything_is_sent(header, error):
    server, client = socket.socketpair()
    handler = bare_handler(server)
    with pytest.raises(error):
        handler.send_switching_protocols([("Upgrade", "websocket"), header])
    assert not handler.headers_sent and handler.response_length == 0
    client.settimeout(0.05)
    with pytest.raises(TimeoutError):
        client.recv(100)  # nothing went out


def test_own_socket_keeps_the_connection_and_its_family_on_a_new_object():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.settimeout(7.0)
    owned = own_socket(accepted)
    assert owned is not accepted and accepted.fileno() == -1
    assert (owned.family, owned.type, owned.gettimeout()) == (
        stdlib_socket.AF_INET,
        stdlib_socket.SOCK_STREAM,
        7.0,
    )
    client.sendall(b"still there")
    assert owned.recv(100) == b"still there"
    for sock in (owned, client, listener):
        sock.close()


def test_http_date_is_pywsgi_s_date_of_this_second():
    before = pywsgi.format_date_time(time.time())
    value = http_date().encode("latin-1")
    assert value in (before, pywsgi.format_date_time(time.time()))


def test_the_cached_settings_follow_settings_changes():
    with override_settings(WEBSOCKET_HANDSHAKE_TIMEOUT=3.5, WEBSOCKET_MAX_CONNECTIONS=7):
        assert (handshake_timeout(), connection_limit()) == (3.5, 7)
        assert (handshake_timeout(), connection_limit()) == (3.5, 7)  # from the cache
    with override_settings(WEBSOCKET_HANDSHAKE_TIMEOUT=None, WEBSOCKET_MAX_CONNECTIONS=2):
        assert (handshake_timeout(), connection_limit()) == (None, 2)


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def handshake_request(path: str = "/echo/", *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade"]
    lines += [*headers, f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "", ""]
    return "\r\n".join(lines).encode()


def read_until(sock: stdlib_socket.socket, marker: bytes, received: bytes = b"") -> bytes:
    """What *sock* sent, appended to *received*, up to the first chunk that brings *marker*."""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return received


def test_pywsgi_s_own_access_line_of_a_detached_connection_comes_when_it_ends():
    """Under pywsgi's own log: "GET … HTTP/1.1" 101 with the connection's duration, written once,
    after the detached function returned, with the handler itself long gone."""
    log = io.StringIO()
    served = []

    def application(environ, start_response):
        sock, read = environ[UPGRADE_ENVIRON_KEY]([("Upgrade", "websocket"), ("Connection", "Upgrade")])

        def run():
            served.append(read(100))
            sock.close()

        environ[DETACH_ENVIRON_KEY](run)
        return []

    server = pywsgi.WSGIServer(("127.0.0.1", 0), application, handler_class=UpgradeHandler, log=log)
    server.start()
    try:
        client = socket.create_connection(("127.0.0.1", server.server_port))
        client.sendall(b"GET /up?x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        assert client.recv(1000).startswith(b"HTTP/1.1 101 ")
        gevent.sleep(0.05)
        assert log.getvalue() == ""  # open: not logged yet
        client.sendall(b"bye")
        with gevent.Timeout(5):
            while "GET" not in log.getvalue():
                gevent.sleep(0.01)
        client.close()
    finally:
        server.stop()
    assert served == [b"bye"]
    (line,) = log.getvalue().splitlines()
    assert re.search(r'"GET /up\?x HTTP/1.1" 101 \d+ \d+\.\d{6}$', line), line


def test_a_frame_sent_with_the_handshake_is_not_lost(server_db):
    with gunicorn(env={"DJANGO_DB_PATH": server_db["path"]}) as server:
        with stdlib_socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(handshake_request() + masked_text(b"early"))
            received = read_until(sock, b"early")
        assert received.startswith(b"HTTP/1.1 101")
        assert received.endswith(b"\x81\x05early")


def test_a_detached_connection_is_logged_with_its_headers_when_it_ends(server_db):
    """The view runs in a greenlet of its own; the 101's access line (user agent too) comes at the end."""
    with gunicorn(env={"DJANGO_DB_PATH": server_db["path"]}) as server:
        with stdlib_socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                handshake_request("/echo/?detached", "User-Agent: detached-test/1") + masked_text(b"one")
            )
            received = read_until(sock, b"one")
            sock.sendall(masked_text(b"two"))  # still served after the request's greenlet ended
            read_until(sock, b"two", received)
            assert "/echo/?detached" not in server.log  # open: not logged yet
        assert server.wait_for_log(r'"GET /echo/\?detached HTTP/1.1" 101 .*detached-test/1')


ACCESS_FORMAT = '"%(r)s" %(s)s id=%({x-id}i)s under=%({x_under}i)s up=%({upgrade}o)s'


def test_the_access_line_of_a_websocket_prints_its_request_headers_as_sent(server_db):
    """Through gunicorn's access log: a header sent twice gives its last value, as for any
    request; a name with an underscore (which the environ lacks) is there; and a header of
    the 101 (``%({upgrade}o)s``) is printed."""
    headers = ("X-Id: first", "X-Id: last", "X_Under: under")
    with gunicorn(
        env={"DJANGO_DB_PATH": server_db["path"]}, extra_args=("--access-logformat", ACCESS_FORMAT)
    ) as server:
        with stdlib_socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(handshake_request("/echo/?headers", *headers) + masked_text(b"one"))
            read_until(sock, b"one")
        assert server.wait_for_log(
            r'(?m)"GET /echo/\?headers HTTP/1.1" 101 id=last under=under up=websocket$'
        )
        # The same headers on a request that does not upgrade: the same values.
        with stdlib_socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            lines = ["GET /?plain HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close", "", ""]
            sock.sendall("\r\n".join(lines).encode())
            read_until(sock, b"HTTP/1.1")
        # (Not its own response headers: pywsgi hands gunicorn bytes names, which it never matches.)
        assert server.wait_for_log(r'(?m)"GET /\?plain HTTP/1.1" \d+ id=last under=under up=\S+$')


#: Requests whose environ (and refusal) pywsgi's parsing and ours must make alike.
REQUESTS = [
    handshake_request(),
    handshake_request("/echo/?a=1&b=%C3%A9", "Origin: http://x", "Sec-WebSocket-Protocol: a, b"),
    b"GET /a%20b HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\nX-Same: 1\r\nx-same: 2\r\nX-SAME: 3\r\n"
    b"\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\ncookie: c=3\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX_Under: smuggled\r\nX-Under: kept\r\nContent_Type: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbody",
    b"POST / HTTP/1.1\r\nhost: h\r\ncontent-type: a/b\r\nCONTENT-LENGTH: 0\r\ncontent-length: 9\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: one\r\n  two\r\n\tthree\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nhOsT: h\r\nUPGRADE: WebSocket\r\ncOnNeCtIoN: keep-alive, Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.01\r\nHost: h\r\n\r\n",
    b"GET / HTTP/0.9\r\n\r\n",
    b"GET /old\r\n\r\n",
    b"GET / HTTP/1.1\nHost:h\nX-Empty:\nX-Blanks: \t v \t\nX-Nbsp: \xa0v\xa0\x85\n\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9 \x00\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: space\r\nAfter: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-CR: one\rtwo\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nNo-End: at eof",
    # Refused with a 400, alike:
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.x\r\nHost: h\r\n\r\n",
    b"GET / FTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"POST /old\r\n\r\n",
    b"GET\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: four\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(120)) + b"\r\n",
]


class StandInSocket:
    """What the handlers keep as their socket (gunicorn puts it in the environ), never used."""

    def __repr__(self) -> str:
        return "<socket>"


STAND_IN_SOCKET = StandInSocket()


def environ_of(handler_class: type, server, request: bytes):
    """What *handler_class* makes of *request*: the environ (less its objects) and the state
    pywsgi goes on with, or its refusal and the error line it logs."""
    handler = object.__new__(handler_class)  # no __init__: the reader is given, no socket
    handler.socket, handler.client_address, handler.server = STAND_IN_SOCKET, ("127.0.0.1", 4242), server
    handler.rfile = io.BufferedReader(io.BytesIO(request))
    handler.requestline = handler.read_requestline()
    server.error_log.seek(0)
    server.error_log.truncate()
    try:
        handler.read_request(handler.requestline)
    except Exception as error:  # as pywsgi's handle_one_request() sends it
        return handler._handle_client_error(error), server.error_log.getvalue()
    environ = handler.get_environ()
    stream = environ.pop("wsgi.input")
    state = [type(stream), *(getattr(stream, name, None) for name in ("content_length", "chunked_input"))]
    for key in ("wsgi.errors", UPGRADE_ENVIRON_KEY, DETACH_ENVIRON_KEY):
        environ.pop(key, None)
    return dict(environ), state, handler.content_length, handler.close_connection, handler.rfile.read()


def random_request(rng: random.Random) -> bytes:
    lines = [rng.choice([b"GET / HTTP/1.1", b"POST /p?q HTTP/1.0", b"GET /"])]
    pool = [
        b"Host: h", b"host: H2", b"Upgrade: websocket", b"Connection: Upgrade", b"connection: close",
        b"Cookie: a=1", b"COOKIE: b=2", b"X_Y: z", b"Content-Type: t", b"content-length: 2",
        b"Transfer-Encoding: chunked", b"X-A:", b"X-A: \t\xa01 ", b" folded", b"Accept: */*",
    ]  # fmt: skip
    lines += [rng.choice(pool) for _ in range(rng.randrange(8))]
    return b"\r\n".join([*lines, b"", b"ab"])


@pytest.fixture(scope="module")
def wsgi_server():
    return pywsgi.WSGIServer(("127.0.0.1", 0), None, error_log=io.StringIO())


HANDLER_PAIRS = [(pywsgi.WSGIHandler, UpgradeHandler), (PyWSGIHandler, GunicornUpgradeHandler)]


@pytest.mark.parametrize(("theirs", "ours"), HANDLER_PAIRS)
@pytest.mark.parametrize("request_bytes", REQUESTS)
def test_the_environ_is_the_one_pywsgi_and_gunicorn_make(wsgi_server, theirs, ours, request_bytes):
    """The same environ, connection state and unread body; or the same 400 and error line."""
    expected = environ_of(theirs, wsgi_server, request_bytes)
    assert environ_of(ours, wsgi_server, request_bytes) == expected


def test_the_environ_is_the_one_pywsgi_makes_for_random_requests(wsgi_server):
    rng = random.Random(2616)
    for _ in range(1500):
        request = random_request(rng)
        assert environ_of(UpgradeHandler, wsgi_server, request) == (
            environ_of(pywsgi.WSGIHandler, wsgi_server, request)
        ), request


def test_a_handshake_environ_holds_shared_key_strings(wsgi_server):
    """Header names read anew from each request's bytes (any casing) give the same key objects."""
    keys = []
    for name in ("X-Shared-Test", "x-shared-test"):
        request = handshake_request("/", f"{name}: v").decode().encode()  # bytes of their own
        environ = environ_of(UpgradeHandler, wsgi_server, request)[0]
        keys.append({key: key for key in environ})
    assert keys[0].keys() == keys[1].keys()
    assert all(keys[0][key] is keys[1][key] for key in keys[0])


def test_the_parsed_message_answers_get_as_email_does_until_changed():
    """Its get() is email's (first value, any case, failobj), also after each kind of change."""
    block = b"Host: a\r\nX-Rep: 1\r\nx-rep: 2\r\nContent-Length: 3\r\n\r\n"
    ours, theirs = read_headers(io.BytesIO(block)), pywsgi.headers_factory(io.BytesIO(block))
    assert type(ours) is IndexedMessage and ours.as_parsed() is not None

    def same() -> None:
        for name in ("host", "X-REP", "content-length", "missing", "x-new"):
            assert ours.get(name) == theirs.get(name)
            assert ours.get(name, "no") == theirs.get(name, "no")
            assert ours.getheader(name) == theirs.getheader(name)
            assert ours[name] == theirs[name]
        assert ours.typeheader == theirs.typeheader

    same()
    for change in (
        lambda message: message.replace_header("x-rep", "3"),
        lambda message: message.__delitem__("content-length"),
        lambda message: message.__setitem__("X-New", "n"),
        lambda message: message.add_header("Host", "b"),
        lambda message: message.set_raw("X-Raw", "r"),
        lambda message: message._headers.__setitem__(0, ("X-New", "first")),
        lambda message: setattr(message, "_headers", [("Host", "c")]),
    ):
        change(ours)
        change(theirs)
        assert ours.as_parsed() is None
        same()


def test_headers_not_in_within_the_handshake_timeout_close_the_connection_quietly(caplog):
    """Headers still missing at WEBSOCKET_HANDSHAKE_TIMEOUT: the connection is closed then, with one
    info line and no traceback; a request whose headers came in time is answered however slowly,
    and the next request on its connection gets the whole time again."""
    errors = io.StringIO()

    def application(environ, start_response):
        gevent.sleep(0.4)  # longer than the timeout: the application has no such limit
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = pywsgi.WSGIServer(
        ("127.0.0.1", 0), application, handler_class=UpgradeHandler, log=None, error_log=errors
    )
    server.start()
    caplog.set_level(logging.INFO, logger="django_websocket")
    try:
        with override_settings(WEBSOCKET_HANDSHAKE_TIMEOUT=0.25), gevent.Timeout(10):
            slow = socket.create_connection(("127.0.0.1", server.server_port))
            started = time.monotonic()
            slow.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
            assert slow.recv(100) == b""
            assert time.monotonic() - started >= 0.25
            kept = socket.create_connection(("127.0.0.1", server.server_port))
            for _ in range(2):
                kept.sendall(b"GET / HTTP/1.1\r\n")
                gevent.sleep(0.15)
                kept.sendall(b"Host: h\r\n\r\n")  # 0.15 s for this request's headers each time
                assert read_until(kept, b"\r\n\r\nok").startswith(b"HTTP/1.1 200 OK")
            kept.close()
            slow.close()
    finally:
        server.stop()
    assert "no complete request headers in time" in caplog.text
    assert "HeadersTimeout" not in errors.getvalue()


class KeepingServer:
    """A server that leaves sockets open on request, as ``workers.WorkerServer`` does."""

    def __init__(self):
        self.kept = []

    def keep_open(self, sock):
        self.kept.append(sock)
        return True


def handler_on_a_socket(server):
    """An UpgradeHandler of *server* (just what connection_socket() reads) on one end of a pair."""
    server_sock, client_sock = socket.socketpair()
    handler = UpgradeHandler.__new__(UpgradeHandler)
    handler.server, handler.socket = server, server_sock
    return handler, client_sock


def test_the_connection_keeps_the_accepted_socket_when_the_server_leaves_it_open():
    handler, client_sock = handler_on_a_socket(KeepingServer())
    accepted = handler.socket
    assert handler.connection_socket() is accepted and handler.server.kept == [accepted]
    for sock in (accepted, client_sock):
        sock.close()


def test_a_socket_something_else_still_reads_gets_an_object_of_its_own():
    """A makefile() reference would make the connection's close() leave the descriptor open."""
    handler, client_sock = handler_on_a_socket(KeepingServer())
    reader = handler.socket.makefile("rb")
    owned = handler.connection_socket()
    assert owned is not handler.socket and handler.server.kept == []
    client_sock.sendall(b"x")
    assert owned.recv(1) == b"x"
    reader.close()
    for sock in (owned, client_sock):
        sock.close()


def test_without_a_keep_open_hook_the_connection_gets_an_object_of_its_own():
    handler, client_sock = handler_on_a_socket(object())
    accepted = handler.socket
    owned = handler.connection_socket()
    assert owned is not accepted and accepted.fileno() == -1 and owned.fileno() != -1
    for sock in (owned, client_sock):
        sock.close()


class PartialSocket:
    """Takes *taken* bytes per send(); records what sendall() got."""

    def __init__(self, taken):
        self.taken, self.sent, self.all = taken, [], []

    def send(self, data):
        self.sent.append(bytes(data[: self.taken]))
        return min(self.taken, len(data))

    def sendall(self, data):
        self.all.append(bytes(data))


def test_send_all_sends_once_and_the_rest_through_sendall():
    whole = PartialSocket(100)
    send_all(whole, b"HTTP/1.1 101")
    assert (whole.sent, whole.all) == ([b"HTTP/1.1 101"], [])
    partial = PartialSocket(4)
    send_all(partial, b"HTTP/1.1 101")
    assert (partial.sent, partial.all) == ([b"HTTP"], [b"/1.1 101"])
