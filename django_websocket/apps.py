"""Django app configuration: registers the system checks, and does nothing else."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoWebsocketConfig(AppConfig):
    """The ``django_websocket`` app. ``ready()`` only registers the system checks:
    no monkey patching, no connections opened."""

    name = "django_websocket"
    verbose_name = "WebSockets"

    def ready(self) -> None:
        """Register :mod:`django_websocket.checks` under the ``django_websocket`` tag."""
        from django_websocket.checks import register_checks

        register_checks()
