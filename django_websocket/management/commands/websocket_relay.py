"""``manage.py websocket_relay``: publish the durable outbox, for deployments without our workers.

    python manage.py websocket_relay            # relay every second until interrupted
    python manage.py websocket_relay --once     # relay what waits now, then exit (cron)
    python manage.py websocket_relay --interval 5

Our gunicorn worker class relays the outbox itself (``WEBSOCKET_OUTBOX_RELAY_INTERVAL``);
this command is for sites whose websockets run elsewhere, or that set it to ``None``. It
may run beside the workers: the broker publishes each message once whoever relays it.
Exit status 0; with ``--once``, 1 if the outbox could not be read (not migrated, database
away) or the broker did not take every message (they wait for the next relay).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from django_websocket.outbox import broker_unavailable, relay_all


class Command(BaseCommand):
    help = "Publish the messages of publish(..., durable=True) that wait in the outbox, in order."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="relay what waits now, then exit")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between two relays (1.0)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError("--interval must be a positive number of seconds")
        while True:
            try:
                published = relay_all()
            except DatabaseError as error:
                if options["once"]:
                    raise CommandError(f"cannot read the outbox: {error} (is migrate done?)") from error
                self.stderr.write(f"cannot read the outbox: {error}")
                published = 0
            if published:
                self.stdout.write(f"published {published}")
            if options["once"]:
                if broker_unavailable():
                    raise CommandError("the broker is unavailable: messages still wait in the outbox")
                return
            time.sleep(options["interval"])
