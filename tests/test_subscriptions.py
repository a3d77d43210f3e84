"""django_websocket.subscriptions through the in-process client, on the embedded broker."""

from __future__ import annotations

import gevent
import pytest
from django.contrib.auth.models import User
from django.test import TestCase, override_settings

from django_websocket import publish
from django_websocket.exceptions import ConnectionClosedError
from django_websocket.hub import get_hub
from django_websocket.testing import WebSocketClient


@override_settings(WEBSOCKET_REDIS_URL=None)
class SubscriptionTests(TestCase):
    def setUp(self):
        self.client = WebSocketClient()

    def open(self, path):
        websocket = self.client.connect(path)
        self.addCleanup(websocket.close)
        return websocket

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
        assert publish("room:leave", "lost") == 0
        websocket.send("still here")
        assert websocket.receive_json() == {"kind": "client", "data": "still here"}

    def test_subscriptions_end_with_the_view(self):
        """When the socket closes, its mailboxes leave the hub."""
        websocket = self.client.connect("/event-log/gone/")
        websocket.receive_json()
        assert publish("room:gone", "x") == 1
        websocket.close()
        with gevent.Timeout(3):
            while publish("room:gone", "x"):
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
        assert publish("room:aud", "for hank", user=user) == 1
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
            while publish("room:f3", "x"):
                gevent.sleep(0.01)  # the closed socket leaves the hub
