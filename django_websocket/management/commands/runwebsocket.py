"""``manage.py runwebsocket``: ``runserver`` for HTTP pages and websockets on one port.

::

    python manage.py runwebsocket                 # http://127.0.0.1:8000/ and ws://127.0.0.1:8000/
    python manage.py runwebsocket 8001
    python manage.py runwebsocket 0.0.0.0:8001 --noreload
    python manage.py runwebsocket [::1]:8000

A development server: ``gevent.pywsgi`` with :class:`~django_websocket.server.UpgradeHandler`
serving :class:`~django_websocket.wsgi.SinglePortApplication` (``ROOT_URLCONF`` for
HTTP, ``WEBSOCKET_URLCONF`` for upgrades), static files in DEBUG as ``runserver``
serves them, and Django's autoreloader. ``runserver`` itself is left alone.
In production, use ``gunicorn -k django_websocket.workers.GeventWebSocketWorker``.

gevent's monkey-patching happens in :meth:`Command.run`, in the serving process
only — never when this module is imported (``manage.py help`` imports every
command), and not in the autoreloader's parent, which only restarts its child.
"""

from __future__ import annotations

import errno
import os
import sys
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.commands.runserver import Command as RunserverCommand
from django.db import connections
from django.utils import autoreload

from django_websocket.server import UpgradeHandler
from django_websocket.wsgi import SinglePortApplication

#: The messages ``runserver`` gives for the usual bind failures.
BIND_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


def patch_all() -> None:
    """``gevent.monkey.patch_all()`` in a process where Django is already set up.

    gunicorn patches before it imports the application; a management command runs
    after ``django.setup()``, when ``django.db.connections`` already keeps its
    connections in a ``threading.local`` — per OS thread, so every greenlet would
    share (and fail Django's thread-sharing check on) one connection. The connections
    are closed before the patch and the storage is replaced after it, so each greenlet
    gets its own, as under gunicorn's gevent worker.
    """
    from asgiref.local import Local
    from gevent import monkey

    connections.close_all()
    monkey.patch_all()
    connections._connections = Local(connections.thread_critical)


class Command(RunserverCommand):
    """Serve HTTP and websockets on one port with gevent, for development.

    Reuses ``runserver``'s parsing of ``addrport`` (``8001``, ``0.0.0.0:8001``,
    ``[::1]:8000``, ``--ipv6``) and its autoreloader plumbing; replaces the server.
    """

    help = (
        "Starts a gevent development server for HTTP and websockets on one port "
        "(access log on stderr; -v 0 turns it off)."
    )
    # Unlike runserver, verbosity means something here: 0 silences the access log.
    suppressed_base_arguments = {"--traceback"}

    def add_arguments(self, parser: Any) -> None:
        # Not super(): runserver's --nothreading means nothing to a gevent server.
        parser.add_argument("addrport", nargs="?", help="Optional port number, or ipaddr:port")
        parser.add_argument(
            "--ipv6", "-6", action="store_true", dest="use_ipv6", help="Tells Django to use an IPv6 address."
        )
        parser.add_argument(
            "--noreload",
            action="store_false",
            dest="use_reloader",
            help="Tells Django to NOT use the auto-reloader.",
        )
        parser.add_argument(
            "--nostatic",
            action="store_false",
            dest="use_static_handler",
            help="Tells Django to NOT automatically serve static files at STATIC_URL.",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            dest="insecure_serving",
            help="Allows serving static files even if DEBUG is False.",
        )

    def run(self, **options: Any) -> None:
        """Monkey-patch in the serving process, then serve (under the autoreloader unless --noreload).

        With the reloader, this process only restarts a child running the same command
        with ``DJANGO_AUTORELOAD_ENV`` set; that child serves, so it is the one patched,
        before the reloader starts its threads (which then become greenlets).
        """
        if not options["use_reloader"] or os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
            patch_all()
        super().run(**options)

    def get_handler(self, *args: Any, **options: Any) -> Any:
        """The single-port application, with static files served as ``runserver`` serves them."""
        application = SinglePortApplication()
        serve_static = options.get("use_static_handler", True) and (
            settings.DEBUG or options.get("insecure_serving", False)
        )
        if serve_static and apps.is_installed("django.contrib.staticfiles"):
            from django.contrib.staticfiles.handlers import StaticFilesHandler

            application.http = StaticFilesHandler(application.http)
        return application

    def inner_run(self, *args: Any, **options: Any) -> None:
        """Check, bind, print the URL and serve until interrupted (in the serving process)."""
        from gevent import pywsgi

        # An exception the reloader's parent silenced is raised here, in the child.
        autoreload.raise_last_exception()
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for connection in connections.all(initialized_only=True):
            connection.close()

        server = pywsgi.WSGIServer(
            (self.addr, int(self.port)),
            self.get_handler(**options),
            handler_class=UpgradeHandler,
            log=sys.stderr if options["verbosity"] >= 1 else None,
        )
        try:
            server.init_socket()
        except OSError as error:
            self.stderr.write(f"Error: {BIND_ERRORS.get(error.errno, error)}")
            # As runserver: under the reloader this runs in a (green) thread, where
            # sys.exit() would not end the process.
            os._exit(1)
        self.on_bind(server.server_port)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.stop(timeout=1)
            sys.exit(0)

    def on_bind(self, server_port: int) -> None:
        """Print where the server listens, as runserver does."""
        if self._raw_ipv6:
            addr = f"[{self.addr}]"
        elif self.addr == "0":
            addr = "0.0.0.0"
        else:
            addr = self.addr
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        self.stdout.write(
            f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting development server at http://{addr}:{server_port}/ "
            f"(HTTP and websockets: ws://{addr}:{server_port}/)\n"
            f"Quit the server with {quit_command}."
        )
        self.stdout.write(
            self.style.WARNING(
                "WARNING: This is a development server. In production, use "
                "gunicorn -k django_websocket.workers.GeventWebSocketWorker."
            )
        )
        self.stdout.flush()
