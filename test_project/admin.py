"""The chat demo's rooms and messages in Django's admin."""

from django.contrib import admin

from .models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "created"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "handle", "message", "created"]
    list_filter = ["room"]
