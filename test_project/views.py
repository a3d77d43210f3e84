"""HTTP pages of the demo: each one opens the socket at its own path."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from django_websocket import last_id
from django_websocket.exceptions import PublishError
from django_websocket.tokens import websocket_token

from . import chat as chat_rules
from .models import HISTORY_LENGTH, MESSAGE_MAX_LENGTH, Message, Room

DEMOS = [
    ("echo", (), "Echo", "Replies with whatever you send it."),
    ("ping", (), "Ping", 'Answers "pong" to "ping" and "ping" to "pong"; anything else gets no reply.'),
    ("whoami", (), "Who am I", "Sends your username (the socket requires a login)."),
    ("broadcast", ("lobby",), "Broadcast", "Every message reaches everyone on the page, through a channel."),
    ("chat-index", (), "Chat", "Rooms with a history, colours, and announcements from an HTTP view."),
    (
        "notifications",
        (),
        "Notifications",
        "What the site publishes for you (requires a login; publish from manage.py shell, see the README).",
    ),
]


@login_required
def socket_token(request):
    """A token that opens sockets as the logged-in user, for a client without the session cookie."""
    return JsonResponse({"token": websocket_token(request.user)})


def index(request):
    demos = [(reverse(name, args=args), title, description) for name, args, title, description in DEMOS]
    return render(request, "index.html", {"demos": demos})


def echo(request):
    return render(request, "echo.html")


def ping(request):
    return render(request, "ping.html")


def whoami(request):
    return render(request, "whoami.html")


def broadcast(request, room):
    return render(request, "broadcast.html", {"room": room})


class RoomForm(forms.Form):
    room = forms.SlugField(max_length=50, label="Room")


class AnnouncementForm(forms.Form):
    message = forms.CharField(max_length=MESSAGE_MAX_LENGTH, strip=False)


def chat_index(request):
    """The rooms, and a form (``?room=name``) to open one."""
    form = RoomForm(request.GET or None)
    if form.is_valid():
        return redirect("chat-room", form.cleaned_data["room"])
    return render(request, "chat/index.html", {"form": form, "rooms": Room.objects.all()})


def chat_room(request, room):
    """The room page: the last messages from the database; the socket brings the rest.

    The channel's position is read *before* the messages: a message posted in between is
    both rendered and replayed (the page keeps one copy, by id), none is in neither. The
    page's socket resumes from that position.
    """
    room, _ = Room.objects.get_or_create(name=room)
    channel = chat_rules.channel(room.name)
    try:
        since = {channel: last_id(channel)}
    except PublishError:
        since = {}  # no broker now: the page reloads messages.json once connected
    return render(
        request,
        "chat/room.html",
        {"room": room, "history": room.recent_messages(), "channel": channel, "since": since},
    )


@require_GET
def chat_messages(request, room):
    """``{"room": name, "messages": [...]}``: the last messages, oldest first (none for an unknown room)."""
    latest = Message.objects.filter(room__name=room).order_by("-created", "-id")[:HISTORY_LENGTH]
    return JsonResponse({"room": room, "messages": [message.as_event() for message in reversed(latest)]})


@require_POST
def chat_announce(request, room):
    """Publish the POSTed ``message`` to the room from an ordinary view (CSRF-protected).

    Answers JSON ``{"delivered": n, "id": message_id}`` to ``fetch()`` (``Accept: application/json``);
    a plain form post is redirected back to the room.
    """
    room = get_object_or_404(Room, name=room)
    form = AnnouncementForm(request.POST)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not form.is_valid():
        if wants_json:
            return JsonResponse({"errors": form.errors}, status=400)
        return HttpResponseBadRequest(
            f"An announcement needs a message of 1 to {MESSAGE_MAX_LENGTH} characters."
        )
    try:
        published = chat_rules.announce(room.name, form.cleaned_data["message"])
    except PublishError:
        return JsonResponse({"error": "the message broker is unreachable"}, status=503)
    if wants_json:
        return JsonResponse({"delivered": published.receivers, "id": str(published)})
    return redirect("chat-room", room.name)
