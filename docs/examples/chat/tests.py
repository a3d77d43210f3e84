"""Tests of the tutorial's chat, with django_websocket's in-process client: ``python manage.py test``."""

from django.test import TestCase

from django_websocket.testing import HandshakeRejected, WebSocketClient


class RoomTests(TestCase):
    def test_members_hear_each_other(self):
        client = WebSocketClient()  # no server: the view runs in this process and transaction
        with client.connect("/ws/chat/lobby/") as alice:
            alice.send_json({"name": "alice", "text": "hello?"})
            # Her own message back: the view has subscribed, so nothing later is missed.
            self.assertEqual(alice.receive_json(), {"name": "alice", "text": "hello?"})
            with client.connect("/ws/chat/lobby/") as bob:
                bob.send_json({"name": "bob", "text": "hi alice"})
                self.assertEqual(bob.receive_json(), {"name": "bob", "text": "hi alice"})
                self.assertEqual(alice.receive_json(), {"name": "bob", "text": "hi alice"})

    def test_other_origins_are_refused(self):
        with self.assertRaises(HandshakeRejected) as refused:
            WebSocketClient().connect("/ws/chat/lobby/", origin="https://evil.example")
        self.assertEqual(refused.exception.status, 403)

    def test_page_connects_to_its_room(self):
        response = self.client.get("/chat/lobby/")
        self.assertContains(response, 'new DjangoWebSocket("ws://testserver/ws/chat/lobby/"')
