"""Real-time WebSockets for ordinary synchronous Django, served by gunicorn's gevent worker.

Importing this package touches neither ``django.conf.settings`` nor gevent;
the settings are documented in :mod:`django_websocket.conf` and ``docs/settings.md``.
"""

__version__ = "0.1.0"


def publish(channel: str, message: object, **audience: object) -> int:
    """Publish *message* to *channel*'s sockets; see :func:`django_websocket.publishing.publish`."""
    from .publishing import publish as _publish

    return _publish(channel, message, **audience)  # type: ignore[arg-type]
