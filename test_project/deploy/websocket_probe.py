"""Health probe: open a websocket to an echo endpoint, send a token, expect it back.

For a monitoring system or a container's health check, next to an HTTP probe of a
page: it proves the whole path a browser takes — proxy, upgrade, worker, Django's
middleware and the view — works, not only that the port answers::

    python websocket_probe.py ws://127.0.0.1:8000/echo/
    python websocket_probe.py wss://example.com/echo/ --origin https://example.com --timeout 5

Exits 0 when the token came back within ``--timeout`` seconds, 1 otherwise, with the
reason on stderr (the handshake's HTTP status when the server refused it). Needs only
the ``websockets`` package (13 or later). Give ``--origin`` when ``WEBSOCKET_ALLOW_MISSING_ORIGIN`` is
``False``.

It uses websockets' asyncio client, not its threaded one (``websockets.sync``): that one
reads the socket in a thread of its own while the calling thread writes, which over TLS
enters one OpenSSL connection from two threads at once, something OpenSSL does not
allow. Right after a TLS 1.3 handshake (the server's session tickets arriving while the
handshake request goes out) the request was now and then never sent, and the probe
reported a healthy server as down ("no echo"). asyncio does all of a connection's TLS in
one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException


async def echo(url: str, origin: str | None, timeout: float, token: str) -> str | bytes:
    """Send *token* on a websocket to *url*; return the first message that comes back."""
    async with connect(url, origin=origin, open_timeout=timeout, close_timeout=timeout) as websocket:
        await websocket.send(token)
        return await asyncio.wait_for(websocket.recv(), timeout)


def probe(url: str, origin: str | None = None, timeout: float = 5.0) -> str | None:
    """Return ``None`` when *url* echoed a random token within *timeout*, else what went wrong."""
    token = f"probe {secrets.token_hex(8)}"
    try:
        reply = asyncio.run(echo(url, origin, timeout, token))
    except InvalidStatus as error:
        return f"handshake refused: HTTP {error.response.status_code}"
    except (TimeoutError, asyncio.TimeoutError):  # one and the same from Python 3.11
        return f"no echo within {timeout} s"
    except (OSError, WebSocketException) as error:
        return f"{type(error).__name__}: {error}"
    if reply != token:
        return f"unexpected reply {reply!r:.80}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="ws:// or wss:// URL of an echo endpoint")
    parser.add_argument("--origin", help="Origin header to send, e.g. https://example.com")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for each step (default 5)")
    args = parser.parse_args(argv)
    problem = probe(args.url, args.origin, args.timeout)
    if problem is not None:
        print(f"{args.url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
