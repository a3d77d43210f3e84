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

# Each worker publishes its snapshot for the ops page from the start, not from its first
# request: a worker nobody has reached yet still shows on the page (test_project/ops.py).
# Nothing happens outside a gevent server (tests, manage.py, gunicorn --preload's master).
from test_project import ops  # noqa: E402

ops.ensure_started()
