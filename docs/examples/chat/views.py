"""The tutorial's chat: a page per room, and the websocket its page opens."""

import json

from django.shortcuts import render

from django_websocket import publish
from django_websocket.decorators import websocket


def room_page(request, room_name):
    """The room's page: it loads websocket.js and connects to :func:`room`."""
    return render(request, "chat/room.html", {"room_name": room_name})


@websocket
def room(request, websocket, room_name):
    """Relay the room: what any member sends, every member (the sender too) receives."""
    channel = f"chat:{room_name}"
    # The hub sends the channel's messages straight to this client; returns once subscribed.
    websocket.subscribe(channel, forward=True)
    for message in websocket:  # what this client sends, until it leaves
        try:
            data = json.loads(message)
            name, text = str(data["name"])[:40], str(data["text"])[:1000]
        except (TypeError, ValueError, KeyError):
            continue  # not a chat message: ignore it rather than end the connection
        if text.strip():
            # Publish a new dict, not the client's JSON: members receive only these two keys.
            publish(channel, {"name": name, "text": text})
