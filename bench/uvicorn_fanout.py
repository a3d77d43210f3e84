"""The fan-out reference under uvicorn: one shared Redis subscriber per process, as ours has.

``uvicorn bench.uvicorn_fanout:app --loop uvloop --http httptools --ws websockets`` with
``WEBSOCKET_REDIS_URL`` (or ``REDIS_URL``) pointing at Redis; ``bench/fanout.py`` starts it.

A websocket to ``/broadcast/<room>/`` joins the room's set of sockets. The process holds one
``redis.asyncio`` pubsub connection (opened with the first socket), subscribed to
``django_websocket:broadcast:<room>`` — the channel our library uses for ``publish("broadcast:<room>", …)``
— while the room has members, and one reader task that sends every message published there to
every member as a text frame, payload unchanged: ``await send(...)`` per member, one after the other,
the cheapest fan-out ASGI allows (uvicorn's ``websockets`` protocol writes the frame to the transport
and only waits when that socket's buffer is full — so a stuck client would hold up the room, which
ours does not allow; it costs this reference nothing in the benchmark, where no client is stuck).
What the client sends is read and dropped. There is no framework, no middleware, no origin check.
"""

from __future__ import annotations

import asyncio
import os
import re

import redis.asyncio as aioredis

REDIS_URL = os.environ.get("WEBSOCKET_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
PREFIX = "django_websocket:"
ROOM = re.compile(r"^/broadcast/([\w.-]+)/$")


class Hub:
    """Rooms of ASGI ``send`` callables, fed by one pubsub connection."""

    def __init__(self) -> None:
        self.rooms: dict[str, set] = {}
        self.pubsub = None
        self.reader: asyncio.Task | None = None
        self.lock = asyncio.Lock()

    async def join(self, channel: str, send) -> None:
        async with self.lock:
            if self.pubsub is None:
                client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=None, decode_responses=True)
                self.pubsub = client.pubsub(ignore_subscribe_messages=True)
            members = self.rooms.setdefault(channel, set())
            if not members:
                await self.pubsub.subscribe(channel)  # the reply comes back through the reader
            members.add(send)
            if self.reader is None or self.reader.done():  # listen() ends when the last room empties
                self.reader = asyncio.create_task(self.read())

    async def leave(self, channel: str, send) -> None:
        async with self.lock:
            members = self.rooms.get(channel)
            if members is None:
                return
            members.discard(send)
            if not members:
                del self.rooms[channel]
                await self.pubsub.unsubscribe(channel)

    async def read(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            event = {"type": "websocket.send", "text": message["data"]}
            for send in tuple(self.rooms.get(message["channel"], ())):
                try:
                    await send(event)
                except Exception:  # noqa: BLE001 - a socket that went away; its receive loop leaves the room
                    pass


hub = Hub()


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        match = ROOM.match(scope["path"])
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if match is None:
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        channel = PREFIX + "broadcast:" + match.group(1)
        await hub.join(channel, send)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            await hub.leave(channel, send)
    elif scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"WebSocket /broadcast/<room>/ only.\n"})
