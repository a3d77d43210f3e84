"""The reference: a bare gevent-websocket echo app, with no Django in the way.

Served by ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker bench.bare_echo:app``.
Every path echoes; there is no origin check, no middleware and no URL resolution, so the
difference between this and our stack is what Django and our handler cost.
"""


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        # A plain HTTP request (a browser, a health check): say what this is instead of crashing.
        start_response("426 Upgrade Required", [("Content-Type", "text/plain"), ("Upgrade", "websocket")])
        return [b"WebSocket echo only.\n"]
    while True:
        msg = ws.receive()
        if msg is None:
            break
        ws.send(msg, binary=not isinstance(msg, str))
    return []
