"""Settings for the demo and test project: echo, ping, whoami, broadcast and chat over WebSockets.

Run the demo on one port (HTTP pages and websocket upgrades)::

    python test_project/manage.py migrate
    python test_project/manage.py demo_user
    gunicorn -k django_websocket.workers.GeventWebSocketWorker test_project.wsgi:application -b 127.0.0.1:8000
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (``test_project`` lives directly below it).
BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG", "1").lower() not in ("0", "false", "no", "off", "")

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-dev-only-key-for-the-django-websocket-test-project"
)

ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "django_websocket",
    "test_project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (websocket.js) on the single gunicorn port, with DEBUG on or off. Also in the
    # websocket chain, where it only answers paths under STATIC_URL: sockets elsewhere pass by.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Handshakes may carry a token (django_websocket.tokens) in place of the session cookie.
    "django_websocket.middleware.WebSocketTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Starts each worker's snapshot publisher for the ops page (test_project/ops.py).
    "test_project.ops.OpsPublisherMiddleware",
]

ROOT_URLCONF = "test_project.urls"
WEBSOCKET_URLCONF = "test_project.websocket_urls"

#: Largest incoming websocket message in bytes (the Autobahn conformance run raises it).
WEBSOCKET_MAX_MESSAGE_SIZE = int(os.environ.get("WEBSOCKET_MAX_MESSAGE_SIZE", 2**20))

#: Messages a client may send: WEBSOCKET_MESSAGE_RATE_LIMIT="count,seconds" in the environment,
#: or "none" (the benchmarks, which flood on purpose); unset: the default, bursts of 1000, 100/s.
if _rate_limit := os.environ.get("WEBSOCKET_MESSAGE_RATE_LIMIT"):
    _count, _, _seconds = _rate_limit.partition(",")
    WEBSOCKET_MESSAGE_RATE_LIMIT = None if _rate_limit.lower() == "none" else (int(_count), float(_seconds))

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "test_project.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
#: Where ``manage.py collectstatic`` gathers the static files, for nginx (or WhiteNoise) to serve.
STATIC_ROOT = BASE_DIR / ".run" / "static"
# The demo serves the apps' static directories as they are, so `make demo` needs no collectstatic
# step and never serves a stale copy. A production project leaves this off (its default when DEBUG
# is off) and runs collectstatic at deploy time: WhiteNoise then serves STATIC_ROOT, indexed once.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "simple": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "simple"},
    },
    "loggers": {
        "django_websocket": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
