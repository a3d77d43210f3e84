"""Notifications for the logged-in user: a page, and the socket it opens (README.md shows this file)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from django_websocket.decorators import websocket


@login_required
def notifications_page(request):
    """The page; its script connects to ``notifications_socket``."""
    return render(request, "notifications.html")


@login_required  # anonymous: a redirect to the login page, no upgrade
@websocket
def notifications_socket(request, websocket):
    """Relay to the page what is published to "notifications" for everyone or for this user."""
    websocket.subscribe("notifications", forward=True)  # also gets publish(..., user=request.user)
    for _ in websocket:  # the page sends nothing: wait until it is closed
        pass
