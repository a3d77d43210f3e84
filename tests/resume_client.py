"""A client of the resume protocol (docs/topics/history.md) for integration tests.

``Client`` opens ``resume-room/<room>/`` (``tests/websocket_urls.py``: ``forward=True,
resume=True, presence=...``) on a real server and splits what arrives into messages and
the other frames; :func:`close_clients` closes every client opened so far.
"""

from __future__ import annotations

import json
import time

from websockets.sync.client import ClientConnection, connect

from tests.servers import Server

_open_clients: list[Client] = []


def close_clients() -> None:
    """Close every client opened since the last call."""
    while _open_clients:
        _open_clients.pop().close()


class Client:
    """A resume-protocol client: frames split into messages and the rest, with its last id per channel."""

    def __init__(self, server: Server, room: str, name: str, since: str | None = None) -> None:
        query = f"?name={name}" + (f"&since=room:{room}@{since}" if since else "")
        self.channel = f"room:{room}"
        url = server.ws_url(f"/resume-room/{room}/{query}")
        self.websocket: ClientConnection = connect(url, open_timeout=10, close_timeout=2).__enter__()
        _open_clients.append(self)
        self.messages: list[dict] = []
        self.other: list[dict] = []
        self.pending: list[dict] = []  # the rest of a presence_diff, one join or leave each
        self.diffs = 0  # presence_diff frames received

    def frame(self, timeout: float = 5.0) -> dict:
        """The next frame; a ``presence_diff`` is read as its leaves, then its joins, one frame each."""
        if not self.pending:
            received = json.loads(self.websocket.recv(timeout=timeout))
            self.pending.extend(_expanded(received))
            self.diffs += received["ws"] == "presence_diff"
        frame = self.pending.pop(0)
        (self.messages if frame["ws"] == "message" else self.other).append(frame)
        return frame

    def until(self, kind: str, timeout: float = 5.0, **fields: object) -> dict:
        """Read frames until one of *kind* matching *fields* (member name for join/leave); return it."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frame(timeout=max(0.01, deadline - time.monotonic()))
            if frame["ws"] == kind and all(_field(frame, key) == value for key, value in fields.items()):
                return frame

    def subscribed(self) -> dict:
        return self.until("subscribed")

    def close(self) -> None:
        self.websocket.close()


def _expanded(frame: dict) -> list[dict]:
    """*frame*, or for a ``presence_diff`` one ``leave`` or ``join`` frame per member."""
    if frame["ws"] != "presence_diff":
        return [frame]
    channel = frame["channel"]
    leaves = [{"ws": "leave", "channel": channel, "member": member} for member in frame["leaves"]]
    return leaves + [{"ws": "join", "channel": channel, "member": member} for member in frame["joins"]]


def _field(frame: dict, key: str) -> object:
    return frame["member"].get(key) if key in ("name", "conn") and "member" in frame else frame.get(key)


def worker_pid(client: Client, name: str) -> int:
    """The pid of the worker serving *client*, from its presence entry (``conn`` is ``host:pid:n``)."""
    for frame in client.other:
        members = frame.get("members") or ([frame["member"]] if "member" in frame else [])
        for member in members:
            if member["name"] == name:
                return int(member["conn"].split(":")[-2])
    raise AssertionError(f"{name} not in presence frames {client.other}")
