"""``manage.py websocket_publish``: publish a message to a channel from the command line.

::

    python manage.py websocket_publish room:lobby "hello"
    python manage.py websocket_publish room:lobby '{"reload": true}' --json
    python manage.py websocket_publish notifications "for alice only" --user alice
    python manage.py websocket_publish notifications "for user 1 only" --user 1
    python manage.py websocket_publish notifications "editors" --group editors
    python manage.py websocket_publish notifications "this browser" --session 8f2…

Calls :func:`django_websocket.publish` and prints what it returns on stdout, a number
alone on its line (for scripts): with Redis, the number of worker *processes* Redis
delivered to (not sockets: one process may hold many of them); with the embedded broker
(no Redis configured), the number of sockets of *this* process — that is, 0, since a
command is a process of its own. A sentence saying what the number means goes to stderr
(``-v 0`` leaves it out); with ``-v 2`` the message's id follows it.

``--user`` takes a username (the user model's ``USERNAME_FIELD``) or a primary key: a
value of digits only is looked up as a primary key first, then as a username; any other
value as a username first, then as a primary key (for UUID keys). A user that does not
exist is an error: nothing is published.

Exits with status 1 and the reason on stderr for an unknown user and when Redis is
unreachable.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from django_websocket import conf, publish
from django_websocket.exceptions import PublishError


def find_user(value: str) -> Any:
    """The user whose primary key or username is *value*; ``CommandError`` if there is none.

    Digits only: primary key first, then username. Anything else: username first, then
    primary key (a UUID, say).
    """
    model = get_user_model()
    manager = model._default_manager
    field = model.USERNAME_FIELD

    def by_pk() -> Any:
        try:
            return manager.filter(pk=value).first()
        except (ValueError, TypeError, ValidationError):  # not a valid value for the key's field
            return None

    def by_username() -> Any:
        return manager.filter(**{field: value}).first()

    lookups = (by_pk, by_username) if value.isdigit() else (by_username, by_pk)
    try:
        for lookup in lookups:
            user = lookup()
            if user is not None:
                return user
    except DatabaseError as error:
        raise CommandError(f"could not look up user {value!r}: {error}") from error
    raise CommandError(
        f"no user {value!r}: --user takes a username ({model.__name__}.{field}) or a primary key; "
        "nothing was published."
    )


def explain(receivers: int, embedded: bool) -> str:
    """A sentence saying what *receivers*, the number printed, means."""
    if embedded:
        return (
            f"{receivers}: sockets of this command's own process that received it. No Redis is "
            "configured (WEBSOCKET_REDIS_URL or the REDIS_URL environment variable), so the message "
            "went to this process's in-process broker: it reaches the site's sockets only through Redis."
        )
    processes = "worker process" if receivers == 1 else "worker processes"
    meaning = f"{receivers}: {processes} Redis delivered it to (processes, not sockets)."
    if receivers == 0:
        meaning += " Nobody is listening: no socket is subscribed to this channel (for this audience)."
    return meaning


class Command(BaseCommand):
    help = (
        "Publishes MESSAGE to CHANNEL for every socket subscribed to it, or only those of a user, "
        "group or session. Prints the number of receivers: with Redis, the worker processes Redis "
        "delivered to (not sockets); without Redis, the sockets of this command's own process, "
        "that is 0. A sentence saying so goes to stderr (-v 0: only the number)."
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
        audience.add_argument(
            "--user",
            metavar="USER",
            help=(
                "Only sockets of this user: a username or a primary key (digits only: the primary "
                "key first, then the username). An unknown user is an error."
            ),
        )
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
        if "user" in audience:
            audience["user"] = find_user(audience["user"])
        try:
            published = publish(options["channel"], message, **audience)
        except PublishError as error:
            raise CommandError(str(error)) from error
        except ValueError as error:  # a channel name publish() refuses
            raise CommandError(str(error)) from None
        assert published is not None  # only None with on_commit=True
        self.stdout.write(str(published.receivers))
        if options["verbosity"] > 0:
            self.stderr.write(explain(published.receivers, embedded=conf.redis_url() is None))
        if options["verbosity"] > 1:
            self.stderr.write(f"id {published or '(none: the channel keeps no history)'}")
