"""django_websocket.messaging.subscriptions through the in-process client, on the embedded broker."""

from __future__ import annotations

from unittest import mock

import gevent
import pytest
from django.contrib.auth.models import User
from django.test import TestCase, override_settings

from django_websocket import publish
from django_websocket.brokers import get_broker, get_hub
from django_websocket.exceptions import ConnectionClosedError, PublishError
from django_websocket.testing import WebSocketClient


class ClientTestCase(TestCase):
    def setUp(self):
        self.client = WebSocketClient()

    def open(self, path):
        websocket = self.client.connect(path)
        self.addCleanup(websocket.close)
        return websocket


@override_settings(WEBSOCKET_REDIS_URL=None)
class SubscriptionTests(ClientTestCase):
    def test_client_and_channel_events_arrive_in_order(self):
        """Client messages and channel messages come out of one stream, in arrival order."""
        websocket = self.open("/event-log/order/")
        assert websocket.receive_json() == {"kind": "ready"}
        websocket.send("one")
        assert websocket.receive_json() == {"kind": "client", "data": "one"}
        publish("room:order", "two")
        websocket.send("three")
        assert websocket.receive_json() == {"kind": "channel", "channel": "room:order", "data": "two"}
        assert websocket.receive_json() == {"kind": "client", "data": "three"}

    def test_next_event_times_out_with_none(self):
        """next_event(timeout) returns None when nothing arrives."""
        websocket = self.open("/event-log/quiet/")
        websocket.receive_json()
        websocket.send("wait")
        assert websocket.receive_json() == {"kind": "timeout", "result": "None"}

    def test_unsubscribe_stops_channel_messages(self):
        """After unsubscribe() the socket gets nothing from the channel; the hub forgets it."""
        websocket = self.open("/event-log/leave/")
        websocket.receive_json()
        websocket.send("unsubscribe")
        assert websocket.receive_json() == {"kind": "client", "data": "unsubscribe"}
        assert publish("room:leave", "lost").receivers == 0
        websocket.send("still here")
        assert websocket.receive_json() == {"kind": "client", "data": "still here"}

    def test_subscriptions_end_with_the_view(self):
        """When the socket closes, its mailboxes leave the hub."""
        websocket = self.client.connect("/event-log/gone/")
        websocket.receive_json()
        assert publish("room:gone", "x").receivers == 1
        websocket.close()
        with gevent.Timeout(3):
            while publish("room:gone", "x").receivers:
                gevent.sleep(0.01)
        assert not any(key.endswith("room:gone") for key in get_hub().mailboxes)

    def test_user_audience_reaches_only_that_user(self):
        """publish(..., user=u) reaches u's sockets, not an anonymous one on the same channel."""
        user = User.objects.create(username="hank")
        mine = WebSocketClient()
        mine.force_login(user)
        hers = mine.connect("/event-log/aud/")
        self.addCleanup(hers.close)
        anonymous = self.open("/event-log/aud/")
        hers.receive_json()
        anonymous.receive_json()
        assert publish("room:aud", "for hank", user=user).receivers == 1
        assert hers.receive_json()["data"] == "for hank"
        publish("room:aud", "for all")
        assert anonymous.receive_json()["data"] == "for all"
        assert hers.receive_json()["data"] == "for all"

    @override_settings(WEBSOCKET_CHANNEL_QUEUE_SIZE=5)
    def test_slow_consumer_is_closed_1013_and_others_keep_receiving(self):
        """A socket whose view stops taking channel messages is closed 1013; the others are fine."""
        slow = self.client.connect("/lazy-room/slow/")
        assert slow.receive() == "ready"
        healthy = self.open("/event-log/slow/")
        healthy.receive_json()
        with self.assertLogs("django_websocket", "WARNING") as logs:
            for index in range(10):
                publish("room:slow", str(index))
                assert healthy.receive_json()["data"] == str(index)  # keeps up; the slow one does not
            with pytest.raises(ConnectionClosedError) as caught:
                slow.receive()
        assert caught.value.code == 1013
        assert "slow consumer" in "\n".join(logs.output)


@override_settings(WEBSOCKET_REDIS_URL=None)
class ForwardTests(TestCase):
    """subscribe(channel, forward=True): channel messages go straight to the client."""

    def test_forwarded_messages_arrive_unchanged_and_in_order(self):
        """Text and binary messages are relayed as published, in publish order."""
        client = WebSocketClient()
        websocket = client.connect("/forward-room/f1/")
        self.addCleanup(websocket.close)
        assert websocket.receive() == "ready"
        for index in range(50):
            publish("room:f1", f"m{index}")
        publish("room:f1", b"\x00bin")
        assert [websocket.receive() for _ in range(50)] == [f"m{index}" for index in range(50)]
        assert websocket.receive() == b"\x00bin"
        websocket.send("from client")
        assert websocket.receive() == "from client"

    def test_big_backlog_goes_through_the_outbox_whole(self):
        """Messages bigger than the socket buffer are queued and written whole, in order."""
        client = WebSocketClient()
        websocket = client.connect("/forward-room/f2/")
        self.addCleanup(websocket.close)
        assert websocket.receive() == "ready"
        big = [bytes([index]) * 300_000 for index in range(5)]
        for message in big:
            publish("room:f2", message)
        assert [websocket.receive(timeout=10) for _ in range(5)] == big

    @override_settings(WEBSOCKET_CHANNEL_QUEUE_SIZE=3)
    def test_forwarding_to_a_client_that_stopped_reading_closes_it_1013(self):
        """When the outbox passes the queue size, the socket is closed with 1013 and logged."""
        client = WebSocketClient()
        stalled = client.connect("/forward-room/f3/")
        assert stalled.receive() == "ready"
        with self.assertLogs("django_websocket", "WARNING") as logs:
            for _ in range(40):
                publish("room:f3", b"x" * 200_000)  # never read by the client: buffers fill up
                gevent.sleep(0)
        assert "slow consumer" in "\n".join(logs.output)
        with gevent.Timeout(5):
            while publish("room:f3", "x").receivers:
                gevent.sleep(0.01)  # the closed socket leaves the hub


@override_settings(WEBSOCKET_REDIS_URL=None)
class ResumeTests(ClientTestCase):
    """subscribe(resume=True / since=...) on the embedded broker: replay, seam, gap, presence."""

    def frames_until_subscribed(self, websocket):
        frames = []
        while True:
            frame = websocket.receive_json()
            frames.append(frame)
            if frame.get("ws") == "subscribed":
                return frames

    def test_fresh_subscription_gets_its_position_then_live_messages_with_ids(self):
        first = publish("room:r1", "before")
        websocket = self.open("/resume-room/r1/?name=ann")
        frames = self.frames_until_subscribed(websocket)
        assert frames == [{"ws": "subscribed", "channel": "room:r1", "id": first, "replayed": 0}]
        presence, diff = websocket.receive_json(), websocket.receive_json()
        assert presence["ws"] == "presence" and [m["name"] for m in presence["members"]] == ["ann"]
        own_join = {"ws": "presence_diff", "channel": "room:r1", "joins": presence["members"], "leaves": []}
        assert diff == own_join  # a listed connection: the client ignores it
        live = publish("room:r1", {"n": 1})
        assert websocket.receive_json() == {
            "ws": "message",
            "channel": "room:r1",
            "id": live,
            "data": {"n": 1},
        }
        text = publish("room:r1", 'a "quoted" text')
        assert websocket.receive_json()["data"] == 'a "quoted" text'
        binary = publish("room:r1", b"\x00\x01")
        assert websocket.receive_json() == {
            "ws": "message",
            "channel": "room:r1",
            "id": binary,
            "binary": True,
        }
        assert websocket.receive() == b"\x00\x01"
        assert text < binary

    def test_resume_replays_exactly_what_was_missed_in_order_then_live(self):
        seen = publish("room:r2", "seen")
        missed = [publish("room:r2", f"missed {n}") for n in range(5)]
        websocket = self.open(f"/resume-room/r2/?name=bo&since=room:r2@{seen}")
        frames = self.frames_until_subscribed(websocket)
        assert [(f["id"], f["data"]) for f in frames[:-1]] == [
            (i, f"missed {n}") for n, i in enumerate(missed)
        ]
        assert frames[-1] == {"ws": "subscribed", "channel": "room:r2", "id": missed[-1], "replayed": 5}
        websocket.receive_json(), websocket.receive_json()  # presence, own join
        live = publish("room:r2", "live")
        assert websocket.receive_json()["id"] == live

    def test_replay_and_live_meet_without_duplicate_or_gap(self):
        """Messages published while the replay is read are held, then delivered once, after it."""
        seen = publish("room:seam", "seen")
        publish("room:seam", "missed")
        broker = get_broker()
        read = broker.read
        published_meanwhile = []

        def read_while_publishing(channel, since):
            reading = read(channel, since)
            published_meanwhile.append(publish("room:seam", "during the replay"))  # after the read: live
            return reading

        with mock.patch.object(broker, "read", read_while_publishing):
            websocket = self.open(f"/resume-room/seam/?since=room:seam@{seen}")
            frames = self.frames_until_subscribed(websocket)
        assert [f["data"] for f in frames[:-1]] == ["missed"]
        after = [websocket.receive_json() for _ in range(3)]
        messages = [f for f in after if f["ws"] == "message"]
        assert [(m["id"], m["data"]) for m in messages] == [(published_meanwhile[0], "during the replay")]

    def test_a_trimmed_id_gets_a_gap_then_live_messages(self):
        with override_settings(WEBSOCKET_HISTORY_CHANNELS={"room:small": {"size": 3}}):
            old = publish("room:small", "old")
            ids = [publish("room:small", str(n)) for n in range(5)]
            websocket = self.open(f"/resume-room/small/?since=room:small@{old}")
            frames = self.frames_until_subscribed(websocket)
        assert frames == [
            {"ws": "gap", "channel": "room:small", "id": ids[-1]},
            {"ws": "subscribed", "channel": "room:small", "id": ids[-1], "replayed": 0},
        ]

    def refusing_reads(self, refusals: int):
        """The broker's history reads fail *refusals* times (as with no primary), then work."""
        broker = get_broker()
        read = broker.read
        refused = []

        def refuse_then_read(channel, position):
            if len(refused) < refusals:
                refused.append(position)
                raise PublishError("no primary for 'mymaster'")
            return read(channel, position)

        return mock.patch.object(broker, "read", side_effect=refuse_then_read), refused

    def test_a_history_refused_for_a_moment_is_read_again_not_a_gap(self):
        seen = publish("room:flap", "seen")
        missed = [publish("room:flap", f"missed {n}") for n in range(3)]
        refusing, refused = self.refusing_reads(2)
        with refusing:
            websocket = self.open(f"/resume-room/flap/?name=cy&since=room:flap@{seen}")
            frames = self.frames_until_subscribed(websocket)
        assert refused == [seen, seen]
        assert [(f["ws"], f["id"]) for f in frames] == [
            *[("message", i) for i in missed],
            ("subscribed", missed[-1]),
        ]

    @mock.patch("django_websocket.messaging.hub.RECOVERY_PATIENCE", 0.3)
    def test_a_history_refused_past_the_patience_is_a_gap_at_since(self):
        seen = publish("room:down", "seen")
        publish("room:down", "missed")
        refusing, refused = self.refusing_reads(1000)
        with refusing:
            websocket = self.open(f"/resume-room/down/?name=di&since=room:down@{seen}")
            frames = self.frames_until_subscribed(websocket)
        assert 2 <= len(refused) <= 4  # tried every RECOVERY_RETRY (0.1 s) for 0.3 s
        assert frames == [
            {"ws": "gap", "channel": "room:down", "id": seen},
            {"ws": "subscribed", "channel": "room:down", "id": seen, "replayed": 0},
        ]

    def test_events_get_ids_gaps_and_presence(self):
        seen = publish("room:ev", "seen")
        missed = publish("room:ev", "missed")
        websocket = self.open(f"/history-events/ev/?from={seen}&name=cy")
        assert websocket.receive_json() == {"kind": "ready"}
        assert websocket.receive_json() == {"kind": "message", "id": missed, "data": "missed"}
        own = [websocket.receive_json(), websocket.receive_json()]  # its own join may come first
        assert sorted(own, key=str) == [{"kind": "join", "name": "cy"}, {"kind": "presence", "names": ["cy"]}]
        other = self.open("/history-events/ev/?name=dee")
        assert other.receive_json() == {"kind": "ready"}
        assert websocket.receive_json() == {"kind": "join", "name": "dee"}
        other.close()
        assert websocket.receive_json() == {"kind": "leave", "name": "dee"}
        gap = self.open("/history-events/ev/?from=1-0")
        assert gap.receive_json() == {"kind": "ready"}
        assert gap.receive_json() == {"kind": "gap", "id": missed}


@override_settings(WEBSOCKET_REDIS_URL="redis://127.0.0.1:1/0")
class ResumeWithoutRedisTests(ClientTestCase):
    """Redis unreachable while a client resumes: a gap, never a crash."""

    @mock.patch("django_websocket.messaging.hub.SUBSCRIBE_TIMEOUT", 0.1)
    @mock.patch("django_websocket.messaging.hub.RECOVERY_PATIENCE", 0.2)
    def test_resume_with_redis_down_is_a_gap(self):
        for since in ("1-0", "garbage"):
            websocket = self.open(f"/history-events/down/?from={since}")
            assert websocket.receive_json() == {"kind": "ready"}
            assert websocket.receive_json() == {"kind": "gap", "id": "1-0" if since == "1-0" else "0-0"}
