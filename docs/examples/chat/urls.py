"""The chat's pages, under ``chat/`` in ``mysite.urls``."""

from django.urls import path

from . import views

urlpatterns = [
    path("<slug:room_name>/", views.room_page, name="chat-room-page"),
]
