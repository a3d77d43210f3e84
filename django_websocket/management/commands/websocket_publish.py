"""``manage.py websocket_publish``: publish a message to a channel from the command line.

::

    python manage.py websocket_publish room:lobby "hello"
    python manage.py websocket_publish room:lobby '{"reload": true}' --json
    python manage.py websocket_publish notifications "for alice only" --user 1
    python manage.py websocket_publish notifications "editors" --group editors
    python manage.py websocket_publish notifications "this browser" --session 8f2…

Calls :func:`django_websocket.publish` and prints what it returns: with Redis, the
number of worker processes Redis delivered to; with the embedded broker (no Redis
configured), the number of sockets of *this* process — that is, 0. With ``-v 2`` the
message's id goes to stderr.
Exits with status 1 and the reason on stderr when Redis is unreachable.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_websocket import publish
from django_websocket.exceptions import PublishError


class Command(BaseCommand):
    help = (
        "Publishes MESSAGE to CHANNEL for every socket subscribed to it, or only those of a user, "
        "group or session; prints the number of receivers Redis reported."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("channel", help='Channel name, e.g. "room:lobby".')
        parser.add_argument("message", help="The message: text, unless --json or --binary.")
        encoding = parser.add_mutually_exclusive_group()
        encoding.add_argument(
            "--json",
            action="store_true",
            help="Parse MESSAGE as JSON first (it is sent as JSON text, re-encoded).",
        )
        encoding.add_argument(
            "--binary", action="store_true", help="Send MESSAGE as a binary message (UTF-8 bytes)."
        )
        # publish() takes at most one audience.
        audience = parser.add_mutually_exclusive_group()
        audience.add_argument("--user", metavar="PK", help="Only sockets of the user with this primary key.")
        audience.add_argument("--group", metavar="NAME", help="Only sockets of users in this auth group.")
        audience.add_argument("--session", metavar="KEY", help="Only sockets of this session.")

    def handle(self, *args: Any, **options: Any) -> None:
        message: Any = options["message"]
        if options["json"]:
            try:
                message = json.loads(message)
            except ValueError as error:
                raise CommandError(f"MESSAGE is not valid JSON: {error}") from None
        elif options["binary"]:
            message = message.encode()
        audience = {kind: options[kind] for kind in ("user", "group", "session") if options[kind] is not None}
        try:
            published = publish(options["channel"], message, **audience)
        except PublishError as error:
            raise CommandError(str(error)) from error
        except ValueError as error:  # a channel name publish() refuses
            raise CommandError(str(error)) from None
        self.stdout.write(str(published.receivers))
        if options["verbosity"] > 1:
            self.stderr.write(f"id {published or '(none: the channel keeps no history)'}")
