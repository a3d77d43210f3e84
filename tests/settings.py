"""Settings for integration tests: test_project's, plus endpoints that only tests need."""

from test_project.settings import *  # noqa: F403

WEBSOCKET_URLCONF = "tests.websocket_urls"
