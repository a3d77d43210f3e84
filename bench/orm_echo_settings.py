"""Settings of ``bench/orm.py``'s echo before/after runs: ``bench/orm_settings.py`` (PostgreSQL and
its pool, as the ORM runs use it), with test_project's websocket URLconf, whose ``/echo/`` never
touches the database.

``bench/orm.py`` copies this file and ``orm_settings.py`` into the "before" tree's ``bench/``, so
both trees run with the same settings.
"""

from bench.orm_settings import *  # noqa: F403

WEBSOCKET_URLCONF = "test_project.websocket_urls"
