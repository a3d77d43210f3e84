"""Health probe: open a websocket to an echo endpoint, send a token, expect it back.

For a monitoring system or a container's health check, next to an HTTP probe of a
page: it proves the whole path a browser takes — proxy, upgrade, worker, Django's
middleware and the view — works, not only that the port answers::

    python websocket_probe.py ws://127.0.0.1:8000/echo/
    python websocket_probe.py wss://example.com/echo/ --origin https://example.com --timeout 5

Exits 0 when the token came back within ``--timeout`` seconds, 1 otherwise, with the
reason on stderr (the handshake's HTTP status when the server refused it). Needs only
the ``websockets`` package. Give ``--origin`` when ``WEBSOCKET_ALLOW_MISSING_ORIGIN`` is
``False``.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect


def probe(url: str, origin: str | None = None, timeout: float = 5.0) -> str | None:
    """Return ``None`` when *url* echoed a random token within *timeout*, else what went wrong."""
    token = f"probe {secrets.token_hex(8)}"
    try:
        with connect(url, origin=origin, open_timeout=timeout, close_timeout=timeout) as websocket:
            websocket.send(token)
            reply = websocket.recv(timeout=timeout)
    except InvalidStatus as error:
        return f"handshake refused: HTTP {error.response.status_code}"
    except TimeoutError:
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
