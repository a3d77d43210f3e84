"""Real-time WebSockets for ordinary synchronous Django, served by gunicorn's gevent worker.

Importing this package touches neither ``django.conf.settings`` nor gevent;
the settings are documented in :mod:`django_websocket.conf` and ``docs/settings.md``.
"""

__version__ = "0.1.0"
