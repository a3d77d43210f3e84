"""Server CPU per websocket handshake, in one process: the handler alone, without the network.

Calls the websocket WSGI application (``test_project.wsgi:websocket``: test_project's whole
``MIDDLEWARE``, the URL resolver over ``WEBSOCKET_URLCONF``, ``@websocket``'s marker, the 101,
the ``WebSocket`` and the close handshake, ``request_started``/``request_finished``) with a
real handshake environ, as our gunicorn worker does after parsing the request. The upgrade
hands over one end of a gevent socket pair whose other end has already sent a masked close
frame, so ``/echo/`` ends at once; nothing else runs in the process (gevent patched, as in
the worker). What it prints is process CPU time per handshake, median over rounds::

    python bench/handshake_profile.py                      # /echo/, anonymous, 5 rounds × 2,000
    python bench/handshake_profile.py --session            # /whoami/ with a logged-in session (SQLite)
    python bench/handshake_profile.py --against /tmp/before-hs   # the same, interleaved with another checkout
    python bench/handshake_profile.py --profile 20000      # cProfile of 20,000 handshakes, top functions
    python bench/handshake_profile.py --floor              # and Django's part alone, interleaved
    python bench/handshake_profile.py --session --postgres 20 --profile 5000   # the same on PostgreSQL

With ``--against DIR`` every round runs each checkout in its own subprocess (``PYTHONPATH``
set to the checkout), the order alternating between rounds, and the table shows both medians
and their ratio: the A/B of a change, less noisy than ``bench/run.py``'s handshakes but blind
to what happens in the server before the application (parsing, accept, the socket's close).
A throwaway SQLite database is made (and migrated for ``--session``) in a temporary directory.

``--floor`` measures, in the same process and interleaved with the whole handshake, what Django
itself spends on this request whatever the server: ``request_started``, the ``WSGIRequest``,
test_project's whole ``MIDDLEWARE`` with the URL resolver and the ``@websocket`` view's marker,
and ``request_finished`` — without our handshake checks, the 101, the socket or the view's run.
No websocket server serving Django's middleware can take less per handshake.

``--postgres POOL`` starts a throwaway PostgreSQL (``tests/postgres_server.py``) and uses
``bench.orm_echo_settings`` (test_project's, the database there through Django's pool of
``max_size`` POOL), as ``bench/run.py --postgres`` does: with ``--session`` the handshake loads
the session and the user from it. The server's own CPU is not in the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
#: A client's close frame (code 1000), masked with a zero mask: what the client sent before the view runs.
CLOSE_FRAME = bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])


def environ_for(path: str, cookie: str | None) -> dict:
    """The WSGI environ our worker builds for ``GET path`` with a browser-like handshake."""
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_ORIGIN": "http://127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    return environ


def setup(session: bool) -> tuple[object, str, str | None]:
    """Set up Django on a throwaway database; return (application, path, cookie)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "test_project.settings")  # or --postgres's
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["DJANGO_DB_PATH"] = str(Path(tempfile.mkdtemp(prefix="hs-profile-")) / "db.sqlite3")
    import django

    django.setup(set_prefix=False)
    from django_websocket.wsgi import get_wsgi_websocket_application

    application = get_wsgi_websocket_application()
    if not session:
        return application, "/echo/", None
    from django.core.management import call_command

    from bench.run import SESSION_SCRIPT

    call_command("migrate", "--noinput", verbosity=0)
    made: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(SESSION_SCRIPT, made)  # the logged-in user's session, as bench/run.py makes it
    return application, "/whoami/", f"sessionid={made['session'].session_key}"


def make_handshake(application: object, path: str, cookie: str | None):  # type: ignore[no-untyped-def]
    """Return ``handshake()``: one complete handshake and close through *application*."""
    from gevent import socket

    from django_websocket.server import UPGRADE_ENVIRON_KEY, socket_reader

    template = environ_for(path, cookie)

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        raise AssertionError(f"expected a 101, got {status}")

    def handshake() -> None:
        server, client = socket.socketpair()
        client.sendall(CLOSE_FRAME)

        def upgrade(headers: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
            lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
            server.sendall(f"HTTP/1.1 101 Switching Protocols\r\n{lines}\r\n".encode("latin-1"))
            return server, socket_reader(server, b"")

        environ = dict(template)
        environ[UPGRADE_ENVIRON_KEY] = upgrade
        result = application(environ, start_response)  # type: ignore[operator]
        for _chunk in result:
            pass
        result.close()
        server.close()
        client.close()

    return handshake


def make_django_only(application: object, path: str, cookie: str | None):  # type: ignore[no-untyped-def]
    """Return ``request()``: Django's own work for the handshake's request, as :func:`make_handshake` runs it.

    The signals, the request object and the middleware chain over ``WEBSOCKET_URLCONF`` (whose
    ``@websocket`` view answers with its marker); the handshake is parsed once, outside.
    """
    from django.core import signals
    from django.core.handlers.wsgi import WSGIRequest
    from django.urls import set_urlconf

    from django_websocket import conf
    from django_websocket.decorators import HANDSHAKE_ATTRIBUTE
    from django_websocket.handshake import parse_handshake
    from django_websocket.response import AcceptWebSocket

    template = environ_for(path, cookie)
    handshake = parse_handshake(template)
    urlconf = conf.websocket_urlconf()
    chain = application._middleware_chain  # type: ignore[attr-defined]
    handler_class = type(application)

    def request() -> None:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO()  # the server's; the handler swaps in this for a handshake
        signals.request_started.send(sender=handler_class, environ=environ)
        request = WSGIRequest(environ)
        set_urlconf(urlconf)
        request.urlconf = urlconf
        setattr(request, HANDSHAKE_ATTRIBUTE, handshake)
        response = chain(request)
        assert isinstance(response, AcceptWebSocket), response
        response._handler_class = handler_class
        response._resource_closers.append(request.close)
        response.close()  # request_finished

    return request


def floor(args: argparse.Namespace) -> None:
    """The whole handshake and Django's part of it, interleaved in this process; print both."""
    application, path, cookie = setup(args.session)
    kinds = {
        "whole handshake": make_handshake(application, path, cookie),
        "Django alone (signals, request, MIDDLEWARE, resolve, marker)": make_django_only(
            application, path, cookie
        ),
    }
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    for run in kinds.values():
        measure(run, max(args.count // 10, 50))
    for round_ in range(args.rounds):
        for kind, run in kinds.items() if round_ % 2 == 0 else reversed(kinds.items()):
            results[kind].append(measure(run, args.count))
    print(f"process CPU µs per request, {path}, median of {args.rounds} rounds × {args.count}")
    for kind, values in results.items():
        low, high = min(values), max(values)
        print(f"  {kind:62} {statistics.median(values):6,.0f} µs   (rounds {low:,.0f}–{high:,.0f})")


def measure(handshake, count: int) -> float:  # type: ignore[no-untyped-def]
    """Process CPU µs per handshake over *count* handshakes."""
    started = time.process_time()
    for _ in range(count):
        handshake()
    return (time.process_time() - started) / count * 1e6


def child(args: argparse.Namespace) -> None:
    """One checkout, one round: warm up, measure, print JSON."""
    application, path, cookie = setup(args.session)
    handshake = make_handshake(application, path, cookie)
    measure(handshake, max(args.count // 10, 50))
    print(
        json.dumps({"us": measure(handshake, args.count), "module": __import__("django_websocket").__file__})
    )


def run_child(checkout: Path, args: argparse.Namespace) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--count", str(args.count)]
    if args.session:
        command.append("--session")
    out = subprocess.run(
        command, env=env, cwd=checkout, check=True, capture_output=True, text=True, timeout=600
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(checkout)):
        raise SystemExit(f"{checkout}: imported django_websocket from {result['module']}")
    return result["us"]


def profile(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    application, path, cookie = setup(args.session)
    handshake = make_handshake(application, path, cookie)
    measure(handshake, 200)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.profile):
        handshake()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--session", action="store_true", help="/whoami/ with a logged-in session")
    parser.add_argument("--count", type=int, default=2000, help="handshakes per round and checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, action="append", default=[], help="another checkout")
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile N handshakes in this process")
    parser.add_argument("--top", type=int, default=35, help="functions shown by --profile")
    parser.add_argument("--floor", action="store_true", help="also time Django's part alone")
    parser.add_argument("--postgres", type=int, metavar="POOL", help="PostgreSQL, pool max_size POOL")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from gevent import monkey

    monkey.patch_all()  # as gunicorn's gevent worker does: greenlet-local connections and locals
    if args.child:  # the checkout is on PYTHONPATH
        return child(args)
    sys.path.insert(0, str(ROOT))
    with contextlib.ExitStack() as stack:
        if args.postgres:
            from tests.postgres_server import PostgresServer

            pg = stack.enter_context(PostgresServer())
            os.environ.update(pg.env(pool=args.postgres), DJANGO_SETTINGS_MODULE="bench.orm_echo_settings")
        run(args)


def run(args: argparse.Namespace) -> None:
    """The parent's work: ``--profile``, ``--floor`` or the rounds over the checkouts."""
    if args.profile:
        return profile(args)
    if args.floor:
        return floor(args)
    checkouts = [ROOT, *(path.resolve() for path in args.against)]
    results: dict[Path, list[float]] = {checkout: [] for checkout in checkouts}
    for round_ in range(args.rounds):
        order = checkouts if round_ % 2 == 0 else checkouts[::-1]
        for checkout in order:
            results[checkout].append(run_child(checkout, args))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{c.name} {results[c][-1]:,.0f} µs" for c in checkouts),
            file=sys.stderr,
        )
    ours = statistics.median(results[ROOT])
    kind = "/whoami/ + session" if args.session else "/echo/"
    print(f"server CPU µs per handshake, {kind}, median of {args.rounds} rounds × {args.count}")
    for checkout in checkouts:
        median = statistics.median(results[checkout])
        ratio = "" if checkout == ROOT else f"   this/that {ours / median:.2f}"
        low, high = min(results[checkout]), max(results[checkout])
        print(f"  {str(checkout):40} {median:8,.0f} µs   (rounds {low:,.0f}–{high:,.0f}){ratio}")


if __name__ == "__main__":
    main()
