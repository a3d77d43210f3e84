"""Settings for integration tests: test_project's, plus endpoints that only tests need.

Timing and limit settings can be set from the environment of a server process, so a test
can run gunicorn with, say, a half-second ping interval.
"""

import os

from test_project.settings import *  # noqa: F403

WEBSOCKET_URLCONF = "tests.websocket_urls"

for _name, _type in (
    ("WEBSOCKET_PING_INTERVAL", float),
    ("WEBSOCKET_PING_TIMEOUT", float),
    ("WEBSOCKET_HANDSHAKE_TIMEOUT", float),
    ("WEBSOCKET_SEND_TIMEOUT", float),
    ("WEBSOCKET_CLOSE_TIMEOUT", float),
    ("WEBSOCKET_MAX_CONNECTIONS", int),
    ("WEBSOCKET_CHANNEL_QUEUE_SIZE", int),
    ("WEBSOCKET_HISTORY_SIZE", int),
    ("WEBSOCKET_PRESENCE_TTL", float),
):
    if os.environ.get(_name):
        globals()[_name] = _type(os.environ[_name])
