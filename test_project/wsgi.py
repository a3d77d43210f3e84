"""WSGI entry points of the test project.

* ``application`` — one port for everything: Django's HTTP pages (``ROOT_URLCONF``)
  plus websocket upgrades routed to ``WEBSOCKET_URLCONF``::

      gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:application

* ``websocket`` — websockets only, as the original served them on a second port::

      gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:websocket
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "test_project.settings")

from django_websocket.wsgi import get_wsgi_application, get_wsgi_websocket_application  # noqa: E402

application = get_wsgi_application()
websocket = get_wsgi_websocket_application()
