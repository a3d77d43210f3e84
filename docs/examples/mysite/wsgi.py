"""WSGI entry points of the tutorial project.

``application`` serves pages and websockets on one port::

    gunicorn -k django_websocket.workers.GeventWebSocketWorker mysite.wsgi:application
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from django_websocket.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
