"""The chat's websocket views: ``settings.WEBSOCKET_URLCONF``."""

from django.urls import path

from . import views

urlpatterns = [
    path("ws/chat/<slug:room_name>/", views.room, name="chat-room"),
]
