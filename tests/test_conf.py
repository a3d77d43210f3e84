"""Tests for django_websocket.conf: settings read live, documented defaults, the required URLconf."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.test import SimpleTestCase, override_settings

from django_websocket import conf

DOCUMENTED_DEFAULTS = {
    "WEBSOCKET_SERVER": None,
    "WEBSOCKET_ALLOWED_ORIGINS": None,
    "WEBSOCKET_ALLOW_MISSING_ORIGIN": True,
    "WEBSOCKET_MAX_MESSAGE_SIZE": 1048576,
    "WEBSOCKET_CLOSE_TIMEOUT": 5.0,
    "WEBSOCKET_REDIS_URL": None,
    "WEBSOCKET_CHANNEL_PREFIX": "django_websocket:",
    "WEBSOCKET_CHANNEL_QUEUE_SIZE": 1000,
    "WEBSOCKET_REDIS_TIMEOUT": 1.0,
    "WEBSOCKET_COMPRESSION": True,
    "WEBSOCKET_COMPRESSION_THRESHOLD": 128,
    "WEBSOCKET_PING_INTERVAL": 20.0,
    "WEBSOCKET_PING_TIMEOUT": 20.0,
    "WEBSOCKET_HANDSHAKE_TIMEOUT": 10.0,
    "WEBSOCKET_SEND_TIMEOUT": 10.0,
    "WEBSOCKET_MAX_CONNECTIONS": None,
    "WEBSOCKET_MAX_CONNECTIONS_PER_USER": None,
    "WEBSOCKET_MESSAGE_RATE_LIMIT": (1000, 10.0),
    "WEBSOCKET_HISTORY_SIZE": 100,
    "WEBSOCKET_HISTORY_TTL": 3600,
    "WEBSOCKET_HISTORY_CHANNELS": {},
    "WEBSOCKET_PRESENCE_TTL": 30.0,
    "WEBSOCKET_BLOCKED_LOOP_THRESHOLD": None,
    "WEBSOCKET_TOKEN_MAX_AGE": 60,
    "WEBSOCKET_OUTBOX_RELAY_INTERVAL": 1.0,
    "WEBSOCKET_DRAIN_WINDOW": 1.0,
    "WEBSOCKET_DRAIN_TIMEOUT": 10.0,
}


class GetTests(SimpleTestCase):
    def test_defaults_when_unset(self):
        """Each optional setting, when unset, reads as its documented default."""
        with override_settings():
            for name in DOCUMENTED_DEFAULTS:
                if hasattr(settings, name):
                    delattr(settings, name)
            for name, default in DOCUMENTED_DEFAULTS.items():
                with self.subTest(name=name):
                    self.assertEqual(conf.get(name), default)

    def test_defaults_table_matches_docs(self):
        """conf.DEFAULTS holds exactly the documented defaults, and no URLconf."""
        self.assertEqual(conf.DEFAULTS, DOCUMENTED_DEFAULTS)

    def test_overrides_read_live(self):
        """A value set by override_settings is seen at once and gone when the override ends."""
        with override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=123):
            self.assertEqual(conf.get("WEBSOCKET_MAX_MESSAGE_SIZE"), 123)
            with override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=456):
                self.assertEqual(conf.get("WEBSOCKET_MAX_MESSAGE_SIZE"), 456)
            self.assertEqual(conf.get("WEBSOCKET_MAX_MESSAGE_SIZE"), 123)

    def test_values_are_remembered_until_settings_change(self):
        """A value is read from Django once; setting_changed (sent by override_settings) forgets it."""
        name = "WEBSOCKET_CLOSE_TIMEOUT"
        with override_settings():
            if hasattr(settings, name):
                delattr(settings, name)
            self.assertEqual(conf.get(name), 5.0)
            setattr(settings._wrapped, name, 2.0)  # behind Django's back: no signal
            self.assertEqual(conf.get(name), 5.0)
            setting_changed.send(sender=None, setting=name, value=2.0, enter=True)
            self.assertEqual(conf.get(name), 2.0)

    @override_settings(WEBSOCKET_SERVER=None)
    def test_explicit_none_is_kept(self):
        """A setting explicitly set to None reads as None, not as another default."""
        self.assertIsNone(conf.get("WEBSOCKET_SERVER"))

    def test_unknown_name(self):
        """A name neither set nor defaulted raises KeyError."""
        with self.assertRaises(KeyError):
            conf.get("WEBSOCKET_NO_SUCH_SETTING")

    def test_urlconf_has_no_default(self):
        """conf.get('WEBSOCKET_URLCONF') raises KeyError when it is not set."""
        with override_settings():
            del settings.WEBSOCKET_URLCONF
            with self.assertRaises(KeyError):
                conf.get("WEBSOCKET_URLCONF")


class WebsocketURLconfTests(SimpleTestCase):
    @override_settings(WEBSOCKET_URLCONF="project.websocket_urls")
    def test_returns_setting(self):
        """websocket_urlconf() returns the configured dotted path without importing it."""
        self.assertEqual(conf.websocket_urlconf(), "project.websocket_urls")

    def test_missing(self):
        """websocket_urlconf() raises ImproperlyConfigured naming the setting when it is unset."""
        with override_settings():
            del settings.WEBSOCKET_URLCONF
            with self.assertRaisesMessage(ImproperlyConfigured, "WEBSOCKET_URLCONF is not set"):
                conf.websocket_urlconf()


class HandshakeSettingsTests(SimpleTestCase):
    def test_one_object_until_settings_change(self):
        """handshake_settings() returns the same object until setting_changed, then reads again."""
        with override_settings(WEBSOCKET_CLOSE_TIMEOUT=3.0):
            first = conf.handshake_settings()
            self.assertIs(conf.handshake_settings(), first)
            self.assertEqual(first.close_timeout, 3.0)
            settings._wrapped.WEBSOCKET_CLOSE_TIMEOUT = 2.0  # behind Django's back: no signal
            self.assertIs(conf.handshake_settings(), first)
            with override_settings(WEBSOCKET_CLOSE_TIMEOUT=4.0):
                self.assertEqual(conf.handshake_settings().close_timeout, 4.0)
            self.assertEqual(conf.handshake_settings().close_timeout, 2.0)

    @override_settings(
        WEBSOCKET_ALLOWED_ORIGINS=None,
        ALLOWED_HOSTS=[],
        DEBUG=True,
        WEBSOCKET_PING_INTERVAL=0,
        WEBSOCKET_MESSAGE_RATE_LIMIT=[5, 1.0],
    )
    def test_values_as_the_handshake_takes_them(self):
        """Origins follow ALLOWED_HOSTS (DEBUG's defaults when empty); 0: no pings; the limit a tuple."""
        options = conf.handshake_settings()
        self.assertEqual(options.allowed_origins, conf.DEBUG_ALLOWED_HOSTS)
        self.assertIsNone(options.ping_interval)
        self.assertEqual(options.message_rate_limit, (5, 1.0))
        with override_settings(ALLOWED_HOSTS=["example.com"]):
            self.assertEqual(conf.handshake_settings().allowed_origins, ("example.com",))
        with override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://a.example"]):
            self.assertEqual(conf.handshake_settings().allowed_origins, ("https://a.example",))

    def test_missing_urlconf(self):
        """Without WEBSOCKET_URLCONF it raises ImproperlyConfigured naming the setting."""
        with override_settings():
            del settings.WEBSOCKET_URLCONF
            with self.assertRaisesMessage(ImproperlyConfigured, "WEBSOCKET_URLCONF is not set"):
                conf.handshake_settings()


class ImportTests(SimpleTestCase):
    def test_import_without_settings(self):
        """Importing the package, conf, urls and checks never touches django.conf.settings."""
        env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
        code = (
            "import django_websocket, django_websocket.conf, django_websocket.urls, "
            "django_websocket.checks, django_websocket.apps; "
            "from django.conf import settings; "
            "assert not settings.configured; "
            "print(django_websocket.__version__)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "0.1.0")
