"""Tests for django_websocket.checks and its registration by django_websocket.apps."""

from __future__ import annotations

import sys
import types
from unittest import mock

from django.apps import apps
from django.conf import settings
from django.core.checks import registry, run_checks
from django.test import SimpleTestCase, override_settings
from django.urls import path

from django_websocket.apps import DjangoWebsocketConfig
from django_websocket.checks import (
    TAG,
    check_compression_settings,
    check_history_settings,
    check_settings,
    check_templates,
    check_urlconf,
)
from django_websocket.messaging.brokers.redis import RedisBroker


def never_called(request):
    raise AssertionError("checks never call views")


urlpatterns = [path("ws/echo/", never_called, name="echo")]

DJANGO_TEMPLATES = "django.template.backends.django.DjangoTemplates"
REQUEST_PROCESSOR = "django.template.context_processors.request"


def templates(*context_processor_lists: list[str]) -> list[dict]:
    """A TEMPLATES setting with one DjangoTemplates backend per list of context processors."""
    return [
        {"BACKEND": DJANGO_TEMPLATES, "OPTIONS": {"context_processors": processors}}
        for processors in context_processor_lists
    ]


GOOD_SETTINGS = {
    "WEBSOCKET_URLCONF": __name__,
    "WEBSOCKET_SERVER": None,
    "WEBSOCKET_ALLOWED_ORIGINS": None,
    "WEBSOCKET_ALLOW_MISSING_ORIGIN": True,
    "WEBSOCKET_MAX_MESSAGE_SIZE": 2**20,
    "WEBSOCKET_CLOSE_TIMEOUT": 5.0,
    "TEMPLATES": templates([REQUEST_PROCESSOR]),
}


def ids(messages) -> list[str]:
    return [message.id for message in messages]


@override_settings(**GOOD_SETTINGS)
class SettingsCheckTests(SimpleTestCase):
    def assert_check(self, check, setting: str, value, expected_id: str | None) -> None:
        """Run *check* with *setting* = *value*; expect *expected_id* (or nothing) from it."""
        with self.subTest(setting=setting, value=value), override_settings(**{setting: value}):
            messages = check()
            if expected_id is None:
                self.assertEqual(messages, [])
            else:
                self.assertEqual(ids(messages), [expected_id])
                self.assertIn(setting, messages[0].msg)

    def test_good_settings(self):
        """The documented defaults and a valid URLconf produce no message at all."""
        self.assertEqual(run_checks(tags=[TAG]), [])

    def test_defaults_when_unset(self):
        """With only WEBSOCKET_URLCONF set, the defaults pass every check."""
        with override_settings():
            for name in GOOD_SETTINGS:
                if name.startswith("WEBSOCKET_") and name != "WEBSOCKET_URLCONF":
                    delattr(settings, name)
            self.assertEqual(run_checks(tags=[TAG]), [])

    def test_urlconf_missing(self):
        """E001: WEBSOCKET_URLCONF unset, with an example in the hint."""
        with override_settings():
            del settings.WEBSOCKET_URLCONF
            messages = check_urlconf()
        self.assertEqual(ids(messages), ["django_websocket.E001"])
        self.assertIn("WEBSOCKET_URLCONF", messages[0].msg)
        self.assertIn("WEBSOCKET_URLCONF = '", messages[0].hint)

    def test_urlconf_not_importable(self):
        """E002: an unimportable WEBSOCKET_URLCONF, with the import error's text."""
        with override_settings(WEBSOCKET_URLCONF="django_websocket.no_such_urls"):
            messages = check_urlconf()
        self.assertEqual(ids(messages), ["django_websocket.E002"])
        self.assertIn("WEBSOCKET_URLCONF", messages[0].msg)
        self.assertIn("ModuleNotFoundError: No module named 'django_websocket.no_such_urls'", messages[0].msg)

    def test_urlconf_import_raises(self):
        """E002: an error raised while importing the URLconf is reported, not raised."""
        with (
            mock.patch("django_websocket.checks.import_module", side_effect=RuntimeError("boom")),
            override_settings(WEBSOCKET_URLCONF="ws_urls_that_fail"),
        ):
            messages = check_urlconf()
        self.assertEqual(ids(messages), ["django_websocket.E002"])
        self.assertIn("RuntimeError: boom", messages[0].msg)

    def test_urlconf_without_urlpatterns(self):
        """E002: a module that is not a URLconf."""
        self.assert_check(
            check_urlconf, "WEBSOCKET_URLCONF", "django_websocket.exceptions", "django_websocket.E002"
        )

    def test_urlconf_patterns_get_django_url_checks(self):
        """Django's URL checks run on the websocket patterns too (urls.W002 for a leading slash)."""
        module = types.ModuleType("ws_urls_with_leading_slash")
        module.urlpatterns = [path("/ws/echo", never_called)]
        with (
            mock.patch.dict(sys.modules, {module.__name__: module}),
            override_settings(WEBSOCKET_URLCONF=module.__name__),
        ):
            self.assertEqual(ids(check_urlconf()), ["urls.W002"])

    def test_urlconf_not_a_string(self):
        """E003: WEBSOCKET_URLCONF given as a module or list instead of a dotted path."""
        self.assert_check(check_urlconf, "WEBSOCKET_URLCONF", sys.modules[__name__], "django_websocket.E003")
        self.assert_check(check_urlconf, "WEBSOCKET_URLCONF", urlpatterns, "django_websocket.E003")

    def test_urlconf_good(self):
        """No message for an importable URLconf given by dotted path."""
        self.assert_check(check_urlconf, "WEBSOCKET_URLCONF", __name__, None)

    def test_max_message_size(self):
        """E004: WEBSOCKET_MAX_MESSAGE_SIZE must be a positive int."""
        for bad in (0, -1, 1.5, "1024", True, None):
            self.assert_check(check_settings, "WEBSOCKET_MAX_MESSAGE_SIZE", bad, "django_websocket.E004")
        for good in (1, 2**16, 2**30):
            self.assert_check(check_settings, "WEBSOCKET_MAX_MESSAGE_SIZE", good, None)

    def test_allowed_origins(self):
        """E005: WEBSOCKET_ALLOWED_ORIGINS must be None or a list/tuple of patterns and origins."""
        bad_values = (
            "https://example.com",
            {"example.com"},
            ["example.com", 1],
            [""],
            ["https://example.com/"],
            ["https://example.com/path"],
            ["https://"],
        )
        for bad in bad_values:
            self.assert_check(check_settings, "WEBSOCKET_ALLOWED_ORIGINS", bad, "django_websocket.E005")
        good_values = (
            None,
            [],
            (),
            ["*"],
            ["example.com", ".example.com", "https://example.com", "http://localhost:8000"],
            ("[::1]",),
        )
        for good in good_values:
            self.assert_check(check_settings, "WEBSOCKET_ALLOWED_ORIGINS", good, None)

    def test_allow_missing_origin(self):
        """E006: WEBSOCKET_ALLOW_MISSING_ORIGIN must be a bool."""
        for bad in (1, 0, "False", None):
            self.assert_check(check_settings, "WEBSOCKET_ALLOW_MISSING_ORIGIN", bad, "django_websocket.E006")
        for good in (True, False):
            self.assert_check(check_settings, "WEBSOCKET_ALLOW_MISSING_ORIGIN", good, None)

    def test_server(self):
        """E007: WEBSOCKET_SERVER must be None, host, host:port or :port."""
        for bad in (8001, "", "wss://ws.example.com", "ws.example.com/ws", "::1", ":99999", "a b"):
            self.assert_check(check_settings, "WEBSOCKET_SERVER", bad, "django_websocket.E007")
        for good in (None, "ws.example.com", "ws.example.com:8443", ":8001", "[::1]:8001", "127.0.0.1"):
            self.assert_check(check_settings, "WEBSOCKET_SERVER", good, None)

    def test_close_timeout(self):
        """E008: WEBSOCKET_CLOSE_TIMEOUT must be a positive, finite number."""
        for bad in (0, -1, "5", True, None, float("nan"), float("inf")):
            self.assert_check(check_settings, "WEBSOCKET_CLOSE_TIMEOUT", bad, "django_websocket.E008")
        for good in (5, 0.5, 30.0):
            self.assert_check(check_settings, "WEBSOCKET_CLOSE_TIMEOUT", good, None)

    def test_compression(self):
        """E014: WEBSOCKET_COMPRESSION is a bool; E015: the threshold is an integer >= 0."""
        check = check_compression_settings
        for bad in (1, "yes", None):
            self.assert_check(check, "WEBSOCKET_COMPRESSION", bad, "django_websocket.E014")
        for good in (True, False):
            self.assert_check(check, "WEBSOCKET_COMPRESSION", good, None)
        for bad in (-1, 1.5, "128", None, True):
            self.assert_check(check, "WEBSOCKET_COMPRESSION_THRESHOLD", bad, "django_websocket.E015")
        for good in (0, 128, 2**20):
            self.assert_check(check, "WEBSOCKET_COMPRESSION_THRESHOLD", good, None)

    def test_history_and_presence(self):
        """E016: history size and TTL; E017: per-channel overrides; E018: the presence TTL."""
        check = check_history_settings
        for bad in (-1, 1.5, "100", None, True):
            self.assert_check(check, "WEBSOCKET_HISTORY_SIZE", bad, "django_websocket.E016")
        for good in (0, 100, 10_000):
            self.assert_check(check, "WEBSOCKET_HISTORY_SIZE", good, None)
        for bad in (0, -5, "60", float("nan"), True):
            self.assert_check(check, "WEBSOCKET_HISTORY_TTL", bad, "django_websocket.E016")
        for good in (None, 60, 0.5):
            self.assert_check(check, "WEBSOCKET_HISTORY_TTL", good, None)
        bad_overrides = (
            [("chat:*", {"size": 5})],
            {"chat:*": 5},
            {"chat:*": {"length": 5}},
            {"chat:*": {"size": -1}},
            {"chat:*": {"ttl": 0}},
            {3: {"size": 1}},
        )
        for bad in bad_overrides:
            self.assert_check(check, "WEBSOCKET_HISTORY_CHANNELS", bad, "django_websocket.E017")
        for good in ({}, {"chat:*": {"size": 500, "ttl": 86400}, "live:*": {"size": 0}, "x": {"ttl": None}}):
            self.assert_check(check, "WEBSOCKET_HISTORY_CHANNELS", good, None)
        for bad in (0, -1, "30", None, True):
            self.assert_check(check, "WEBSOCKET_PRESENCE_TTL", bad, "django_websocket.E018")
        self.assert_check(check, "WEBSOCKET_PRESENCE_TTL", 10, None)

    def test_errors_accumulate(self):
        """Several bad settings give one error each."""
        with override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=0, WEBSOCKET_CLOSE_TIMEOUT=0):
            self.assertEqual(ids(check_settings()), ["django_websocket.E004", "django_websocket.E008"])


class TemplatesCheckTests(SimpleTestCase):
    def test_request_processor_missing(self):
        """W001: no DjangoTemplates backend has the request context processor."""
        with override_settings(TEMPLATES=templates(["django.template.context_processors.debug"])):
            messages = check_templates()
        self.assertEqual(ids(messages), ["django_websocket.W001"])
        self.assertIn(REQUEST_PROCESSOR, messages[0].hint)

    def test_no_options(self):
        """W001: a DjangoTemplates backend without OPTIONS lacks the processor too."""
        with override_settings(TEMPLATES=[{"BACKEND": DJANGO_TEMPLATES}]):
            self.assertEqual(ids(check_templates()), ["django_websocket.W001"])

    def test_request_processor_present(self):
        """No warning when one of several DjangoTemplates backends has the processor."""
        with override_settings(TEMPLATES=templates([], [REQUEST_PROCESSOR])):
            self.assertEqual(check_templates(), [])

    def test_no_django_templates_backend(self):
        """No warning without any DjangoTemplates backend: the tag cannot be used anyway."""
        jinja2 = {"BACKEND": "django.template.backends.jinja2.Jinja2", "OPTIONS": {}}
        with override_settings(TEMPLATES=[jinja2]):
            self.assertEqual(check_templates(), [])
        with override_settings(TEMPLATES=[]):
            self.assertEqual(check_templates(), [])


class AppConfigTests(SimpleTestCase):
    def test_app_config(self):
        """The installed app is DjangoWebsocketConfig, named 'WebSockets'."""
        config = apps.get_app_config("django_websocket")
        self.assertIsInstance(config, DjangoWebsocketConfig)
        self.assertEqual(config.verbose_name, "WebSockets")

    def test_checks_registered(self):
        """ready() registered every check under the django_websocket tag."""
        self.assertIn(TAG, registry.registry.tags_available())
        registered = registry.registry.get_checks()
        for check in (check_urlconf, check_settings, check_templates):
            self.assertIn(check, registered)

    @override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=0)
    def test_run_checks_reports(self):
        """run_checks() with the tag reports our errors."""
        self.assertIn("django_websocket.E004", ids(run_checks(tags=[TAG])))


class ChannelSettingsChecks(SimpleTestCase):
    """E009-E012: the publish/subscribe settings."""

    def ids(self):
        from django_websocket.checks import check_channel_settings

        return [message.id for message in check_channel_settings()]

    def test_defaults_pass(self):
        """The documented defaults raise nothing."""
        self.assertEqual(self.ids(), [])

    def test_each_bad_value_is_reported(self):
        """Each malformed setting gets its own id."""
        cases = [
            ({"WEBSOCKET_REDIS_URL": "http://localhost"}, "django_websocket.E009"),
            ({"WEBSOCKET_REDIS_URL": 6379}, "django_websocket.E009"),
            ({"WEBSOCKET_CHANNEL_PREFIX": None}, "django_websocket.E010"),
            ({"WEBSOCKET_CHANNEL_QUEUE_SIZE": 0}, "django_websocket.E011"),
            ({"WEBSOCKET_CHANNEL_QUEUE_SIZE": 2.5}, "django_websocket.E011"),
            ({"WEBSOCKET_REDIS_TIMEOUT": -1}, "django_websocket.E012"),
            ({"WEBSOCKET_REDIS_TIMEOUT": True}, "django_websocket.E012"),
            ({"WEBSOCKET_PING_INTERVAL": 0}, "django_websocket.E013"),
            ({"WEBSOCKET_PING_TIMEOUT": None}, "django_websocket.E013"),
            ({"WEBSOCKET_HANDSHAKE_TIMEOUT": "10"}, "django_websocket.E013"),
            ({"WEBSOCKET_SEND_TIMEOUT": -1}, "django_websocket.E013"),
            ({"WEBSOCKET_MAX_CONNECTIONS": 1.5}, "django_websocket.E013"),
        ]
        for overrides, expected in cases:
            with self.subTest(overrides=overrides), override_settings(**overrides):
                self.assertEqual(self.ids(), [expected])

    def test_redis_urls_pass(self):
        """redis://, rediss:// and unix:// URLs are accepted."""
        for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@host:6380", "unix:///run/redis.sock"):
            with self.subTest(url=url), override_settings(WEBSOCKET_REDIS_URL=url):
                self.assertEqual(self.ids(), [])

    def test_sentinel_urls_pass(self):
        """redis+sentinel:// and rediss+sentinel:// URLs, with passwords and options, are accepted."""
        for url in (
            "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0",
            "rediss+sentinel://:pw@s1/mymaster?sentinel_password=spw&sentinel_ssl=false",
        ):
            with self.subTest(url=url), override_settings(WEBSOCKET_REDIS_URL=url):
                self.assertEqual(self.ids(), [])

    def test_a_malformed_url_is_named_with_the_setting_and_the_sentinel_form(self):
        """The error names the setting and the problem, hints at the Sentinel form, hides the password."""
        from django_websocket.checks import check_channel_settings

        for url, problem in (
            ("redis+sentinel://:secret@s1:26379", "no service name"),
            ("redis+sentinel://:secret@s1:port/mymaster", "bad port"),
            ("redis+sentinel://:secret@/mymaster", "no sentinel host"),
            ("redis://:secret@h:6379/mymaster", "database number"),
            ("sentinel://:secret@s1/mymaster", "no broker for 'sentinel' URLs"),
        ):
            with self.subTest(url=url), override_settings(WEBSOCKET_REDIS_URL=url):
                (error,) = check_channel_settings()
                self.assertEqual(error.id, "django_websocket.E009")
                self.assertIn("WEBSOCKET_REDIS_URL", error.msg)
                self.assertIn(problem, error.msg)
                self.assertIn("redis+sentinel://", error.hint)
                self.assertNotIn("secret", error.msg + error.hint)

    def test_the_accepted_schemes_are_brokers_schemes(self):
        """E009 accepts exactly the schemes of django_websocket.brokers.SCHEMES (one list, not two)."""
        from django_websocket import brokers

        class MemcachedBroker(RedisBroker):
            @classmethod
            def validate_url(cls, url: str) -> None:
                pass

        url = "memcached://n1:11211"
        with override_settings(WEBSOCKET_REDIS_URL=url):
            self.assertEqual(self.ids(), ["django_websocket.E009"])
            with mock.patch.dict(brokers.SCHEMES, {"memcached": MemcachedBroker}):
                self.assertEqual(self.ids(), [])
        with override_settings(WEBSOCKET_REDIS_URL="redis+cluster://n1:7000,n2:7001"):
            self.assertEqual(self.ids(), [])  # Redis Cluster is one of them
            with mock.patch.dict(brokers.SCHEMES, clear=True):
                self.assertEqual(self.ids(), ["django_websocket.E009"])


class BrokerServersCheck(SimpleTestCase):
    """E031, W007: the broker's servers, asked only by ``check --deploy``."""

    def messages(self):
        from django_websocket.checks import check_broker_servers

        return [(message.id, message.msg) for message in check_broker_servers()]

    @override_settings(WEBSOCKET_REDIS_URL=None)
    def test_the_in_process_broker_has_nothing_to_ask(self):
        """Without a URL (and REDIS_URL) there is no server to probe."""
        with mock.patch.dict("os.environ", clear=False) as environ:
            environ.pop("REDIS_URL", None)
            self.assertEqual(self.messages(), [])

    @override_settings(
        WEBSOCKET_REDIS_URL="redis+sentinel://127.0.0.1:1/mymaster", WEBSOCKET_REDIS_TIMEOUT=0.5
    )
    def test_servers_that_do_not_answer_are_a_warning_only_with_deploy(self):
        """No sentinel answers: W007 (a CI job without Redis passes); plain `check` never asks."""
        ((message_id, message),) = self.messages()
        self.assertEqual(message_id, "django_websocket.W007")
        self.assertIn(
            "no sentinel of Redis Sentinel (redis+sentinel://127.0.0.1:1/mymaster/0) answered", message
        )
        self.assertNotIn("django_websocket.W007", ids(run_checks(tags=[TAG])))
        self.assertIn("django_websocket.W007", ids(run_checks(tags=[TAG], include_deployment_checks=True)))


def test_a_service_nobody_monitors_is_e023_with_deploy(sentinel_group):
    """check --deploy asks the sentinels: a service name they do not monitor is an error naming theirs."""
    from django_websocket.checks import check_broker_servers

    url = sentinel_group.url().replace("/mymaster/", "/mymastr/")
    with override_settings(WEBSOCKET_REDIS_URL=url):
        (error,) = check_broker_servers()
        assert error.id == "django_websocket.E031"
        assert "a service named 'mymastr' (they monitor: mymaster)" in error.msg
    with override_settings(WEBSOCKET_REDIS_URL=sentinel_group.url()):
        assert check_broker_servers() == []


class LimitSettingsChecks(SimpleTestCase):
    """E021-E022: WEBSOCKET_MESSAGE_RATE_LIMIT and WEBSOCKET_MAX_CONNECTIONS_PER_USER."""

    def messages(self):
        from django_websocket.checks import check_limit_settings

        return check_limit_settings()

    def test_defaults_and_good_values_pass(self):
        """The defaults, None, and well-formed values raise nothing."""
        self.assertEqual(self.messages(), [])
        for overrides in (
            {"WEBSOCKET_MESSAGE_RATE_LIMIT": None},
            {"WEBSOCKET_MESSAGE_RATE_LIMIT": (10, 1)},
            {"WEBSOCKET_MESSAGE_RATE_LIMIT": [60, 0.5]},
            {"WEBSOCKET_MAX_CONNECTIONS_PER_USER": 10},
            {"WEBSOCKET_MAX_CONNECTIONS_PER_USER": None},
        ):
            with self.subTest(overrides=overrides), override_settings(**overrides):
                self.assertEqual(self.messages(), [])

    def test_each_bad_value_is_reported(self):
        """A malformed limit gets its id, and the message names the setting."""
        cases = [
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": 100}, "django_websocket.E021"),
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": (100,)}, "django_websocket.E021"),
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": (0, 1)}, "django_websocket.E021"),
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": (1.5, 1)}, "django_websocket.E021"),
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": (10, 0)}, "django_websocket.E021"),
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": (10, "1")}, "django_websocket.E021"),
            ({"WEBSOCKET_MESSAGE_RATE_LIMIT": (True, 1)}, "django_websocket.E021"),
            ({"WEBSOCKET_MAX_CONNECTIONS_PER_USER": 0}, "django_websocket.E022"),
            ({"WEBSOCKET_MAX_CONNECTIONS_PER_USER": 2.5}, "django_websocket.E022"),
            ({"WEBSOCKET_MAX_CONNECTIONS_PER_USER": "10"}, "django_websocket.E022"),
        ]
        for overrides, expected in cases:
            with self.subTest(overrides=overrides), override_settings(**overrides):
                messages = self.messages()
                self.assertEqual(ids(messages), [expected])
                self.assertIn(next(iter(overrides)), messages[0].msg)

    @override_settings(WEBSOCKET_MAX_CONNECTIONS_PER_USER=-1)
    def test_registered_under_the_tag(self):
        """run_checks() with the tag reports them."""
        self.assertIn("django_websocket.E022", ids(run_checks(tags=[TAG])))


class OutboxSettingChecks(SimpleTestCase):
    """E030: WEBSOCKET_OUTBOX_RELAY_INTERVAL."""

    def test_default_none_and_positive_numbers_pass(self):
        """The default, None and a positive number raise nothing."""
        from django_websocket.checks import check_outbox_setting

        for value in (1.0, None, 5, 0.2):
            with self.subTest(value=value), override_settings(WEBSOCKET_OUTBOX_RELAY_INTERVAL=value):
                self.assertEqual(check_outbox_setting(), [])

    def test_bad_values_are_reported_under_the_tag(self):
        """Zero, negative, a string: E030 naming the setting, through run_checks() with the tag."""
        for value in (0, -1, "1"):
            with self.subTest(value=value), override_settings(WEBSOCKET_OUTBOX_RELAY_INTERVAL=value):
                messages = [m for m in run_checks(tags=[TAG]) if m.id == "django_websocket.E030"]
                self.assertEqual(len(messages), 1)
                self.assertIn("WEBSOCKET_OUTBOX_RELAY_INTERVAL", messages[0].msg)
