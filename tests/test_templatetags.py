"""Tests for the {% websocket_url %} tag in django_websocket.templatetags.websockets."""

from __future__ import annotations

from unittest import mock

from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse
from django.template import Context, Engine, RequestContext, TemplateSyntaxError
from django.template.backends.django import get_installed_libraries
from django.test import RequestFactory, SimpleTestCase, override_settings
from django.urls import NoReverseMatch, get_script_prefix, path, set_script_prefix

REQUEST_PROCESSOR = "django.template.context_processors.request"

# An engine of our own, so the tests do not depend on the project's TEMPLATES.
engine = Engine(
    libraries={"websockets": "django_websocket.templatetags.websockets"},
    context_processors=[REQUEST_PROCESSOR],
)


def never_called(request, **kwargs):
    raise AssertionError("the websocket views are only reversed")


def page(request):
    """An ordinary HTTP view rendering the tag, for the end-to-end script prefix tests."""
    template = engine.from_string("{% load websockets %}{% websocket_url 'echo' %}")
    return HttpResponse(template.render(RequestContext(request)))


# Serves as both WEBSOCKET_URLCONF (the ws/ views) and ROOT_URLCONF (page/) in these tests.
urlpatterns = [
    path("ws/echo/", never_called, name="echo"),
    path("ws/room/<str:room>/", never_called, name="room"),
    path("ws/room/<str:room>/<int:page>/", never_called, name="room-page"),
    path("page/", page),
]


def render(source: str, context: dict | None = None, autoescape: bool = True) -> str:
    """Render *source* (after ``{% load websockets %}``) with a plain Context."""
    template = engine.from_string("{% load websockets %}" + source)
    return template.render(Context(context or {}, autoescape=autoescape))


@override_settings(
    WEBSOCKET_URLCONF=__name__,
    WEBSOCKET_SERVER=None,
    ALLOWED_HOSTS=["testserver", "example.com"],
    SECURE_PROXY_SSL_HEADER=None,
)
class WebsocketURLTagTests(SimpleTestCase):
    factory = RequestFactory()

    def setUp(self):
        self.request = self.factory.get("/")

    def test_library_is_installed(self):
        """The app's 'websockets' library is found by DjangoTemplates backends."""
        self.assertEqual(get_installed_libraries()["websockets"], "django_websocket.templatetags.websockets")

    def test_view_without_arguments(self):
        """The tag renders the absolute ws:// URL of a view."""
        self.assertEqual(
            render("{% websocket_url 'echo' %}", {"request": self.request}), "ws://testserver/ws/echo/"
        )

    def test_request_context_processor(self):
        """With the request context processor, a RequestContext is all the tag needs."""
        template = engine.from_string("{% load websockets %}{% websocket_url 'echo' %}")
        self.assertEqual(template.render(RequestContext(self.request)), "ws://testserver/ws/echo/")

    def test_secure_request(self):
        """An HTTPS request gives wss://."""
        request = self.factory.get("/", secure=True)
        self.assertEqual(
            render("{% websocket_url 'echo' %}", {"request": request}), "wss://testserver/ws/echo/"
        )

    @override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
    def test_secure_behind_proxy(self):
        """Behind a proxy, SECURE_PROXY_SSL_HEADER makes the tag give wss://."""
        request = self.factory.get("/", HTTP_HOST="example.com", HTTP_X_FORWARDED_PROTO="https")
        self.assertEqual(
            render("{% websocket_url 'echo' %}", {"request": request}), "wss://example.com/ws/echo/"
        )

    def test_positional_arguments(self):
        """Positional arguments, literal or from the context, fill the pattern."""
        output = render("{% websocket_url 'room-page' room 4 %}", {"request": self.request, "room": "lobby"})
        self.assertEqual(output, "ws://testserver/ws/room/lobby/4/")

    def test_keyword_arguments(self):
        """Keyword arguments fill the pattern by name, filters applied."""
        output = render(
            "{% websocket_url 'room-page' page=n room=name|lower %}",
            {"request": self.request, "name": "LOBBY", "n": 4},
        )
        self.assertEqual(output, "ws://testserver/ws/room/lobby/4/")

    def test_view_name_from_variable(self):
        """The view name may be a context variable."""
        output = render("{% websocket_url view %}", {"request": self.request, "view": "echo"})
        self.assertEqual(output, "ws://testserver/ws/echo/")

    def test_as_var(self):
        """'as var' stores the URL and renders nothing in place."""
        output = render("{% websocket_url 'room' 'lobby' as url %}[{{ url }}]", {"request": self.request})
        self.assertEqual(output, "[ws://testserver/ws/room/lobby/]")

    def test_as_var_no_reverse_match(self):
        """With 'as var', an unknown view stores an empty string, as {% url %} does."""
        output = render("{% websocket_url 'nope' as url %}[{{ url }}]", {"request": self.request})
        self.assertEqual(output, "[]")

    def test_no_reverse_match(self):
        """Without 'as var', an unknown view raises NoReverseMatch."""
        with self.assertRaises(NoReverseMatch):
            render("{% websocket_url 'nope' %}", {"request": self.request})

    def test_special_characters_in_html(self):
        """Quotes, angle brackets and & in an argument reach the HTML percent-encoded."""
        output = render(
            "<a data-url=\"{% websocket_url 'room' room=evil %}\">",
            {"request": self.request, "evil": "\"'<>&"},
        )
        self.assertEqual(output, '<a data-url="ws://testserver/ws/room/%22%27%3C%3E%26/">')

    def test_special_characters_in_js_string(self):
        """An argument cannot break out of a JavaScript string literal, with or without autoescape."""
        source = "new WebSocket(\"{% websocket_url 'room' room=evil %}\");"
        context = {"request": self.request, "evil": "\");alert(1)<b>&'"}
        # ( ) ; are RFC 3986 sub-delimiters reverse() leaves alone; harmless without a quote.
        expected = 'new WebSocket("ws://testserver/ws/room/%22);alert(1)%3Cb%3E%26%27/");'
        self.assertEqual(render(source, context), expected)
        self.assertEqual(render(source, context, autoescape=False), expected)

    def test_as_var_output_is_autoescaped(self):
        """A stored URL printed with {{ var }} goes through the usual autoescaping."""
        with mock.patch(
            "django_websocket.templatetags.websockets.build_websocket_url", return_value="ws://h/<&>"
        ):
            output = render("{% websocket_url 'echo' as url %}{{ url }}", {"request": self.request})
        self.assertEqual(output, "ws://h/&lt;&amp;&gt;")

    def test_output_is_conditionally_escaped(self):
        """The tag's output is HTML-escaped under autoescape and left alone without it."""
        with mock.patch(
            "django_websocket.templatetags.websockets.build_websocket_url", return_value="ws://h/<&>"
        ):
            self.assertEqual(
                render("{% websocket_url 'echo' %}", {"request": self.request}), "ws://h/&lt;&amp;&gt;"
            )
            self.assertEqual(
                render("{% websocket_url 'echo' %}", {"request": self.request}, autoescape=False),
                "ws://h/<&>",
            )
            self.assertEqual(
                render(
                    "{% autoescape off %}{% websocket_url 'echo' %}{% endautoescape %}",
                    {"request": self.request},
                ),
                "ws://h/<&>",
            )

    @override_settings(WEBSOCKET_SERVER=":8001")
    def test_server_port(self):
        """WEBSOCKET_SERVER = ':port' swaps the port of the request's host."""
        request = self.factory.get("/", HTTP_HOST="example.com:8000")
        self.assertEqual(
            render("{% websocket_url 'echo' %}", {"request": request}), "ws://example.com:8001/ws/echo/"
        )

    @override_settings(WEBSOCKET_SERVER="ws.example.com:8443")
    def test_server_host(self):
        """WEBSOCKET_SERVER = 'host:port' replaces the request's host."""
        request = self.factory.get("/", secure=True)
        self.assertEqual(
            render("{% websocket_url 'echo' %}", {"request": request}), "wss://ws.example.com:8443/ws/echo/"
        )

    def test_missing_request(self):
        """Without a request in the context or WEBSOCKET_SERVER, the error names the context processor."""
        with self.assertRaisesMessage(ImproperlyConfigured, REQUEST_PROCESSOR):
            render("{% websocket_url 'echo' %}")

    @override_settings(WEBSOCKET_SERVER=":8001")
    def test_missing_request_with_server_port_only(self):
        """Without a request, WEBSOCKET_SERVER = ':port' is not enough either."""
        with self.assertRaisesMessage(ImproperlyConfigured, REQUEST_PROCESSOR):
            render("{% websocket_url 'echo' %}")

    @override_settings(WEBSOCKET_SERVER="ws.example.com")
    def test_missing_request_with_server_host(self):
        """Without a request, a WEBSOCKET_SERVER host gives a ws:// URL."""
        self.assertEqual(render("{% websocket_url 'echo' %}"), "ws://ws.example.com/ws/echo/")

    @override_settings(WEBSOCKET_SERVER="ws.example.com")
    def test_mixed_arguments_without_request(self):
        """Mixing positional and keyword arguments is reported as such, not as a missing request."""
        with self.assertRaisesMessage(ValueError, "Don't mix"):
            render("{% websocket_url 'room-page' 'lobby' page=2 %}")

    def test_no_arguments(self):
        """The tag without a view name is a TemplateSyntaxError."""
        with self.assertRaisesMessage(TemplateSyntaxError, "at least one argument"):
            render("{% websocket_url %}")

    def test_malformed_argument(self):
        """A malformed keyword argument is a TemplateSyntaxError."""
        with self.assertRaises(TemplateSyntaxError):
            render("{% websocket_url 'room' room==x %}")


@override_settings(
    WEBSOCKET_URLCONF=__name__,
    ROOT_URLCONF=__name__,
    WEBSOCKET_SERVER=None,
    ALLOWED_HOSTS=["testserver"],
    MIDDLEWARE=[],
    FORCE_SCRIPT_NAME=None,
)
class ScriptPrefixTests(SimpleTestCase):
    """Pages served by Django's real WSGIHandler, which sets the script prefix per request."""

    def setUp(self):
        self.addCleanup(set_script_prefix, get_script_prefix())
        # As django.test.Client does: no database work from the request signals here.
        from django.core.signals import request_started
        from django.db import close_old_connections

        request_started.disconnect(close_old_connections)
        self.addCleanup(request_started.connect, close_old_connections)

    def get_page(self, script_name: str) -> str:
        """Serve /page/ under *script_name* through WSGIHandler and return the body."""
        environ = RequestFactory().get("/page/", SCRIPT_NAME=script_name).environ
        statuses = []
        body = b"".join(WSGIHandler()(environ, lambda status, headers: statuses.append(status)))
        self.assertEqual(statuses, ["200 OK"])
        return body.decode()

    def test_script_name(self):
        """A site mounted at SCRIPT_NAME gets websocket URLs under that prefix."""
        self.assertEqual(self.get_page("/app"), "ws://testserver/app/ws/echo/")

    @override_settings(FORCE_SCRIPT_NAME="/forced")
    def test_force_script_name(self):
        """FORCE_SCRIPT_NAME overrides SCRIPT_NAME in websocket URLs too."""
        self.assertEqual(self.get_page("/app"), "ws://testserver/forced/ws/echo/")
