"""A reference: a bare ASGI echo app, served by uvicorn with uvloop, httptools and ``websockets``.

``uvicorn bench.uvicorn_echo:app --ws websockets --loop uvloop --http httptools`` (what
``bench/memory.py`` starts, one process on 127.0.0.1). Every path echoes: text as text, binary as
binary. There is no framework, no middleware, no routing and no origin check, so it is the least an
asyncio server can do per socket. uvicorn's keepalive pings (every 20 s) stay on.
"""


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
