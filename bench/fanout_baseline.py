"""The fan-out baseline: the original design, one Redis pubsub connection per socket.

Served by ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker bench.fanout_baseline:app``
with ``WEBSOCKET_REDIS_URL`` (or ``REDIS_URL``) pointing at Redis.

A websocket to ``/broadcast/<room>/`` gets its own redis-py client and pubsub, subscribed to
``django_websocket:broadcast:<room>`` — the channel our library uses for ``publish("broadcast:<room>", …)``
— and every message published there is forwarded to the socket as a text frame, payload unchanged.
This is django-gevent-websocket's chat server (``../shared/ORIGIN.md``) with one change: a greenlet per
socket blocks in ``pubsub.listen()`` instead of the original's ``select()`` over the two descriptors,
which fails for descriptors ≥ 1024 and so could not hold 1,000 sockets. What the client sends is read
and dropped; the socket's Redis connection is closed when the client closes.
"""

from __future__ import annotations

import os
import re

import gevent
import redis
from geventwebsocket.exceptions import WebSocketError

REDIS_URL = os.environ.get("WEBSOCKET_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
PREFIX = "django_websocket:"
ROOM = re.compile(r"^/broadcast/([\w.-]+)/$")


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    match = ROOM.match(environ.get("PATH_INFO", ""))
    if ws is None or match is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"WebSocket /broadcast/<room>/ only.\n"]
    # socket_timeout=None: redis-py 8's default would time the quiet pubsub read out after 5 s.
    # decode_responses: gevent-websocket sends str as text (it would send str(b"...") for bytes).
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=None, decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(PREFIX + "broadcast:" + match.group(1))

    def forward():
        try:
            for message in pubsub.listen():
                if message["type"] == "message":
                    ws.send(message["data"])
        except WebSocketError:
            pass  # the client went away; the receive loop below ends too

    forwarder = gevent.spawn(forward)
    try:
        while ws.receive() is not None:
            pass
    finally:
        forwarder.kill(timeout=1)
        pubsub.close()
        client.close()
    return []
