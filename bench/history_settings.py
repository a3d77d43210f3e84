"""Settings of ``bench/history.py``'s server and clients: test_project's, plus per-channel history sizes.

* ``fanout:off-*`` keeps no history (size 0: no ids, a plain ``PUBLISH``): the reference;
* ``fanout:on-*`` has the defaults (``WEBSOCKET_HISTORY_SIZE``, 100 messages);
* ``resume:*`` keeps 2,000 messages, enough for a client to resume after missing 1,000.

Websockets are routed to ``bench/history_urls.py``.
"""

from test_project.settings import *  # noqa: F403

WEBSOCKET_URLCONF = "bench.history_urls"
WEBSOCKET_HISTORY_CHANNELS = {
    "fanout:off-*": {"size": 0},
    "resume:*": {"size": 2000},
}
