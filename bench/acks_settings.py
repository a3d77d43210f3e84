"""Settings of ``bench/acks.py``'s server: test_project's, websockets routed to ``bench/acks_urls.py``.

No message rate limit: the benchmark sends thousands of messages a second on one socket.
"""

from test_project.settings import *  # noqa: F403

WEBSOCKET_URLCONF = "bench.acks_urls"
WEBSOCKET_MESSAGE_RATE_LIMIT = None
