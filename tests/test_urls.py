"""Tests for django_websocket.urls: reverse_websocket(), websocket_url() and split_server()."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.core.handlers.wsgi import get_script_name
from django.http import HttpRequest
from django.test import RequestFactory, SimpleTestCase, override_settings
from django.urls import NoReverseMatch, get_script_prefix, include, path, resolve, set_script_prefix

from django_websocket.urls import MissingRequestError, reverse_websocket, split_server, websocket_url


def never_called(request, **kwargs):
    raise AssertionError("URL tests only reverse; no view runs")


urlpatterns = [
    path("ws/echo/", never_called, name="echo"),
    path("ws/room/<str:room>/", never_called, name="room"),
    path("ws/room/<str:room>/<int:page>/", never_called, name="room-page"),
    path("ws/chat/", include(([path("<slug:slug>/", never_called, name="room")], "chat"))),
]


@contextmanager
def script_prefix_of(request: HttpRequest) -> Iterator[None]:
    """Set the script prefix from *request* as Django's WSGIHandler does, then restore it."""
    previous = get_script_prefix()
    set_script_prefix(get_script_name(request.environ))
    try:
        yield
    finally:
        set_script_prefix(previous)


@override_settings(
    WEBSOCKET_URLCONF=__name__,
    WEBSOCKET_SERVER=None,
    ALLOWED_HOSTS=["testserver", "example.com", "[::1]"],
    SECURE_PROXY_SSL_HEADER=None,
)
class ReverseWebsocketTests(SimpleTestCase):
    def test_path_without_arguments(self):
        """A view without arguments reverses to its path in WEBSOCKET_URLCONF."""
        self.assertEqual(reverse_websocket("echo"), "/ws/echo/")

    def test_positional_arguments(self):
        """Positional arguments fill the pattern in order."""
        self.assertEqual(reverse_websocket("room-page", "lobby", 2), "/ws/room/lobby/2/")

    def test_keyword_arguments(self):
        """Keyword arguments fill the pattern by name."""
        self.assertEqual(reverse_websocket("room-page", room="lobby", page=2), "/ws/room/lobby/2/")

    def test_namespaced_view(self):
        """A namespaced view name reverses through its include()."""
        self.assertEqual(reverse_websocket("chat:room", "general"), "/ws/chat/general/")

    def test_unknown_view(self):
        """An unknown view name raises NoReverseMatch."""
        with self.assertRaises(NoReverseMatch):
            reverse_websocket("nope")

    def test_urlconf_setting_read_live(self):
        """WEBSOCKET_URLCONF is read at each call, so an overridden value is the one imported."""
        with override_settings(WEBSOCKET_URLCONF="django_websocket.tests_no_such_urls"):
            with self.assertRaises(ModuleNotFoundError):
                reverse_websocket("echo")

    def test_mixed_arguments_refused(self):
        """Positional and keyword arguments together are refused, as by reverse()."""
        with self.assertRaises(ValueError):
            reverse_websocket("room-page", "lobby", page=2)

    def test_missing_urlconf(self):
        """Without WEBSOCKET_URLCONF, ImproperlyConfigured names the setting."""
        with override_settings():
            del settings.WEBSOCKET_URLCONF
            with self.assertRaisesMessage(ImproperlyConfigured, "WEBSOCKET_URLCONF"):
                reverse_websocket("echo")

    def test_script_name_prefix(self):
        """SCRIPT_NAME, turned into the script prefix by the handler, prefixes the path."""
        request = RequestFactory().get("/", SCRIPT_NAME="/app")
        with script_prefix_of(request):
            self.assertEqual(reverse_websocket("echo"), "/app/ws/echo/")

    @override_settings(FORCE_SCRIPT_NAME="/forced/")
    def test_force_script_name_prefix(self):
        """FORCE_SCRIPT_NAME wins over SCRIPT_NAME, as for reverse()."""
        request = RequestFactory().get("/", SCRIPT_NAME="/app")
        with script_prefix_of(request):
            self.assertEqual(reverse_websocket("echo"), "/forced/ws/echo/")


@override_settings(
    WEBSOCKET_URLCONF=__name__,
    WEBSOCKET_SERVER=None,
    ALLOWED_HOSTS=["testserver", "example.com", "[::1]"],
    SECURE_PROXY_SSL_HEADER=None,
)
class WebsocketURLTests(SimpleTestCase):
    factory = RequestFactory()

    def test_plain_request_gives_ws(self):
        """A plain-HTTP request gives ws:// on the request's own host."""
        request = self.factory.get("/")
        self.assertEqual(websocket_url(request, "echo"), "ws://testserver/ws/echo/")

    def test_secure_request_gives_wss(self):
        """An HTTPS request gives wss://."""
        request = self.factory.get("/", secure=True)
        self.assertEqual(websocket_url(request, "echo"), "wss://testserver/ws/echo/")

    @override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
    def test_secure_behind_proxy_gives_wss(self):
        """Behind a TLS-terminating proxy, SECURE_PROXY_SSL_HEADER makes the URL wss://."""
        request = self.factory.get("/", HTTP_HOST="example.com", HTTP_X_FORWARDED_PROTO="https")
        self.assertEqual(websocket_url(request, "echo"), "wss://example.com/ws/echo/")

    @override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
    def test_plain_behind_proxy_gives_ws(self):
        """A proxy header saying http keeps ws://."""
        request = self.factory.get("/", HTTP_HOST="example.com", HTTP_X_FORWARDED_PROTO="http")
        self.assertEqual(websocket_url(request, "echo"), "ws://example.com/ws/echo/")

    def test_forwarded_proto_ignored_without_setting(self):
        """X-Forwarded-Proto is not trusted unless SECURE_PROXY_SSL_HEADER says so."""
        request = self.factory.get("/", HTTP_X_FORWARDED_PROTO="https")
        self.assertEqual(websocket_url(request, "echo"), "ws://testserver/ws/echo/")

    def test_request_host_keeps_its_port(self):
        """Without WEBSOCKET_SERVER the request's host and port are used as they are."""
        request = self.factory.get("/", HTTP_HOST="example.com:8000")
        self.assertEqual(websocket_url(request, "echo"), "ws://example.com:8000/ws/echo/")

    def test_disallowed_request_host(self):
        """A Host outside ALLOWED_HOSTS raises DisallowedHost, as get_host() does."""
        request = self.factory.get("/", HTTP_HOST="evil.example.net")
        with self.assertRaises(DisallowedHost):
            websocket_url(request, "echo")

    def test_positional_and_keyword_arguments(self):
        """URL arguments are passed on, positionally or by keyword."""
        request = self.factory.get("/")
        self.assertEqual(websocket_url(request, "room-page", "lobby", 3), "ws://testserver/ws/room/lobby/3/")
        self.assertEqual(
            websocket_url(request, "room-page", room="lobby", page=3), "ws://testserver/ws/room/lobby/3/"
        )

    def test_url_arguments_named_like_parameters(self):
        """URL keyword arguments called request or viewname do not clash with the parameters."""
        self.assertEqual(
            websocket_url(self.factory.get("/"), "room", room="request"), "ws://testserver/ws/room/request/"
        )

    def test_html_and_js_special_characters_are_percent_encoded(self):
        """Quotes, angle brackets, & and backslash in arguments come out percent-encoded."""
        evil = "\"'<>&\\ x"
        url = websocket_url(self.factory.get("/"), "room", room=evil)
        self.assertEqual(url, "ws://testserver/ws/room/%22%27%3C%3E%26%5C%20x/")
        for char in "\"'<>&\\":
            self.assertNotIn(char, url)

    def test_percent_encoded_path_resolves_to_the_original_argument(self):
        """The encoded path resolves, as Django decodes it, back to the original argument."""
        evil = "\"'<>&\\ x"
        path_info = unquote(urlsplit(websocket_url(self.factory.get("/"), "room", room=evil)).path)
        self.assertEqual(resolve(path_info, urlconf=__name__).kwargs, {"room": evil})

    def test_script_prefix(self):
        """The script prefix set from SCRIPT_NAME is part of the absolute URL."""
        request = self.factory.get("/", SCRIPT_NAME="/app")
        with script_prefix_of(request):
            self.assertEqual(websocket_url(request, "echo"), "ws://testserver/app/ws/echo/")

    @override_settings(WEBSOCKET_SERVER="ws.example.com")
    def test_server_host(self):
        """WEBSOCKET_SERVER = 'host' replaces the request's host and port."""
        request = self.factory.get("/", HTTP_HOST="example.com:8000")
        self.assertEqual(websocket_url(request, "echo"), "ws://ws.example.com/ws/echo/")

    @override_settings(WEBSOCKET_SERVER="ws.example.com:8443")
    def test_server_host_and_port_secure(self):
        """WEBSOCKET_SERVER = 'host:port' is used verbatim; the scheme still follows the request."""
        request = self.factory.get("/", secure=True)
        self.assertEqual(websocket_url(request, "echo"), "wss://ws.example.com:8443/ws/echo/")

    @override_settings(WEBSOCKET_SERVER="ws.example.com")
    def test_server_host_skips_host_validation(self):
        """With WEBSOCKET_SERVER naming a host, the request's Host header is not consulted."""
        request = self.factory.get("/", HTTP_HOST="evil.example.net")
        self.assertEqual(websocket_url(request, "echo"), "ws://ws.example.com/ws/echo/")

    @override_settings(WEBSOCKET_SERVER=":8001")
    def test_server_port_replaces_request_port(self):
        """WEBSOCKET_SERVER = ':port' keeps the request's hostname and swaps its port."""
        request = self.factory.get("/", HTTP_HOST="example.com:8000")
        self.assertEqual(websocket_url(request, "echo"), "ws://example.com:8001/ws/echo/")

    @override_settings(WEBSOCKET_SERVER=":8001")
    def test_server_port_adds_port(self):
        """WEBSOCKET_SERVER = ':port' adds the port to a request host that has none."""
        request = self.factory.get("/", HTTP_HOST="example.com")
        self.assertEqual(websocket_url(request, "echo"), "ws://example.com:8001/ws/echo/")

    @override_settings(WEBSOCKET_SERVER=":8001")
    def test_server_port_with_ipv6_host(self):
        """WEBSOCKET_SERVER = ':port' keeps an IPv6 request host's brackets, with or without a port."""
        for host in ("[::1]:8000", "[::1]"):
            with self.subTest(host=host):
                request = self.factory.get("/", HTTP_HOST=host)
                self.assertEqual(websocket_url(request, "echo"), "ws://[::1]:8001/ws/echo/")

    @override_settings(WEBSOCKET_SERVER="ws.example.com:8443")
    def test_no_request_with_server_host(self):
        """Without a request, WEBSOCKET_SERVER naming a host gives a ws:// URL."""
        self.assertEqual(websocket_url(None, "echo"), "ws://ws.example.com:8443/ws/echo/")

    def test_no_request_without_server(self):
        """Without a request or WEBSOCKET_SERVER, MissingRequestError explains what is needed."""
        with self.assertRaisesMessage(MissingRequestError, "WEBSOCKET_SERVER"):
            websocket_url(None, "echo")

    @override_settings(WEBSOCKET_SERVER=":8001")
    def test_no_request_with_server_port_only(self):
        """Without a request, WEBSOCKET_SERVER = ':port' cannot give a host: MissingRequestError."""
        with self.assertRaisesMessage(MissingRequestError, "':8001'"):
            websocket_url(None, "echo")

    @override_settings(WEBSOCKET_SERVER="wss://ws.example.com")
    def test_malformed_server(self):
        """A malformed WEBSOCKET_SERVER raises ValueError when a URL is built."""
        with self.assertRaisesMessage(ValueError, "scheme"):
            websocket_url(self.factory.get("/"), "echo")


class SplitServerTests(SimpleTestCase):
    def test_valid_forms(self):
        """host, host:port, :port and bracketed IPv6 split into (host, port)."""
        cases = {
            "ws.example.com": ("ws.example.com", None),
            "ws.example.com:8443": ("ws.example.com", "8443"),
            ":8001": ("", "8001"),
            "127.0.0.1:8001": ("127.0.0.1", "8001"),
            "[::1]": ("[::1]", None),
            "[::1]:8001": ("[::1]", "8001"),
            "WS.Example.COM": ("WS.Example.COM", None),
        }
        for value, expected in cases.items():
            with self.subTest(value=value):
                self.assertEqual(split_server(value), expected)

    def test_invalid_forms(self):
        """Schemes, paths, bare IPv6, bad ports, blanks and empty values raise ValueError."""
        cases = {
            "ws://ws.example.com": "scheme",
            "ws.example.com/ws": "path",
            "::1": "brackets",
            "ws.example.com:0": "port 0",
            "ws.example.com:65536": "port 65536",
            "ws.example.com:http": "host:port",
            ":": "host:port",
            "": "empty",
            " ws.example.com": "host:port",
            "user@ws.example.com": "host:port",
        }
        for value, message in cases.items():
            with self.subTest(value=value):
                with self.assertRaisesMessage(ValueError, message):
                    split_server(value)
