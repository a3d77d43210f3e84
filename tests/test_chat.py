"""The chat and broadcast demos of ``test_project``, in-process on the embedded broker.

Sockets are opened with ``django_websocket.testing.WebSocketClient`` inside a
``TestCase``, so the websocket views see the test's database transaction; pages
and the announcement view go through Django's test ``Client``. The embedded broker's
history and presence live as long as the process: tests that resume or count members
use a room of their own.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from unittest import mock
from urllib.parse import urlencode

from django.contrib.auth.models import User
from django.test import Client, TestCase, override_settings
from django.urls import reverse

from django_websocket import last_id, publish
from django_websocket.acks import send_frame
from django_websocket.brokers import get_broker, get_hub
from django_websocket.exceptions import PublishError
from django_websocket.publishing import presence
from django_websocket.testing import HandshakeRejected, WebSocketClient
from test_project import chat as chat_rules
from test_project import views
from test_project.models import Message, Room

VALID = {"handle": "alice", "message": "hello, room", "color": "#1f4e8c"}
ANNOUNCEMENT = {"type": "announcement", "message": "closing at six", "timestamp": "2024-05-01T18:00:00Z"}
#: The resume protocol's frames about who is in the room.
PRESENCE_FRAMES = {"presence", "presence_diff", "join", "leave"}


def since(channel: str, message_id: str) -> str:
    """The query string with which a client resumes *channel* after *message_id*."""
    return "?" + urlencode({"since": f"{channel}@{message_id}"})


def run_at_once(func, using=None, robust=False):
    """``transaction.on_commit`` for a ``TestCase``, whose transaction never commits."""
    func()


class SocketTestCase(TestCase):
    def setUp(self) -> None:
        super().setUp()
        # The chat publishes on commit; inside the test's transaction nothing ever commits,
        # so callbacks run when registered (test_publishing proves the real commit semantics).
        patcher = mock.patch("django.db.transaction.on_commit", run_at_once)
        patcher.start()
        self.addCleanup(patcher.stop)

    def open(self, path: str):
        """Connect to *path*; the connection is closed when the test ends."""
        websocket = WebSocketClient().connect(path)
        self.addCleanup(websocket.close)
        return websocket

    def join_chat(self, room: str = "lobby", query: str = ""):
        """Open the chat socket of *room*, once its view is subscribed (the hub said so)."""
        websocket = self.open(f"/chat/{room}/{query}")
        self.until_subscribed(websocket)
        return websocket

    def until_subscribed(self, websocket) -> list[dict]:
        """The frames *websocket* receives until its "subscribed" and "presence" frames, both included."""
        frames = [websocket.receive_json()]
        while not {"subscribed", "presence"} <= {frame.get("ws") for frame in frames}:
            frames.append(websocket.receive_json())
        return frames

    def presence_changes(self, websocket, joined: set[str] = frozenset(), left: set[str] = frozenset()):
        """``(joins, leaves)``: members of the "presence_diff" frames read until those names were seen."""
        joins: list[dict] = []
        leaves: list[dict] = []
        while not (joined <= {m["name"] for m in joins} and left <= {m["name"] for m in leaves}):
            frame = websocket.receive_json()
            self.assertEqual(frame["ws"], "presence_diff", frame)
            joins += frame["joins"]
            leaves += frame["leaves"]
        return joins, leaves

    def receive_chat(self, websocket):
        """The next chat event on *websocket*: a channel message's data, or what the view sent.

        Other members' comings and goings are skipped.
        """
        while True:
            frame = websocket.receive_json()
            if frame.get("ws") == "message":
                return frame["data"]
            if frame.get("ws") not in PRESENCE_FRAMES:
                return frame

    def receive_frame(self, websocket) -> dict:
        """The next frame on *websocket* that is not about presence."""
        while True:
            frame = websocket.receive_json()
            if frame.get("ws") not in PRESENCE_FRAMES:
                return frame

    def join_broadcast(self, room: str, name: str):
        """Open the broadcast socket of *room*, once its view is subscribed.

        The sync point is "<name> joined" coming back: the view subscribes before it
        reads, so its own first message is proof (earlier members get it too).
        """
        websocket = self.open(f"/broadcast/{room}/")
        websocket.send(f"{name} joined")
        self.assertEqual(websocket.receive(), f"{name} joined")
        return websocket

    def assert_silent(self, websocket, timeout: float = 0.2) -> None:
        """Nothing but presence frames (batched, they may still come) arrives within *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = json.loads(websocket.receive(timeout=remaining))
            except TimeoutError:
                return
            self.assertIn(frame.get("ws"), PRESENCE_FRAMES, frame)


@override_settings(WEBSOCKET_REDIS_URL=None)
class ChatSocketTests(SocketTestCase):
    def test_valid_message_is_stored_and_reaches_every_member(self):
        """A valid message is stored, then sent to every socket in the room, the sender included."""
        alice = self.join_chat()
        bob = self.join_chat()
        alice.send_json(VALID)
        received = [self.receive_chat(alice), self.receive_chat(bob)]
        stored = Message.objects.get()
        self.assertEqual(received[0], received[1])
        event = received[0]
        self.assertEqual(
            {key: event[key] for key in ("type", "id", "handle", "message", "color")},
            {"type": "message", "id": stored.pk, **VALID},
        )
        self.assertEqual(datetime.fromisoformat(event["timestamp"]), stored.created)
        self.assertEqual((stored.room.name, stored.handle, stored.message), ("lobby", "alice", "hello, room"))

    def test_messages_stay_in_their_room(self):
        """A message reaches its own room only."""
        lobby = self.join_chat("lobby")
        kitchen = self.join_chat("kitchen")
        kitchen.send_json({**VALID, "message": "in the kitchen"})
        self.assertEqual(self.receive_chat(kitchen)["message"], "in the kitchen")
        lobby.send_json({**VALID, "message": "in the lobby"})
        self.assertEqual(self.receive_chat(lobby)["message"], "in the lobby")
        self.assert_silent(kitchen)

    def test_bad_input_gets_an_error_reply_and_the_connection_stays_usable(self):
        """Each kind of bad input gets {"type": "error"} to the sender only; nothing is stored."""
        sender = self.join_chat()
        other = self.join_chat()
        bad_inputs = [
            "not json",
            b'{"handle": "binary", "message": "frames", "color": "#000000"}',
            "[1, 2]",
            "null",
            json.dumps({"message": "no handle", "color": "#000000"}),
            json.dumps({**VALID, "handle": 7}),
            json.dumps({**VALID, "message": ["a", "list"]}),
            json.dumps({**VALID, "color": None}),
            json.dumps({**VALID, "handle": ""}),
            json.dumps({**VALID, "handle": "   "}),
            json.dumps({**VALID, "handle": "h" * 51}),
            json.dumps({**VALID, "message": ""}),
            json.dumps({**VALID, "message": "m" * 2001}),
            json.dumps({**VALID, "color": "red"}),
            json.dumps({**VALID, "color": "#12345"}),
            json.dumps({**VALID, "color": "#1234567"}),
            json.dumps({**VALID, "color": "#12345g"}),
            json.dumps({**VALID, "color": "#123456\n"}),
        ]
        for data in bad_inputs:
            with self.subTest(data=data[:60]):
                sender.send(data)
                reply = self.receive_chat(sender)
                self.assertEqual(reply["type"], "error")
                self.assertIsInstance(reply["error"], str)
                self.assertTrue(reply["error"])
        self.assertFalse(Message.objects.exists())
        sender.send_json({**VALID, "handle": "h" * 50, "message": "m" * 2000, "color": "#ABCdef"})
        self.assertEqual(self.receive_chat(sender)["type"], "message")
        self.assertEqual(self.receive_chat(other)["handle"], "h" * 50)  # the errors never reached it
        self.assertEqual(Message.objects.count(), 1)

    def test_acknowledged_message_is_stored_once_and_a_resend_is_acknowledged_again(self):
        """A send frame is stored with its id, published, acked; a resend with its id is acked, not stored."""
        alice = self.join_chat("acked")
        bob = self.join_chat("acked")
        frame = send_frame("page-1", json.dumps(VALID))
        alice.send(frame)
        answers = [self.receive_frame(alice), self.receive_frame(alice)]
        self.assertIn({"ws": "ack", "id": "page-1"}, answers)
        self.assertEqual(self.receive_chat(bob)["message"], VALID["message"])
        alice.send(frame)  # the ack was lost: the page resends on its next connection
        self.assertEqual(self.receive_frame(alice), {"ws": "ack", "id": "page-1"})
        self.assert_silent(bob)
        self.assertEqual(Message.objects.get().client_id, "page-1")

    def test_acknowledged_bad_message_gets_a_nack_and_is_not_stored(self):
        """Invalid input sent with an id is refused with a nack naming the problem."""
        alice = self.join_chat("acked")
        alice.send(send_frame("page-2", json.dumps({**VALID, "color": "red"})))
        frame = self.receive_frame(alice)
        self.assertEqual((frame["ws"], frame["id"]), ("nack", "page-2"))
        self.assertIn("color", frame["error"])
        self.assertFalse(Message.objects.exists())

    def test_post_message_with_a_client_id_stores_it_once_even_when_two_workers_race(self):
        """A second post of an id returns the first row; so does one that loses the race at the constraint."""
        room = Room.objects.create(name="race")
        first = chat_rules.post_message(room, **VALID, client_id="page-9")
        self.assertEqual(chat_rules.post_message(room, **VALID, client_id="page-9"), first)
        unseen = mock.Mock(**{"first.return_value": None})  # the other worker's row not visible yet
        with mock.patch.object(type(Message.objects), "filter", return_value=unseen):
            self.assertEqual(chat_rules.post_message(room, **VALID, client_id="page-9"), first)
        self.assertEqual(Message.objects.count(), 1)

    def test_published_announcement_reaches_members(self):
        """publish() from Django code reaches every member of the room, unchanged, with its id."""
        first = self.join_chat()
        second = self.join_chat()
        elsewhere = self.join_chat("elsewhere")
        message_id = publish("chat:lobby", ANNOUNCEMENT)
        self.assertEqual(message_id.receivers, 2)
        expected = {"ws": "message", "channel": "chat:lobby", "id": message_id, "data": ANNOUNCEMENT}
        for member in (first, second):
            self.assertEqual(self.receive_frame(member), expected)
        self.assert_silent(elsewhere)

    def test_resync_tells_the_client_to_reload(self):
        """A Resync the hub could not recover from (no history) makes the socket send {"type": "resync"}."""
        websocket = self.join_chat()
        get_hub().resync([get_broker().options.key("chat:lobby")])
        self.assertEqual(websocket.receive_json(), {"type": "resync"})
        websocket.send_json(VALID)
        self.assertEqual(self.receive_chat(websocket)["type"], "message")

    def test_socket_resumes_after_the_id_it_names(self):
        """?since=chat:<room>@<id>: what came after, once and in order, then "subscribed", then live."""
        channel = "chat:resume-after"
        ids = [publish(channel, {**ANNOUNCEMENT, "message": f"m{number}"}) for number in range(3)]
        websocket = self.open("/chat/resume-after/" + since(channel, ids[0]))
        frames = self.until_subscribed(websocket)
        kinds = [frame["ws"] for frame in frames]
        self.assertEqual(kinds[:3], ["message", "message", "subscribed"])
        self.assertEqual(
            [(frame["id"], frame["data"]["message"]) for frame in frames[:2]],
            [(ids[1], "m1"), (ids[2], "m2")],
        )
        self.assertEqual(frames[2], {"ws": "subscribed", "channel": channel, "id": ids[2], "replayed": 2})
        websocket.send_json(VALID)
        live = websocket.receive_json()
        self.assertEqual((live["ws"], live["data"]["message"]), ("message", VALID["message"]))
        self.assertEqual(live["id"], last_id(channel))

    def test_socket_without_since_gets_live_messages_only(self):
        """No since: nothing is replayed; "subscribed" names the channel's newest id."""
        channel = "chat:resume-live"
        newest = publish(channel, ANNOUNCEMENT)
        frames = self.until_subscribed(self.open("/chat/resume-live/"))
        self.assertNotIn("message", [frame["ws"] for frame in frames])
        self.assertIn({"ws": "subscribed", "channel": channel, "id": newest, "replayed": 0}, frames)

    @override_settings(WEBSOCKET_HISTORY_SIZE=2)
    def test_socket_gets_a_gap_when_its_id_is_gone(self):
        """An id trimmed from the history (or malformed) gets a gap frame: the page reloads messages.json."""
        channel = "chat:resume-gap"
        ids = [publish(channel, {**ANNOUNCEMENT, "message": f"m{number}"}) for number in range(4)]
        for position in (ids[0], "not-an-id"):
            with self.subTest(since=position):
                frames = self.until_subscribed(self.open("/chat/resume-gap/" + since(channel, position)))
                self.assertEqual(frames[0], {"ws": "gap", "channel": channel, "id": ids[-1]})
                self.assertNotIn("message", [frame["ws"] for frame in frames])

    def test_presence_names_the_handle_else_the_username(self):
        """Members are listed by a valid ?handle=, else username ("anonymous"); joins and leaves are sent."""
        channel = "chat:presence-names"
        alice = self.open("/chat/presence-names/?handle=%20alice%20")
        [listed] = [frame for frame in self.until_subscribed(alice) if frame["ws"] == "presence"]
        self.assertEqual([(m["user"], m["name"]) for m in listed["members"]], [(None, "alice")])

        guest = self.join_chat("presence-names", "?" + urlencode({"handle": "h" * 51}))
        client = WebSocketClient()
        carol = User.objects.create_user("carol")
        client.force_login(carol)
        logged_in = client.connect("/chat/presence-names/")
        self.addCleanup(logged_in.close)
        self.until_subscribed(logged_in)
        joins, _ = self.presence_changes(alice, joined={"anonymous", "carol"})
        others = [member for member in joins if member["name"] != "alice"]  # its own join may come too
        self.assertEqual(
            sorted((member["name"], member["user"] or 0) for member in others),
            [("anonymous", 0), ("carol", carol.pk)],
        )
        self.assertEqual(
            presence(channel),
            [
                {"user": None, "name": "alice", "connections": 1},
                {"user": None, "name": "anonymous", "connections": 1},
                {"user": carol.pk, "name": "carol", "connections": 1},
            ],
        )
        guest.close()
        _, leaves = self.presence_changes(alice, left={"anonymous"})
        self.assertEqual(leaves, [next(member for member in others if member["name"] == "anonymous")])

    def test_room_is_created_by_the_socket_too(self):
        """A socket opened on a new room creates it, so its messages can be stored."""
        self.join_chat("brand-new")
        self.assertTrue(Room.objects.filter(name="brand-new").exists())

    def test_room_name_must_be_a_short_slug(self):
        """A room name that is not a slug of at most 50 characters is a 404 before the accept."""
        for path in ("/chat/" + "r" * 51 + "/", "/chat/no%20spaces/", "/chat/dots.no/"):
            with self.subTest(path=path), self.assertRaises(HandshakeRejected) as refused:
                WebSocketClient().connect(path)
            self.assertEqual(refused.exception.status, 404)


@override_settings(WEBSOCKET_REDIS_URL=None)
class ChatPageTests(SocketTestCase):
    def test_room_page_creates_the_room_and_shows_the_last_50_messages(self):
        """The room page shows the last 50 messages, oldest first, escaped; and connects the socket."""
        room = Room.objects.create(name="lobby")
        for number in range(55):
            Message.objects.create(room=room, handle="bob", message=f"message {number:02}", color="#000000")
        Message.objects.create(room=room, handle="<b>eve</b>", message="<script>alert(1)</script>")
        response = self.client.get("/chat/lobby/")
        self.assertEqual(response.status_code, 200)
        history = response.context["history"]
        self.assertEqual(len(history), 50)
        self.assertEqual(history[0].message, "message 06")
        self.assertEqual(history[-1].handle, "<b>eve</b>")
        content = response.content.decode()
        self.assertNotIn("message 05", content)
        self.assertLess(content.index("message 06"), content.index("message 54"))
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", content)
        self.assertNotIn("<b>eve</b>", content)
        self.assertIn('"ws://testserver/chat/lobby/"', content)
        self.assertIn("/static/django_websocket/websocket.js", content)

        self.client.get("/chat/new-room/")
        self.assertTrue(Room.objects.filter(name="new-room").exists())

    def test_room_page_hands_the_position_read_before_its_messages_to_the_socket(self):
        """A message posted between the position read and the page's query is rendered and replayed.

        The page then keeps one copy, by the message's database id; none falls in neither.
        """
        room = Room.objects.create(name="page-position")
        channel = "chat:page-position"
        position = publish(channel, ANNOUNCEMENT)
        real_last_id = views.last_id

        def last_id_then_a_message(name):
            read = real_last_id(name)
            chat_rules.post_message(room, "bob", "in between", "#000000")
            return read

        with mock.patch.object(views, "last_id", side_effect=last_id_then_a_message):
            response = self.client.get("/chat/page-position/")
        self.assertEqual(response.context["since"], {channel: position})
        self.assertContains(
            response, f'<script id="chat-since" type="application/json">{{"{channel}": "{position}"}}'
        )
        self.assertContains(
            response, '<script id="chat-channel" type="application/json">"chat:page-position"'
        )
        self.assertContains(response, "in between")
        frames = self.until_subscribed(self.open("/chat/page-position/" + since(channel, position)))
        [replayed] = [frame["data"] for frame in frames if frame["ws"] == "message"]
        self.assertEqual(replayed, Message.objects.get(message="in between").as_event())

    def test_room_page_renders_without_a_position_when_the_broker_is_down(self):
        """last_id() failing (Redis unreachable) still renders the page, with no position to resume from."""
        with mock.patch.object(views, "last_id", side_effect=PublishError("Redis is unreachable")):
            response = self.client.get("/chat/lobby/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.context["since"], {})
        self.assertContains(response, '<script id="chat-since" type="application/json">{}</script>')

    def test_chat_index_lists_rooms_and_opens_one(self):
        """/chat/ lists rooms; its form redirects to a room, or says what is wrong with the name."""
        Room.objects.create(name="kitchen")
        response = self.client.get("/chat/")
        self.assertContains(response, 'href="/chat/kitchen/"')
        self.assertRedirects(self.client.get("/chat/", {"room": "garden"}), "/chat/garden/")
        self.assertContains(self.client.get("/chat/", {"room": "not a slug"}), 'id="room-error"')

    def test_messages_json_returns_the_last_50_oldest_first(self):
        """messages.json: the room's last 50 messages, oldest first, as the socket sends them."""
        room = Room.objects.create(name="lobby")
        other = Room.objects.create(name="other")
        created = [
            Message.objects.create(room=room, handle="bob", message=f"m{number}", color="#00ff00")
            for number in range(60)
        ]
        Message.objects.create(room=other, handle="bob", message="not here")
        response = self.client.get(reverse("chat-messages", args=["lobby"]))
        self.assertEqual(response.status_code, 200)
        data = response.json()
        self.assertEqual(data["room"], "lobby")
        self.assertEqual([message["id"] for message in data["messages"]], [m.pk for m in created[10:]])
        self.assertEqual(data["messages"][-1], created[-1].as_event())
        self.assertEqual(data["messages"][-1]["type"], "message")
        self.assertEqual(self.client.get("/chat/nobody-here/messages.json").json()["messages"], [])

    def test_index_links_every_demo(self):
        """The index page links the old demos and the new ones."""
        response = self.client.get("/")
        for path in ("/echo/", "/ping/", "/whoami/", "/broadcast/lobby/", "/chat/"):
            self.assertContains(response, f'href="{path}"')


@override_settings(WEBSOCKET_REDIS_URL=None)
class AnnounceViewTests(SocketTestCase):
    def setUp(self):
        Room.objects.create(name="lobby")
        self.url = reverse("chat-announce", args=["lobby"])

    def test_fetch_post_publishes_and_answers_json(self):
        """A POST asking for JSON publishes the announcement and returns how many got it, and its id."""
        members = [self.join_chat(), self.join_chat()]
        response = self.client.post(
            self.url, {"message": "<b>cake</b> in the kitchen"}, HTTP_ACCEPT="application/json"
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"delivered": 2, "id": last_id("chat:lobby")})
        for member in members:
            event = self.receive_chat(member)
            self.assertEqual(
                (event["type"], event["message"]), ("announcement", "<b>cake</b> in the kitchen")
            )
            datetime.fromisoformat(event["timestamp"])

    def test_form_post_redirects_back_to_the_room(self):
        """A plain form post publishes, then redirects to the room page."""
        member = self.join_chat()
        response = self.client.post(self.url, {"message": "hello from a form"})
        self.assertRedirects(response, "/chat/lobby/")
        self.assertEqual(self.receive_chat(member)["message"], "hello from a form")

    def test_bad_requests(self):
        """No message: 400; unknown room: 404; GET: 405; nothing is published."""
        member = self.join_chat()
        self.assertEqual(self.client.post(self.url, {}).status_code, 400)
        self.assertEqual(
            self.client.post(self.url, {"message": ""}, HTTP_ACCEPT="application/json").status_code, 400
        )
        self.assertEqual(self.client.post(self.url, {"message": "x" * 2001}).status_code, 400)
        self.assertEqual(self.client.post("/chat/nowhere/announce/", {"message": "hi"}).status_code, 404)
        self.assertEqual(self.client.get(self.url).status_code, 405)
        self.assert_silent(member)

    def test_csrf_is_enforced(self):
        """Without the CSRF token the announcement is refused with 403."""
        client = Client(enforce_csrf_checks=True)
        self.assertEqual(client.post(self.url, {"message": "forged"}).status_code, 403)


@override_settings(WEBSOCKET_REDIS_URL=None)
class BroadcastTests(SocketTestCase):
    def join_two(self, room: str = "lobby"):
        """Alice and Bob in *room*, with Bob's arrival already read by Alice."""
        alice = self.join_broadcast(room, "alice")
        bob = self.join_broadcast(room, "bob")
        self.assertEqual(alice.receive(), "bob joined")
        return alice, bob

    def test_text_reaches_every_member_unchanged(self):
        """A text message reaches every member, the sender included, exactly as sent."""
        alice, bob = self.join_two()
        text = '  héllo {"not": "parsed"} ✓\n'
        alice.send(text)
        self.assertEqual(alice.receive(), text)
        self.assertEqual(bob.receive(), text)

    def test_binary_from_a_client_is_ignored(self):
        """Binary messages from a member are dropped; the text after them still goes out."""
        alice, bob = self.join_two()
        alice.send(b"\x00\x01binary")
        alice.send("after the binary")
        self.assertEqual(bob.receive(), "after the binary")
        self.assertEqual(alice.receive(), "after the binary")

    def test_publish_reaches_members(self):
        """publish() to broadcast:<room> reaches every member; bytes arrive as a binary frame."""
        alice, bob = self.join_two()
        self.assertEqual(publish("broadcast:lobby", "from django").receivers, 2)
        publish("broadcast:lobby", b"\xff\x00")
        for member in (alice, bob):
            self.assertEqual(member.receive(), "from django")
            self.assertEqual(member.receive(), b"\xff\x00")

    def test_rooms_are_separate(self):
        """A message sent in one room does not reach another."""
        lobby = self.join_broadcast("lobby", "alice")
        garden = self.join_broadcast("garden", "bob")
        lobby.send("lobby only")
        self.assertEqual(lobby.receive(), "lobby only")
        self.assert_silent(garden)

    def test_page(self):
        """The broadcast page connects to its room's socket."""
        response = self.client.get("/broadcast/lobby/")
        self.assertContains(response, '"ws://testserver/broadcast/lobby/"')
