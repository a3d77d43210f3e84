"""Step 0 of a connection: the gevent WSGI server side of the upgrade.

:class:`UpgradeHandler` is a ``gevent.pywsgi`` request handler that lets the WSGI
application — not the server — decide whether to switch protocols. It puts a
callable under :data:`UPGRADE_ENVIRON_KEY` in the environ; the application calls
it only after Django has accepted the handshake, and gets the raw connection back.
Every other request is served exactly as ``pywsgi`` serves it.
"""

from __future__ import annotations

import contextvars
import email.parser
import functools
import inspect
import io
import logging
import marshal
import re
import socket
import time
import types
from collections.abc import Callable
from email.policy import compat32
from http import client
from typing import Any

import gevent
from gevent import pywsgi
from gevent import socket as gevent_socket

logger = logging.getLogger("django_websocket")

#: environ key of the upgrade callable: ``upgrade(headers) -> (socket, read)``.
UPGRADE_ENVIRON_KEY = "django_websocket.upgrade"

#: environ key of ``detach(function, *args)``, callable after the upgrade (see
#: :meth:`UpgradeHandler.detach_connection`).
DETACH_ENVIRON_KEY = "django_websocket.detach"

Upgrade = Callable[[list[tuple[str, str]]], tuple[socket.socket, Callable[[int], bytes]]]


class HeadersTimeout(gevent.Timeout):
    """The client took longer than ``WEBSOCKET_HANDSHAKE_TIMEOUT`` to send its request headers."""


#: One request header as nearly every client sends it: a token name, a colon, a value without CR or
#: LF, the line's end. Group 2 is the value as the ``email`` parser keeps it (leading blanks dropped).
SIMPLE_HEADER = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*)(?:\r?\n)?\Z")
#: ``http.client._read_headers`` takes the header limit as an argument from Python 3.14 on.
_READ_HEADERS_ARGS = (
    (client._MAXHEADERS,) if len(inspect.signature(client._read_headers).parameters) > 1 else ()
)


def read_headers(fp) -> pywsgi.OldMessage:
    """``pywsgi.headers_factory(fp)``: the same message for the same bytes, usually without ``email``.

    The lines are read by ``http.client`` itself, so the limits are the standard library's (a line
    over 64 KiB: ``status`` "Line too long", so a 400; too many headers: ``HTTPException``, so a 400).
    When every line is a plain ``Name: value`` the message is built here; anything else (folded
    lines, a name with a space or a colon, a stray CR, a line that ends the headers early in the
    ``email`` parser's eyes) goes through the ``email`` parser as gevent does, quirks included.
    """
    try:
        lines = client._read_headers(fp, *_READ_HEADERS_ARGS)
    except client.LineTooLong:
        message = pywsgi.OldMessage()
        message.status = "Line too long"
        return message
    headers = []
    match = SIMPLE_HEADER.match
    for line in lines:
        if line in (b"\r\n", b"\n", b""):
            break
        found = match(line.decode("latin-1"))
        if found is None:
            # What http.client.parse_headers does with the lines (in every Python from 3.10).
            return email.parser.Parser(_class=pywsgi.OldMessage).parsestr(
                b"".join(lines).decode("iso-8859-1")
            )
        headers.append(found.groups())
    return IndexedMessage.of(headers)


class IndexedMessage(pywsgi.OldMessage):
    """A ``pywsgi.OldMessage`` whose ``get()`` is a dict lookup while its headers are as parsed.

    ``get()`` (so ``getheader()``, ``typeheader`` and ``message[name]``) returns exactly what
    ``email.message.Message.get`` returns: the first value of that name, any case, else *failobj*.
    pywsgi asks for five or six headers per request, each a scan lowering every name. The index
    serves only while the header list equals the one it was built from (a comparison of the same
    tuples, in C) and the policy is still ``compat32``: after any change (``del message[name]``,
    ``replace_header()``, ``_headers`` edited or replaced) ``get()`` is the ``email`` one again.
    """

    # Slots, not __dict__ entries: vars() of the message stays what pywsgi's parser makes.
    __slots__ = ("_index", "_indexed")

    @classmethod
    def of(cls, headers: list[tuple[str, str]]) -> IndexedMessage:
        """The message of *headers*, ``(name, value)`` pairs as read (values without surrogates)."""
        message = cls()
        message._headers = headers
        message._payload = ""  # as the email parser leaves it: no body after the headers
        message._indexed = headers[:]
        # Reversed: the first of repeated headers is the one that stays, as get() finds it.
        message._index = {name.lower(): value for name, value in reversed(headers)}
        return message

    def as_parsed(self) -> list[tuple[str, str]] | None:
        """The ``(name, value)`` pairs when they are still those :func:`read_headers` made, else ``None``."""
        headers = self._headers
        return headers if headers == self._indexed and self.policy is compat32 else None

    def get(self, name, failobj=None):  # type: ignore[no-untyped-def]  # email's signature
        # compat32's header_fetch_parse() returns a str without surrogates as it is: the index's.
        if self.as_parsed() is not None:
            return self._index.get(name.lower(), failobj)
        return super().get(name, failobj)


_date = (0, "")


def http_date() -> str:
    """``Date`` header value for now, formatted once per second (pywsgi formats it per response)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, pywsgi.format_date_time(now).decode("latin-1"))
    return _date[1]


#: Request versions ``_check_http_version()`` accepts without pywsgi's parse (it accepts them too).
HTTP_VERSIONS = ("HTTP/1.1", "HTTP/1.0")

SWITCHING_PROTOCOLS = "101 Switching Protocols"
SWITCHING_PROTOCOLS_STATUS = SWITCHING_PROTOCOLS.encode("latin-1")
SWITCHING_PROTOCOLS_LINE = f"HTTP/1.1 {SWITCHING_PROTOCOLS}\r\n"


class UpgradeHandler(pywsgi.WSGIHandler):
    """A pywsgi handler whose applications can take over the connection after a 101.

    A client gets ``WEBSOCKET_HANDSHAKE_TIMEOUT`` seconds to send each request line and
    its headers, in total, however slowly it trickles them; then the connection is
    closed, so such clients cannot hold the worker's connection slots.
    """

    _headers_timer: Any = None  # the loop's timer of this request's headers, while it runs
    _headers_late: HeadersTimeout | None = None  # what it threw, when it fired

    def MessageClass(self, fp, *args):  # type: ignore[no-untyped-def]  # noqa: N802 - pywsgi's name
        return read_headers(fp)

    def handle_one_request(self):  # type: ignore[no-untyped-def]
        seconds = handshake_timeout()
        timer = None
        if seconds is not None:
            # The loop's timer that gevent.Timeout.start_new() would make and start (same
            # priority, the loop's time updated first, so never early), without the Timeout
            # around it: 0.75 µs instead of 3.4 here. The exception is made only if it fires.
            timer = self._headers_timer = gevent.get_hub().loop.timer(seconds, ref=True, priority=-1)
            timer.start(self.headers_too_late, gevent.getcurrent(), update=True)
        try:
            return super().handle_one_request()
        except HeadersTimeout as timeout:
            if timeout is not self._headers_late:
                raise
            logger.info(
                "closed a connection from %s: no complete request headers in time", self.client_address
            )
            return None
        finally:
            if timer is not None:
                timer.close()

    def headers_too_late(self, greenlet: gevent.Greenlet) -> None:
        """In the loop, when the headers timer fires: throw :class:`HeadersTimeout` into *greenlet*."""
        self._headers_late = HeadersTimeout()
        greenlet.throw(self._headers_late)

    def run_application(self) -> None:
        self.application = direct_call(self.application)
        super().run_application()

    def _check_http_version(self) -> bool:
        # What nearly every request says, answered without pywsgi's parse of the version.
        return self.request_version in HTTP_VERSIONS or super()._check_http_version()

    def _headers(self):  # type: ignore[no-untyped-def]  # pywsgi's: (environ key, value) pairs
        pairs = self.headers.as_parsed() if type(self.headers) is IndexedMessage else None
        return super()._headers() if pairs is None else environ_headers(pairs)

    def get_environ(self) -> dict:
        if self._headers_timer is not None:
            self._headers_timer.close()  # the headers are in: the application has no such limit
        environ = super().get_environ()
        # It may live as long as a websocket (request.META): its keys must be shared strings,
        # which environ_headers() gave it already when _headers() used it.
        if "HTTP_UPGRADE" in environ and not (
            type(self.headers) is IndexedMessage and self.headers.as_parsed() is not None
        ):
            environ = shared_keys(environ)
        environ[UPGRADE_ENVIRON_KEY] = self.upgrade_connection
        environ[DETACH_ENVIRON_KEY] = self.detach_connection
        return environ

    def log_request(self) -> None:
        if self.connection_upgraded and self.socket is None:
            return  # detached (see detach_connection()): its line is written when it ends
        super().log_request()

    def upgrade_connection(
        self, headers: list[tuple[str, str]]
    ) -> tuple[socket.socket, Callable[[int], bytes]]:
        """Send ``101 Switching Protocols`` with *headers*; hand the connection to the caller.

        Returns ``(socket, read)``: ``read(n)`` returns up to *n* bytes, starting with
        any the HTTP parser had already buffered. After this call the server writes
        nothing more on the connection and closes it when the application returns;
        the access log records status 101 and the connection's duration.
        """
        self.close_connection = True
        self.send_switching_protocols(headers)
        self.environ.pop(UPGRADE_ENVIRON_KEY, None)  # once only; the environ stays with the request
        # The connection may stay open for days: of the request's headers and the 101's, only
        # those the access line prints are kept, packed in one block (not in ~40 small objects);
        # without an access log, none.
        if self.logs_access():
            request_names, response_names = self.logged_header_names()
            self.headers = logged_headers(self.headers.items(), request_names)
            self.response_headers = logged_headers(self.response_headers, response_names)
        else:
            self.headers = self.response_headers = ()
        leftover = buffered_bytes(self.rfile, self.socket)
        # From here the connection is read through the returned reader only: let the request's
        # buffered reader and its 8 KiB buffer go now, not when the socket closes (and its hold
        # on the socket with it, unless the application keeps it: environ["wsgi.input"]).
        self.rfile = self.wsgi_input.rfile = io.BytesIO()
        if type(self.socket) is gevent_socket.socket:  # not TLS: its state cannot move
            # gevent's server closes the socket it gave this handler when the request's greenlet
            # ends, which detach_connection() allows: the connection needs one it closes itself.
            sock = self.connection_socket()
            if sock is not self.socket and "gunicorn.sock" in self.environ:
                self.environ["gunicorn.sock"] = sock
            self.socket = sock
        return self.socket, socket_reader(self.socket, leftover)

    def connection_socket(self) -> socket.socket:
        """The socket object the upgraded connection goes on with, left open when the request ends.

        This handler's own when the server leaves it open on request (``keep_open(sock)``
        returns true, as ``workers.WorkerServer``'s does) and no ``makefile()`` object holds it
        any more (the request's reader, while the application keeps ``environ["wsgi.input"]``,
        as ``handler.py`` does not): such a hold would make the connection's ``close()`` keep the
        descriptor open. Otherwise a new object for its descriptor (:func:`own_socket`: four
        system calls and two event-loop watchers more). Only for a plain gevent socket.
        """
        keep_open = getattr(self.server, "keep_open", None)
        # _io_refs: the count of makefile() objects, in gevent's socket as in the standard library's.
        if keep_open is not None and getattr(self.socket, "_io_refs", None) == 0 and keep_open(self.socket):
            return self.socket
        return own_socket(self.socket)

    def send_switching_protocols(self, headers: list[tuple[str, str]]) -> None:
        """Send the 101 with *headers* and a ``Date``, leaving the state pywsgi's own 101 would.

        What ``start_response("101 …", headers)`` then ``write(b"")`` do, in one pass and one
        ``sendall``: a name or value with CR or LF raises ``ValueError``, one outside latin-1
        ``UnicodeError``, before anything is sent. The status, code, length and headers are
        set for the access line; the headers are kept as ``str`` pairs, so gunicorn's
        ``%({name}o)s`` finds them (pywsgi keeps ``bytes`` names, which it never matches).
        """
        headers = [*headers, ("Date", http_date())]
        lines = [SWITCHING_PROTOCOLS_LINE]
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise UnicodeError("The header must be a native string", name, value)
            line = f"{name}: {value}\r\n"
            if line.count("\r") != 1 or "\n" in line[:-1]:
                raise ValueError("carriage return or newline in header", name, value)
            lines.append(line)
        lines.append("\r\n")
        try:
            data = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as error:
            raise UnicodeError("Non-latin1 header", error.object[error.start : error.end]) from None
        self.status, self._orig_status, self.code = SWITCHING_PROTOCOLS_STATUS, SWITCHING_PROTOCOLS, 101
        self.response_headers = headers
        self.provided_date, self.provided_content_length = headers[-1][1], None
        self.headers_sent = self.connection_upgraded = True
        try:
            send_all(self.socket, data)
        except OSError as error:
            self.status, self.code = f"socket error: {error}", -101  # as pywsgi logs a failed write
            raise
        self.response_length += len(data)

    def logs_access(self) -> bool:
        """Whether this server may write access lines (pywsgi's always has a log, if a no-op one)."""
        return True

    def logged_header_names(self) -> tuple[frozenset[str] | None, frozenset[str] | None]:
        """Lowercase names of the request headers and of the 101's that the access line may print.

        gunicorn's own logger prints those its ``access_log_format`` names (``%({name}i)s``,
        ``%({name}o)s``); ``None`` (any header) for another logger, which may read them all.
        """
        log_format = gunicorn_access_format(getattr(self.server, "log", None))
        if log_format is None:
            return None, None
        return header_atoms(log_format, "i"), header_atoms(log_format, "o")

    def detach_connection(self, function: Callable[..., Any], *args: Any) -> None:
        """After the upgrade: run ``function(*args)`` in another greenlet, which owns the connection.

        Returns at once, and the application should return (an empty response) so that this
        request's greenlet is done. While a greenlet waits, the C stack between its start and
        its wait is saved with it: this one's runs through pywsgi, the application and the
        middleware, the other one's starts at *function* (about 4 KiB less per idle socket).
        The other greenlet takes this one's place in the server's pool (``--worker-connections``
        and a graceful stop count it) and a copy of its context variables (the URLconf, the
        active language…). It is a new greenlet; or, when the pool has ``hand_over(current,
        function, args, context, at_end)`` (``runners.ReusingPool``), one of the pool's that
        waits for a job. *function* must close the socket (the handler's websocket does, as its
        view ends); when it returns, and the server writes an access log, the socket is closed
        again if need be and the 101 line is written, with the connection's duration. On a
        connection without a socket object of its own (TLS), *function* runs here, before this
        returns.
        """
        if type(self.socket) is not gevent_socket.socket or not self.connection_upgraded:
            function(*args)  # TLS (see upgrade_connection()), or detached already
            return
        self.environ.pop(DETACH_ENVIRON_KEY, None)
        context = contextvars.copy_context()
        # What the line needs, not this handler (0.3 KiB, and all pywsgi hung on it). Without an
        # access log nothing is kept for the end: *function* closes the socket (the websocket's
        # close() does).
        line = AccessLine(self) if self.logs_access() else None
        self.socket = None  # pywsgi's handle() ends without closing anything nor logging
        pool = getattr(self.server, "pool", None)
        current = gevent.getcurrent()
        hand_over = getattr(pool, "hand_over", None)  # a pool whose greenlets serve one job after another
        if hand_over is not None and current in pool:
            hand_over(current, function, args, context, line)
            return
        # function itself is the greenlet's run, not a wrapper calling function(*args): one
        # Python frame fewer (~0.2 KiB) saved with every waiting greenlet.
        connection = ConnectionGreenlet(function, *args)
        connection.gr_context = context
        if pool is not None and current in pool:
            pool.discard(current)  # frees its slot for the new greenlet
            pool.add(connection)
        if line is not None:
            connection.link(line)
        connection.start()


class AccessLine:
    """A detached connection's access line, written when its greenlet ends (``greenlet.link(line)``).

    Keeps what pywsgi's and gunicorn's ``log_request()`` read (the request line, status, length,
    start time, the client, the environ and the headers :meth:`UpgradeHandler.upgrade_connection`
    kept), about 0.1 KiB, instead of the handler; at the end it closes the socket again if need
    be, and a handler of the same class, given those attributes back, writes the line.
    """

    __slots__ = (
        "handler_class", "server", "environ", "client_address", "requestline", "status",
        "response_length", "time_start", "headers", "response_headers", "socket",
    )  # fmt: skip

    def __init__(self, handler: UpgradeHandler) -> None:
        self.handler_class = type(handler)
        for name in self.__slots__[1:]:
            setattr(self, name, getattr(handler, name))
        if handler._orig_status:  # the status line as text, as pywsgi's own line prints it
            self.status = handler._orig_status

    def __call__(self, connection: gevent.Greenlet) -> None:
        try:
            self.socket.close()
        finally:
            handler = object.__new__(self.handler_class)
            for name in self.__slots__[1:]:
                setattr(handler, name, getattr(self, name))
            handler._orig_status = self.status
            handler.connection_upgraded = True
            handler.time_finish = time.time()
            handler.log_request()


#: One string per WSGI environ key for every handshake's environ: pywsgi builds each ``HTTP_…``
#: key anew per request, and a handshake's environ lives as long as its websocket (request.META).
_environ_keys: dict[str, str] = {}
#: Distinct keys shared at most (clients choose header names): past it, new ones are not kept.
ENVIRON_KEYS_MAX = 512


def shared_key(key: str) -> str:
    """The string shared between environs equal to *key*; *key* itself when there is none and no room."""
    keys = _environ_keys
    return (keys.setdefault if len(keys) < ENVIRON_KEYS_MAX else keys.get)(key, key)


def shared_keys(environ: dict) -> dict:
    """*environ*, its ``HTTP_…`` keys replaced by equal strings shared between environs; returned.

    Only those: pywsgi and gunicorn write every other key from a constant or copy it from the
    server's base environ, so those strings are shared already. For headers parsed by the
    ``email`` parser; :func:`environ_headers` gives the others' keys shared from the start.
    """
    for key in [key for key in environ if key.startswith("HTTP_")]:
        kept = shared_key(key)
        if kept is not key:  # an equal key replaces nothing in a dict: take this one out first
            environ[kept] = environ.pop(key)
    return environ


#: Header name as sent -> its environ key (a :func:`shared_key`), or ``None`` for a header pywsgi
#: leaves out of the environ. At most ``ENVIRON_KEYS_MAX`` names (clients choose them, casing
#: included): past it, new names are looked up anew per request.
_header_keys: dict[str, str | None] = {}


def environ_key(name: str) -> str | None:
    """The environ key of header *name*, as pywsgi's ``WSGIHandler._headers()`` makes it, shared.

    ``None`` for a name with ``_`` (pywsgi drops them: ``X_Id`` must not pose as ``X-Id``) and
    for ``Content-Type`` / ``Content-Length`` (``CONTENT_TYPE`` / ``CONTENT_LENGTH``, set apart).
    """
    try:
        return _header_keys[name]
    except KeyError:
        pass
    key: str | None = name.replace("-", "_").upper()
    if "_" in name or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = None
    else:
        key = shared_key("HTTP_" + key)
    if len(_header_keys) < ENVIRON_KEYS_MAX:
        _header_keys[name] = key
    return key


def environ_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What pywsgi's ``WSGIHandler._headers()`` yields for :func:`read_headers`' *pairs*, keys shared.

    ``(HTTP_NAME, value)`` per header in order, repeats included (``get_environ()`` joins them),
    values stripped as pywsgi strips its ``"Name: value\r\n"`` lines. Only for pairs as
    :data:`SIMPLE_HEADER` reads them: a name without ``:`` or blanks, a value without CR or LF.
    """
    found = []
    for name, value in pairs:
        key = environ_key(name)
        if key is not None:
            found.append((key, value.strip()))
    return found


@functools.lru_cache(maxsize=64)
def python_call(cls: type) -> types.FunctionType | None:
    """*cls*'s ``__call__`` when it is a plain Python function, else ``None`` (looked up once per class)."""
    call = inspect.getattr_static(cls, "__call__", None)
    return call if isinstance(call, types.FunctionType) else None


def direct_call(application: Any) -> Any:
    """*application*, or its bound ``__call__`` when it is an instance of a Python class.

    The same call either way; but calling an instance goes through C (``slot_tp_call``),
    which re-enters the interpreter's C loop, while a bound method is called inline. Every
    C frame between a greenlet's start and its wait is saved with the greenlet while it
    waits: about 1.2 KiB per idle websocket for this one.
    """
    call = python_call(type(application))
    return application if call is None else types.MethodType(call, application)


class PackedHeaders:
    """Header pairs (``str`` or ``bytes``) kept in one ``marshal`` block; iterating gives them back.

    For what only the access log reads once, when the connection ends: gunicorn's ``access()``
    takes the request's headers through ``items()`` and the response's by iterating.
    """

    __slots__ = ("_packed",)

    def __init__(self, pairs: Any) -> None:
        self._packed = marshal.dumps(tuple(tuple(pair) for pair in pairs))

    def __iter__(self) -> Any:
        return iter(marshal.loads(self._packed))

    def items(self) -> list[tuple[Any, Any]]:
        return list(marshal.loads(self._packed))


#: Headers kept for an access line that prints none: one object shared by every connection.
NO_HEADERS = PackedHeaders(())


def logged_headers(pairs: Any, names: frozenset[str] | None) -> PackedHeaders:
    """*pairs* (``str`` or ``bytes`` names) whose lowercase name is in *names* (all if ``None``), packed.

    Repeated headers stay repeated and in order, names as they were sent: the access line sees
    what it would have seen for a request that did not upgrade.
    """
    if names is None:
        return PackedHeaders(pairs)
    if not names:
        return NO_HEADERS
    kept = [pair for pair in pairs if header_name(pair[0]) in names]
    return PackedHeaders(kept) if kept else NO_HEADERS


def header_name(name: str | bytes) -> str:
    return (name.decode("latin-1") if isinstance(name, bytes) else name).lower()


#: A header atom of gunicorn's access log format: ``%({name}i)s``, ``%({name}o)s``.
HEADER_ATOM = re.compile(r"%\(\{([^}]*)\}([io])\)")


@functools.lru_cache(maxsize=16)  # read per handshake; a process has one or two formats
def header_atoms(log_format: str, kind: str) -> frozenset[str]:
    """Lowercase names of the *kind* (``i``: request, ``o``: response) header atoms of *log_format*.

    gunicorn matches them case-insensitively (its ``SafeAtoms``), so ``%({X-Id}i)s`` names ``x-id``.
    """
    return frozenset(name.lower() for name, found in HEADER_ATOM.findall(log_format) if found == kind)


def gunicorn_access_format(log: Any) -> str | None:
    """*log*'s ``access_log_format`` when it is gunicorn's own logger (its ``access()`` and ``atoms()``).

    ``None`` for any other logger: a subclass that overrides either may read any header. pywsgi's
    server keeps gunicorn's logger wrapped in a ``LoggingLogAdapter``: the logger inside counts.
    """
    if isinstance(log, pywsgi.LoggingLogAdapter):
        log = log._logger
    log_format = getattr(getattr(log, "cfg", None), "access_log_format", None)
    own = all(
        getattr(getattr(type(log), name, None), "__module__", None) == "gunicorn.glogging"
        for name in ("access", "atoms")
    )
    return log_format if own and isinstance(log_format, str) else None


class ConnectionGreenlet(gevent.Greenlet):
    """The greenlet of a detached connection: it keeps no spawning stack.

    gevent's greenlets keep a summary of the stack that spawned them (up to 10 frames, for
    ``gevent.util``'s reports): here the handshake's, about 1 KiB per socket, for days.
    """

    spawning_stack_limit = 0


def own_socket(sock: socket.socket) -> socket.socket:
    """A new gevent socket object for *sock*'s descriptor; *sock* is left closed, the descriptor not."""
    timeout = sock.gettimeout()
    # Family, type and protocol given, not detected from the descriptor: three system calls fewer.
    owned = type(sock)(sock.family, sock.type, sock.proto, fileno=sock.detach())
    owned.settimeout(timeout)
    return owned


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)``, trying one ``send()`` first: it takes all of a small write.

    gevent's ``sendall()`` asks the kernel for the socket's send buffer size (a ``getsockopt``,
    to size its chunks) on every call, however little there is to send.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def buffered_bytes(rfile, sock: socket.socket) -> bytes:
    """Take what *rfile* had read from *sock* past the request headers; never waits for more."""
    sock.settimeout(0.0)
    try:
        buffered = rfile.peek()
    except OSError:
        buffered = b""
    finally:
        sock.settimeout(None)
    return rfile.read(len(buffered)) if buffered else b""


def socket_reader(sock: socket.socket, buffered: bytes) -> Callable[[int], bytes]:
    """``read(n)``: *buffered* first, then up to *n* bytes straight from *sock*.

    Not through the request's buffered reader: its ``read1(n)`` allocates the *n*-byte result
    before it waits, so every idle socket would hold a 64 KiB buffer. gevent's ``recv``
    waits with nothing allocated.
    """
    if not buffered:
        return sock.recv  # nothing to serve first: no closure to keep per socket
    leftover = [buffered]

    def read(n: int) -> bytes:
        if leftover:
            data = leftover.pop()
            if len(data) > n:
                leftover.append(data[n:])
                data = data[:n]
            return data
        return sock.recv(n)

    return read


#: Settings read for every request or handshake here, as ``conf.get`` returns them: looked up once,
#: forgotten when a test changes settings (``setting_changed``). An unset setting costs ``conf.get``
#: an ``AttributeError`` raised and caught inside Django's ``LazySettings`` on every call.
_settings: dict[str, Any] = {}


def cached_setting(name: str) -> Any:
    """``conf.get(name)``, remembered until the next ``setting_changed`` signal."""
    try:
        return _settings[name]
    except KeyError:
        pass
    from django.core.signals import setting_changed

    from . import conf

    # Connected here, in the worker, not at import (gunicorn's master imports this module).
    setting_changed.connect(forget_settings, dispatch_uid="django_websocket.server.forget_settings")
    value = _settings[name] = conf.get(name)
    return value


def forget_settings(**kwargs: Any) -> None:
    _settings.clear()


def handshake_timeout() -> float | None:
    """``WEBSOCKET_HANDSHAKE_TIMEOUT`` (``None`` outside a configured Django project)."""
    if "WEBSOCKET_HANDSHAKE_TIMEOUT" in _settings:  # cached, so settings are configured
        return _settings["WEBSOCKET_HANDSHAKE_TIMEOUT"]
    from django.conf import settings

    if not settings.configured:
        return None
    return cached_setting("WEBSOCKET_HANDSHAKE_TIMEOUT")


#: Open websockets allowed per process when ``WEBSOCKET_MAX_CONNECTIONS`` is None; our gunicorn
#: worker sets it to 90 % of ``--worker-connections`` (the rest answer the 503s).
default_connection_limit: int | None = None


def connection_limit() -> int | None:
    """How many websockets this process may hold open before handshakes get 503."""
    limit = cached_setting("WEBSOCKET_MAX_CONNECTIONS")
    return limit if limit is not None else default_connection_limit
