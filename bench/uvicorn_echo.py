"""A reference: a bare ASGI echo app, served by uvicorn with uvloop, httptools and ``websockets``.

``uvicorn bench.uvicorn_echo:app --ws websockets --loop uvloop --http httptools`` (what
``bench/memory.py`` starts, one process on 127.0.0.1). Every path echoes: text as text, binary as
binary. There is no framework, no middleware, no routing and no origin check, so it is the least an
asyncio server can do per socket. uvicorn's keepalive pings (every 20 s) stay on.

``bench/run.py`` adds ``--log-config bench/uvicorn_logging.json``: uvicorn logs three INFO lines
per websocket (accepted, connection open, connection closed), which ours and gevent-websocket do not
write; ``QuietAfterStartup`` lets the startup lines through (the bench reads the port from them),
then raises ``uvicorn.error`` to WARNING, so the per-connection lines cost nothing but a level check.
"""

import logging


class QuietAfterStartup(logging.Filter):
    """Pass every record; once uvicorn says where it listens, make its logger WARNING and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Uvicorn running on"):
            logging.getLogger(record.name).setLevel(logging.WARNING)
        return True


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                if event.get("text") is not None:
                    await send({"type": "websocket.send", "text": event["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            elif event["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        # A plain HTTP request (a browser, a health check): say what this is instead of crashing.
        await send(
            {
                "type": "http.response.start",
                "status": 426,
                "headers": [(b"content-type", b"text/plain"), (b"upgrade", b"websocket")],
            }
        )
        await send({"type": "http.response.body", "body": b"WebSocket echo only.\n"})
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
