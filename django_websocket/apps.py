"""Django app configuration: registers the system checks, the database bookkeeping, and
the messaging settings' reload."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed

from .conf import watch_settings


class DjangoWebsocketConfig(AppConfig):
    """The ``django_websocket`` app. ``ready()`` registers the system checks and a
    ``connection_created`` receiver: no monkey patching, no connections opened."""

    name = "django_websocket"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "WebSockets"

    def ready(self) -> None:
        """Register :mod:`django_websocket.checks` under the ``django_websocket`` tag, and
        track which greenlets hold a database connection (:mod:`django_websocket.database`),
        and let a changed setting (``override_settings``) reach the values
        :func:`django_websocket.conf.get` remembers, then :mod:`django_websocket.brokers`."""
        from django_websocket.brokers import reset
        from django_websocket.checks import register_checks
        from django_websocket.database import track_connections

        register_checks()
        track_connections()
        # First, so the brokers' receiver (and any later one) reads the new values.
        watch_settings()
        setting_changed.connect(reset, dispatch_uid="django_websocket.brokers.reset")
