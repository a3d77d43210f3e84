"""Settings for ``tests/test_static.py``: the demo project's own, plus a page that loads websocket.js.

Imported from ``test_project.settings`` directly (not ``tests.settings``), so static files are
configured exactly as the demo and a user's project configure them: WhiteNoise, STATIC_ROOT.
"""

from test_project.settings import *  # noqa: F403

ROOT_URLCONF = "tests.static_urls"
