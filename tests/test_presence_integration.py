"""Integration: presence in a big room, batched, on two real gunicorn workers and a real Redis.

500 clients join one room over about two seconds through ``resume-room/<room>/`` (forward,
resume, presence). Every client ends with the right member list, and receives a bounded
number of presence frames: one diff per batch window, not one frame per join.
"""

from __future__ import annotations

import json
import time
import uuid

from django_websocket.messaging.hub import PRESENCE_BATCH
from tests.servers import Server
from tests.test_fanout_integration import RawClient, pump, raise_fd_limit

CLIENTS = 500
#: Connections opened per step, and the step's length: 500 over about two seconds.
STEP, STEP_SECONDS = 25, 0.1
MAX_PRESENCE_FRAMES = 50


class Member:
    """One raw client, and the member list it builds from the presence frames it reads."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.read = 0
        self.members: dict[str, dict] = {}
        self.presence_frames = 0

    def update(self) -> None:
        for text in self.client.messages[self.read :]:
            frame = json.loads(text)
            kind = frame.get("ws")
            if kind == "presence":
                self.members = {member["conn"]: member for member in frame["members"]}
            elif kind == "presence_diff":
                for member in frame["leaves"]:
                    self.members.pop(member["conn"], None)
                for member in frame["joins"]:
                    self.members[member["conn"]] = member
            elif kind in ("join", "leave"):
                raise AssertionError(f"an unbatched presence frame: {frame}")
            else:
                continue
            self.presence_frames += 1
        self.read = len(self.client.messages)


def read_until(members: list[Member], deadline: float) -> None:
    """Read whatever the clients receive until *deadline* (time.monotonic())."""
    pump([member.client for member in members], lambda: time.monotonic() >= deadline, timeout=10)


def test_500_joins_cost_each_member_a_bounded_number_of_frames(fanout_server: Server):
    """Every client sees all 500 members, with at most 50 presence frames each (one per window)."""
    raise_fd_limit(4 * CLIENTS)
    room = f"crowd-{uuid.uuid4().hex[:8]}"
    members: list[Member] = []
    started = time.monotonic()
    try:
        for first in range(0, CLIENTS, STEP):
            step_end = time.monotonic() + STEP_SECONDS
            for n in range(first, first + STEP):
                client = RawClient.connect(fanout_server.port, f"/resume-room/{room}/?name=c{n}")
                members.append(Member(client))
            read_until(members, step_end)
        joined = time.monotonic() - started

        def everyone_sees_everyone() -> bool:
            for member in members:
                member.update()
            return all(len(member.members) == CLIENTS for member in members)

        try:
            pump([member.client for member in members], everyone_sees_everyone, timeout=30)
        except AssertionError:
            counts = sorted(len(member.members) for member in members)
            raise AssertionError(f"member counts seen: min {counts[0]}, max {counts[-1]}") from None
        names = {f"c{n}" for n in range(CLIENTS)}
        for member in members:
            assert {m["name"] for m in member.members.values()} == names
        frames = sorted(member.presence_frames for member in members)
        print(
            f"{CLIENTS} clients joined in {joined:.1f} s; presence frames per client: "
            f"min {frames[0]}, median {frames[len(frames) // 2]}, max {frames[-1]}, "
            f"total {sum(frames)} (one frame per join would be {CLIENTS * (CLIENTS + 1) // 2})"
        )
        # One frame per batch window while others join: 50 for joins over about two seconds, as
        # specified; on a loaded machine the joins take longer, and so more windows.
        windows = (joined + 1.0) / PRESENCE_BATCH
        assert frames[-1] <= max(MAX_PRESENCE_FRAMES, windows)
    finally:
        for member in members:
            member.client.sock.close()
