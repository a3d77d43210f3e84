"""Steps 1–6 of a connection, through Django's request machinery.

:class:`WebSocketHandler` is a Django WSGI handler for websocket endpoints. For
each connection it runs, in order::

    validate the handshake  → 400 / 403 (Origin) / 503 (connection cap) as plain HTTP
    MIDDLEWARE + resolve over WEBSOCKET_URLCONF → 302 / 403 / 404 / 426 / 500 as plain HTTP
    per-user cap            → 429 as plain HTTP (WEBSOCKET_MAX_CONNECTIONS_PER_USER)
    accept                  → 101, only when a @websocket view's marker came back out
    run the view            → view(request, websocket, *args, **kwargs)
    close                   → 1000, or 1011 if the view raised (details only in the log)

``request_started`` and ``request_finished`` fire once per connection. The view's
database connections are given back after the accept and whenever the view waits,
and closed when it ends (``django_websocket.database``), so a long-lived socket does
not pin a database connection.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core import signals
from django.core.exceptions import PermissionDenied
from django.core.handlers.wsgi import WSGIHandler, get_script_name
from django.db import close_old_connections
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import ResponseHeaders
from django.urls import set_script_prefix, set_urlconf
from django.utils.functional import LazyObject, empty
from django.utils.log import log_response

from . import blocking, conf
from .accepted import defer_message_storage, lighten
from .brokers import get_hub
from .compression import negotiate
from .connection import WebSocket, open_connections
from .counters import counters
from .database import (
    DATABASE_UNAVAILABLE,
    close_code_for,
    close_connections,
    release_connections,
    track_connections,
)
from .decorators import HANDSHAKE_ATTRIBUTE
from .exceptions import ConnectionClosed, HandshakeError
from .handshake import accept_headers, check_origin, is_upgrade_request, parse_handshake
from .response import AcceptWebSocket, handshake_refused
from .server import DETACH_ENVIRON_KEY, UPGRADE_ENVIRON_KEY, connection_limit
from .stock import StockWebSocket

logger = logging.getLogger("django_websocket")

#: Headers of the marker response that must not go out with a 101.
NOT_ON_UPGRADE = {"content-type", "content-length", "transfer-encoding"}

StartResponse = Callable[..., Any]
#: Request attribute holding the negotiated extensions: (``Sec-WebSocket-Extensions`` value, objects).
EXTENSIONS_ATTRIBUTE = "_websocket_extensions"
#: environ flag set by ``django_websocket.testing.WebSocketClient``: leave DB connections alone.
KEEP_DB_CONNECTIONS = "django_websocket.keep_db_connections"
#: ``Retry-After`` seconds of the 429 past ``WEBSOCKET_MAX_CONNECTIONS_PER_USER``: about the time
#: a closed tab's socket takes to be counted out (a vanished client's takes up to the ping timeout).
PER_USER_RETRY_AFTER = 5


class WebSocketHandler(WSGIHandler):
    """The WSGI application of ``get_wsgi_websocket_application()``.

    Every request is resolved against ``WEBSOCKET_URLCONF``, through the project's
    ``MIDDLEWARE``. Under the stock gevent-websocket worker (which upgrades before the
    application runs) refusals become close codes 4000 + the HTTP status.
    """

    def __init__(self) -> None:
        super().__init__()
        track_connections()

    def load_middleware(self, is_async: bool = False) -> None:
        """Django's, then ``MessageMiddleware`` made to build its storage on first use.

        See :func:`django_websocket.accepted.defer_message_storage`: a handshake seldom reads or
        adds a message, and the storage costs more to make than the rest of the middleware's work.
        """
        super().load_middleware(is_async)
        defer_message_storage(self._middleware_chain)

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get(KEEP_DB_CONNECTIONS):
            # The in-process test client, inside a test's transaction: Django's
            # close_old_connections() must not run on this request's signals (it would close
            # the test's connection), as Django's own test ClientHandler arranges.
            with _without_close_old_connections(signals.request_started):
                signals.request_started.send(sender=self.__class__, environ=environ)
            return _KeepConnectionOnClose(self.respond(environ, start_response))
        signals.request_started.send(sender=self.__class__, environ=environ)
        return self.respond(environ, start_response)

    def respond(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (``request_started`` sent): HTTP, or the accepted websocket run to its end.

        Handshakes are counted in ``counters.handshakes`` by status (the metrics' handshakes):
        101 once the upgrade is sent, else the HTTP status of the refusal; a plain request is
        counted only when it is a 426 (it reached a websocket view without upgrading).
        """
        started = time.perf_counter()
        set_script_prefix(get_script_name(environ))
        upgrade = is_upgrade_request(environ)
        if upgrade:
            # A handshake has no body, and the connection is read through the upgrade: the
            # request must not keep the server's buffered reader (and its buffer) alive.
            environ["wsgi.input"] = io.BytesIO()
        request = self.request_class(environ)
        response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, AcceptWebSocket):
            return self.run_websocket(request, response, environ, start_response, started)
        if upgrade or response.status_code == 426:
            counters.count_handshake(response.status_code)
        if environ.get("wsgi.websocket") is not None:
            return self.refuse_stock_websocket(response, environ)
        if response.status_code >= 500 and not response.streaming:
            # Details of a failure before the accept belong in the server log only.
            response.content = b"500 Internal Server Error\n"
            response["Content-Type"] = "text/plain; charset=utf-8"
            if response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
        return _send_http(response, start_response)

    def get_response(self, request: HttpRequest) -> HttpResponse:
        """Run the middleware and the view over ``WEBSOCKET_URLCONF``, after validating the handshake.

        Mirrors ``BaseHandler.get_response`` with the websocket URLconf set for this
        greenlet (so ``reverse()`` in a websocket view resolves against it) and a
        malformed or cross-origin handshake refused before the middleware runs.
        """
        urlconf = conf.handshake_settings().urlconf
        set_urlconf(urlconf)
        request.urlconf = urlconf
        response = self.check_handshake(request) or self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    def check_handshake(self, request: HttpRequest) -> HttpResponse | None:
        """Return an HTTP refusal for a bad handshake, or ``None`` to let Django decide.

        A valid handshake is attached to the request for ``@websocket`` views; a request
        without ``Upgrade: websocket`` passes untouched (websocket views answer it 426).
        """
        environ = request.environ
        if not is_upgrade_request(environ):
            return None
        options = conf.handshake_settings()
        try:
            handshake = parse_handshake(environ)
            check_origin(handshake.origin, options.allowed_origins, options.allow_missing_origin)
            extensions = negotiate(
                handshake.extensions,
                enabled=options.compression,
                threshold=options.compression_threshold,
                max_message_size=options.max_message_size,
            )
        except HandshakeError as error:
            logger.warning(
                "websocket handshake refused (%s) for %s: %s", error.status, request.path, error.message
            )
            return handshake_refused(error.status, error.message, error.headers)
        limit = connection_limit()
        if limit is not None and len(open_connections) >= limit:
            logger.warning(
                "websocket handshake refused (503) for %s: %d connections open", request.path, limit
            )
            response = handshake_refused(503, "Too many connections; try again shortly.")
            response["Retry-After"] = "1"
            return response
        setattr(request, HANDSHAKE_ATTRIBUTE, handshake)
        setattr(request, EXTENSIONS_ATTRIBUTE, extensions)
        return None

    def run_websocket(
        self,
        request: HttpRequest,
        accept: AcceptWebSocket,
        environ: dict,
        start_response: StartResponse,
        started: float | None = None,
    ) -> Iterable[bytes]:
        """Accept the handshake, run the view on the socket, close it; return the finished response.

        The returned response's ``close()`` — called by the WSGI server, or here under the
        stock worker, which never calls it — fires ``request_finished``. Where the server
        offers ``DETACH_ENVIRON_KEY`` (our pywsgi handler), the view runs in the connection's
        own greenlet instead (:func:`serve_detached`, which fires it) and this returns ``[]``
        at once. Nothing after the 101 is written as HTTP. *started* (``time.perf_counter()``
        when the request reached the handler): the 101's latency goes to
        ``counters.observe_handshake`` if it is set.
        """
        try:
            per_user = conf.handshake_settings().max_connections_per_user
            owner = connection_owner(request) if per_user else None
        except Exception:  # loading the user failed (the database is down…): a refusal, as before the accept
            logger.exception("websocket handshake for %s: cannot tell whose connection it is", request.path)
            owner, refusal = None, _take_over(handshake_refused(500, "Internal Server Error"), accept)
        else:
            refusal = None
            if owner is not None and not owner_connections.reserve(owner):
                refusal = _per_user_refusal(request, accept)
        if refusal is not None:
            counters.count_handshake(refusal.status_code)
            if environ.get("wsgi.websocket") is not None:
                return self.refuse_stock_websocket(refusal, environ)
            return _send_http(refusal, start_response)
        try:
            websocket = self.accept(request, accept, environ)
            if websocket is None:
                counters.count_handshake(501)
                return _send_http(_no_upgrade_support(request), start_response)
            counters.count_handshake(101)
            observe = counters.observe_handshake
            if observe is not None and started is not None:
                observe(time.perf_counter() - started)
            websocket.request = request
            lighten(request)  # it lives as long as the socket
            websocket.hub = get_hub()
            websocket.user_id = _known_user_id(request)
            # The in-process test client keeps the test's connection, as Django's test Client does.
            keep = environ.get(KEEP_DB_CONNECTIONS)
            if not keep:
                websocket.on_wait = release_connections
                release_connections()  # what the middleware used (session, user)
            detach = None if keep else environ.get(DETACH_ENVIRON_KEY)
            if detach is not None:
                # The view runs in a greenlet of its own, shallow while it waits (see
                # server.UpgradeHandler.detach_connection), which does the rest; this one ends.
                detach(serve_detached, request, websocket, accept, owner)
                owner = None
                return []
            serve(request, websocket, accept, keep)
        finally:
            if owner is not None:
                owner_connections.release(owner)
        if isinstance(websocket, StockWebSocket):
            accept.close()
            return []
        return accept

    def accept(self, request: HttpRequest, accept: AcceptWebSocket, environ: dict) -> Any:
        """Send the 101 and return the websocket, or ``None`` if the server cannot upgrade."""
        stock = environ.get("wsgi.websocket")
        if stock is not None:
            # gevent-websocket's 101 carries no Sec-WebSocket-Protocol: none was agreed.
            return StockWebSocket(stock)
        upgrade = environ.get(UPGRADE_ENVIRON_KEY)
        if upgrade is None:
            return None
        handshake = getattr(request, HANDSHAKE_ATTRIBUTE)
        extensions_header, extensions = getattr(request, EXTENSIONS_ATTRIBUTE, (None, []))
        headers = accept_headers(handshake, accept.subprotocol, extensions_header)
        for name, value in accept.items():
            if name.lower() not in NOT_ON_UPGRADE:
                headers.append((name, value))
        if accept.cookies:
            headers += _cookie_headers(accept)
        sock, read = upgrade(headers)
        # Sent with the 101: the marker need not keep them for the connection's life.
        accept.headers = ResponseHeaders({})
        if accept.cookies:
            accept.cookies.clear()
        options = conf.handshake_settings()
        return WebSocket(
            sock,
            read,
            subprotocol=accept.subprotocol,
            max_message_size=options.max_message_size,
            close_timeout=options.close_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            send_timeout=options.send_timeout,
            extensions=extensions,
            message_rate_limit=options.message_rate_limit,
        )

    def refuse_stock_websocket(self, response: HttpResponse, environ: dict) -> Iterable[bytes]:
        """Under the stock worker the 101 is already sent: refuse with close code 4000 + status."""
        code = 4000 + response.status_code if 100 <= response.status_code <= 999 else 4500
        logger.warning(
            "websocket refused after the upgrade (stock worker): %s %s -> close %s",
            environ.get("PATH_INFO"),
            response.status_code,
            code,
        )
        StockWebSocket(environ["wsgi.websocket"]).close(code, response.reason_phrase[:100])
        response.close()
        return []


def run_view(request: HttpRequest, websocket: Any, accept: AcceptWebSocket) -> None:
    """Call the view on *websocket* and close it: 1000 when it returns, 1011 when it raises.

    ``PermissionDenied`` and ``Http404`` raised by the view close with 4403 and 4404,
    the codes a refusal gets once the upgrade is done; a database that is unreachable or
    saturated (pool timeout, too many clients) closes with 1013 "try again later", logged
    as a warning naming the cause. The socket is closed when this returns.
    """
    code, reason = 1000, ""
    try:
        accept.view(request, websocket, *accept.view_args, **accept.view_kwargs)
    except ConnectionClosed as closed:
        logger.debug("websocket %s closed by the peer: %s", request.path, closed.code)
    except PermissionDenied:
        code = 4403
    except Http404:
        code = 4404
    except Exception as error:
        code, reason = close_code_for(error)
        if code == DATABASE_UNAVAILABLE:
            logger.warning(
                "websocket view %s: %s (%s: %s); closing with %d",
                request.path, reason, type(error).__name__, error, code,
            )  # fmt: skip
        else:
            logger.exception("websocket view raised: %s", request.path)
    finally:
        websocket.close_subscriptions()
        try:
            websocket.close(code, reason)
        except ConnectionClosed:
            pass


def serve(request: HttpRequest, websocket: Any, accept: AcceptWebSocket, keep: Any) -> None:
    """:func:`run_view`, then close the greenlet's database connections (unless *keep*)."""
    try:
        run_view(request, websocket, accept)
    finally:
        if not keep:
            close_connections()


def serve_detached(
    request: HttpRequest, websocket: Any, accept: AcceptWebSocket, owner: tuple[str, Any] | None
) -> None:
    """:func:`serve` in the connection's own greenlet, then the rest of the request's end."""
    try:
        # The request's greenlet, which request_started labelled, has ended: label this one.
        with blocking.serving(request.path):
            # serve()'s steps, not a call to it: a frame fewer (~0.2 KiB) on every waiting view's stack.
            try:
                run_view(request, websocket, accept)
            finally:
                close_connections()
    finally:
        if owner is not None:
            owner_connections.release(owner)
        accept.close()  # request_finished, as the WSGI server would when the response ends


class OwnerConnections:
    """Open websockets per user (or anonymous session) in this process, for the per-user cap.

    Counted from the accept decision to the end of the view, so a socket being accepted
    counts already. Checking and counting happen without yielding to another greenlet.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, Any], int] = {}
        #: Handshakes refused with 429 since the process started (a hook for metrics).
        self.refusals = 0

    def reserve(self, owner: tuple[str, Any]) -> bool:
        """Count one more socket for *owner*; ``False`` (nothing counted) when at the cap."""
        limit = conf.handshake_settings().max_connections_per_user
        count = self.counts.get(owner, 0)
        if limit is not None and count >= limit:
            self.refusals += 1
            return False
        self.counts[owner] = count + 1
        return True

    def release(self, owner: tuple[str, Any]) -> None:
        count = self.counts.get(owner, 0) - 1
        if count > 0:
            self.counts[owner] = count
        else:
            self.counts.pop(owner, None)


#: This process's open sockets per owner (``WEBSOCKET_MAX_CONNECTIONS_PER_USER``).
owner_connections = OwnerConnections()


def connection_owner(request: HttpRequest) -> tuple[str, Any] | None:
    """Whom ``WEBSOCKET_MAX_CONNECTIONS_PER_USER`` counts a socket against, or ``None`` (nobody).

    An authenticated user: ``("user", pk)``, whatever browser or session. An anonymous client
    with a session the store knows (``request.user`` loads it, and an unknown key from the
    cookie is dropped then): ``("session", key)``. Anyone else — no session, or no
    ``AuthenticationMiddleware`` — is not capped per user: the client address is not a key,
    as behind a proxy (or a NAT) it is shared by everyone.
    """
    user = getattr(request, "user", None)
    if user is None:
        return None
    if user.is_authenticated:
        return ("user", user.pk)
    key = getattr(getattr(request, "session", None), "session_key", None)
    return ("session", key) if key else None


def _known_user_id(request: HttpRequest) -> Any:
    """The pk of ``request.user`` if it is authenticated and already loaded (no query here)."""
    user = getattr(request, "user", None)
    if user is None or (isinstance(user, LazyObject) and user._wrapped is empty):
        return None
    return user.pk if user.is_authenticated else None


def _per_user_refusal(request: HttpRequest, accept: AcceptWebSocket) -> HttpResponse:
    """The 429 for a user at ``WEBSOCKET_MAX_CONNECTIONS_PER_USER``, in place of the accept."""
    limit = conf.handshake_settings().max_connections_per_user
    user_id = _known_user_id(request)
    logger.warning(
        "websocket handshake refused (429) for %s: %s already holds %d connections on this worker",
        request.path, f"user {user_id}" if user_id is not None else "an anonymous session", limit,
    )  # fmt: skip
    refusal = handshake_refused(429, "Too many connections for this user; close one and try again.")
    refusal["Retry-After"] = str(PER_USER_RETRY_AFTER)
    log_response("%s: %s", refusal.reason_phrase, request.path, response=refusal, request=request)
    return _take_over(refusal, accept)


def _take_over(refusal: HttpResponse, accept: AcceptWebSocket) -> HttpResponse:
    """Make *refusal* replace *accept*: it takes over the request's closers and ``request_finished``."""
    refusal._resource_closers.extend(accept._resource_closers)
    accept._resource_closers.clear()
    refusal._handler_class = accept._handler_class
    return refusal


@contextmanager
def _without_close_old_connections(signal: Any) -> Iterator[None]:
    """*signal* without Django's ``close_old_connections`` receiver while the block runs.

    Receivers run synchronously in the sending greenlet, so no other request sees the gap.
    """
    disconnected = signal.disconnect(close_old_connections)
    try:
        yield
    finally:
        if disconnected:
            signal.connect(close_old_connections)


class _KeepConnectionOnClose:
    """A WSGI result whose ``close()`` (``request_finished``) leaves the test's connection alone."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            with _without_close_old_connections(signals.request_finished):
                close()


def _response_headers(response: HttpResponse) -> list[tuple[str, str]]:
    return [*response.items(), *_cookie_headers(response)]


def _cookie_headers(response: HttpResponse) -> list[tuple[str, str]]:
    return [("Set-Cookie", cookie.output(header="").strip()) for cookie in response.cookies.values()]


def _send_http(response: HttpResponse, start_response: StartResponse) -> HttpResponse:
    """Start an ordinary HTTP response, as ``WSGIHandler.__call__`` does."""
    start_response(f"{response.status_code} {response.reason_phrase}", _response_headers(response))
    return response


def _no_upgrade_support(request: HttpRequest) -> HttpResponse:
    logger.error(
        "websocket handshake for %s reached a server that cannot upgrade connections: serve the "
        "application with gunicorn -k django_websocket.workers.GeventWebSocketWorker "
        "or manage.py runwebsocket",
        request.path,
    )
    return handshake_refused(501, "This server cannot accept websocket connections.")
