"""The ``<room:...>`` path converter, shared by the page and websocket URLconfs.

A room name is a slug of at most 50 characters (``Room.name``); anything else is a
404 when the URL is resolved, before any view (or websocket accept) runs.
"""

from django.urls import register_converter


class RoomNameConverter:
    regex = "[-a-zA-Z0-9_]{1,50}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(RoomNameConverter, "room")
