"""Django app configuration: registers the system checks and the database bookkeeping."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoWebsocketConfig(AppConfig):
    """The ``django_websocket`` app. ``ready()`` registers the system checks and a
    ``connection_created`` receiver: no monkey patching, no connections opened."""

    name = "django_websocket"
    verbose_name = "WebSockets"

    def ready(self) -> None:
        """Register :mod:`django_websocket.checks` under the ``django_websocket`` tag, and
        track which greenlets hold a database connection (:mod:`django_websocket.database`)."""
        from django_websocket.checks import register_checks
        from django_websocket.database import track_connections

        register_checks()
        track_connections()
