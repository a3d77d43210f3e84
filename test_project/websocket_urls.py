"""Websocket endpoints (``WEBSOCKET_URLCONF``), resolved by Django's URL resolver."""

from django.urls import path

from . import (
    converters,  # noqa: F401  (registers <room:...>)
    notifications,
    ops,
    websocket_views,
)

urlpatterns = [
    path("echo/", websocket_views.echo, name="echo"),
    path("ping/", websocket_views.ping, name="ping"),
    path("whoami/", websocket_views.whoami, name="whoami"),
    path("broadcast/<room:room>/", websocket_views.broadcast, name="broadcast"),
    path("chat/<room:room>/", websocket_views.chat, name="chat"),
    path("notifications/", notifications.notifications_socket, name="notifications"),
    path("ops/", ops.ops_socket, name="ops"),
]
