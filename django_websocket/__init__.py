"""Real-time WebSockets for ordinary synchronous Django, served by gunicorn's gevent worker.

Importing this package touches neither ``django.conf.settings`` nor gevent;
the settings are documented in :mod:`django_websocket.conf` and ``docs/reference/settings.md``.
"""

__version__ = "0.1.0"


def publish(channel: str, message: object, **options: object) -> str | None:
    """Publish *message* to *channel*'s sockets; return its id (see ``publishing.publish``).

    *options*: one audience (``user=``, ``group=``, ``session=``), and ``on_commit=True``
    (with ``using=``) to publish only once the current transaction commits.
    """
    from .publishing import publish as publish_message

    return publish_message(channel, message, **options)  # type: ignore[arg-type]


def last_id(channel: str) -> str:
    """The newest id of *channel* (``"0-0"`` if none); see :func:`django_websocket.publishing.last_id`."""
    from .publishing import last_id as read_last_id

    return read_last_id(channel)
