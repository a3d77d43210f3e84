"""Websocket endpoints (``WEBSOCKET_URLCONF``), resolved by Django's URL resolver."""

from django.urls import path

from . import websocket_views

urlpatterns = [
    path("echo/", websocket_views.echo, name="echo"),
    path("ping/", websocket_views.ping, name="ping"),
    path("whoami/", websocket_views.whoami, name="whoami"),
]
