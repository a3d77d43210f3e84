"""HTTP pages (``ROOT_URLCONF``).

The demo pages live at the same paths as their sockets (``websocket_urls``):
the single-port application routes a request by its ``Upgrade`` header.
"""

from django.contrib import admin
from django.urls import include, path

from django_websocket.metrics import metrics_view

from . import (
    converters,  # noqa: F401  (registers <room:...>)
    notifications,
    ops,
    views,
)

urlpatterns = [
    path("", views.index, name="index"),
    path("echo/", views.echo, name="echo"),
    path("ping/", views.ping, name="ping"),
    path("whoami/", views.whoami, name="whoami"),
    path("broadcast/<room:room>/", views.broadcast, name="broadcast"),
    path("chat/", views.chat_index, name="chat-index"),
    path("chat/<room:room>/", views.chat_room, name="chat-room"),
    path("chat/<room:room>/messages.json", views.chat_messages, name="chat-messages"),
    path("chat/<room:room>/announce/", views.chat_announce, name="chat-announce"),
    path("notifications/", notifications.notifications_page, name="notifications"),
    path("ops/", ops.ops_page, name="ops"),
    path("socket-token/", views.socket_token, name="socket-token"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    # Prometheus metrics of every worker (docs/howto/metrics.md). It checks no permission: in
    # production, deny it at the proxy (the guide's nginx "location = /metrics") or scrape
    # gunicorn's port on a private address.
    path("metrics", metrics_view, name="metrics"),
]
