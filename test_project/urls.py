"""HTTP pages (``ROOT_URLCONF``).

The demo pages live at the same paths as their sockets (``websocket_urls``):
the single-port application routes a request by its ``Upgrade`` header.
"""

from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("echo/", views.echo, name="echo"),
    path("ping/", views.ping, name="ping"),
    path("whoami/", views.whoami, name="whoami"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
