"""The chat demo's data: rooms, and the messages posted in them."""

from __future__ import annotations

from typing import Any

from django.db import models

#: Longest handle and message, as the chat page and the websocket view enforce them.
HANDLE_MAX_LENGTH = 50
MESSAGE_MAX_LENGTH = 2000
#: How many messages a room page shows (and ``messages.json`` returns).
HISTORY_LENGTH = 50
#: Longest client id of an acknowledged message (``django_websocket.acks.MAX_ID_LENGTH``).
CLIENT_ID_MAX_LENGTH = 128


class Room(models.Model):
    """A chat room, created the first time someone opens ``/chat/<name>/``."""

    name = models.SlugField(max_length=50, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def recent_messages(self, count: int = HISTORY_LENGTH) -> list[Message]:
        """The last *count* messages, oldest first."""
        latest = self.messages.order_by("-created", "-id")[:count]
        return list(reversed(latest))


class Message(models.Model):
    """One chat message, as the client sent it (validated) and when it was stored."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    handle = models.CharField(max_length=HANDLE_MAX_LENGTH)
    message = models.TextField(max_length=MESSAGE_MAX_LENGTH)
    color = models.CharField(max_length=7, default="#000000")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    #: The page's id of the message (an acknowledged send), unique: a resend of it is not stored
    #: again. The row and the id are one write, so "processed" and "marked" cannot part ways.
    client_id = models.CharField(max_length=CLIENT_ID_MAX_LENGTH, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.handle}: {self.message[:40]}"

    def as_event(self) -> dict[str, Any]:
        """The JSON object the room's sockets and ``messages.json`` carry for this message."""
        return {
            "type": "message",
            "id": self.pk,
            "handle": self.handle,
            "message": self.message,
            "color": self.color,
            "timestamp": self.created.isoformat(),
        }
