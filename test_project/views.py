"""HTTP pages of the demo: each one opens the socket of the same name."""

from django.shortcuts import render

DEMOS = [
    ("echo", "Echo", "Replies with whatever you send it."),
    ("ping", "Ping", 'Answers "pong" to "ping" and "ping" to "pong"; anything else gets no reply.'),
    ("whoami", "Who am I", "Sends your username (the socket requires a login)."),
]


def index(request):
    return render(request, "index.html", {"demos": DEMOS})


def echo(request):
    return render(request, "echo.html")


def ping(request):
    return render(request, "ping.html")


def whoami(request):
    return render(request, "whoami.html")
