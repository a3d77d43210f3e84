"""django_websocket.accepted: the request's messages storage, lazy until something uses it."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage.base import BaseStorage
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.test import RequestFactory, TestCase
from django.utils.functional import SimpleLazyObject

from django_websocket.accepted import (
    DeferredMessageMiddleware,
    defer_message_storage,
    lighten,
    unmade,
    untouched,
)
from django_websocket.handler import WebSocketHandler
from django_websocket.testing import WebSocketClient


def handshake_request(cookies: dict[str, str] | None = None, message_middleware=MessageMiddleware):
    """A request through the session and message middleware, as a websocket view gets it."""
    request = RequestFactory().get("/echo/")
    request.COOKIES.update(cookies or {})
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    message_middleware(lambda r: HttpResponse()).process_request(request)
    return request


def cookie_with(*texts: str) -> dict[str, str]:
    """The messages cookie a previous response would have set with *texts*."""
    request, response = handshake_request(), HttpResponse()
    for text in texts:
        messages.info(request, text)
    request._messages.update(response)
    return {CookieStorage.cookie_name: response.cookies[CookieStorage.cookie_name].value}


@pytest.mark.django_db
def test_an_unused_storage_is_rebuilt_the_same_when_the_view_reads_it():
    request = handshake_request(cookie_with("saved before"))
    middleware_storage = request._messages
    lighten(request)
    assert isinstance(request._messages, SimpleLazyObject)
    assert isinstance(request._messages, type(middleware_storage))  # what Django's checks see
    assert [str(message) for message in messages.get_messages(request)] == ["saved before"]


@pytest.mark.django_db
def test_messages_can_be_added_after_the_storage_was_made_lazy():
    request = handshake_request()
    lighten(request)
    messages.warning(request, "added in the view")
    assert [str(message) for message in messages.get_messages(request)] == ["added in the view"]
    assert isinstance(request._messages, BaseStorage)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "use",
    [
        lambda request: messages.info(request, "queued"),
        lambda request: list(messages.get_messages(request)),
        lambda request: messages.set_level(request, messages.DEBUG),
    ],
    ids=["added", "read", "level set"],
)
def test_a_storage_already_used_is_kept(use):
    request = handshake_request(cookie_with("saved before"))
    use(request)
    storage = request._messages
    assert not untouched(storage)
    lighten(request)
    assert request._messages is storage


def test_a_request_without_messages_or_with_an_unknown_storage_is_left_alone():
    request = RequestFactory().get("/echo/")
    lighten(request)
    assert not hasattr(request, "_messages")
    request._messages = storage = object()  # no used/added_new/_queued_messages: touched
    lighten(request)
    assert request._messages is storage


def deferred_request(cookies: dict[str, str] | None = None):
    """A request through the session middleware and :class:`DeferredMessageMiddleware`'s request half."""
    return handshake_request(cookies, DeferredMessageMiddleware)


@pytest.mark.django_db
def test_the_deferred_storage_is_made_on_first_use_as_djangos():
    request = deferred_request(cookie_with("saved before"))
    assert unmade(request._messages)
    assert isinstance(request._messages, FallbackStorage)  # what Django's checks see
    assert [str(message) for message in messages.get_messages(request)] == ["saved before"]
    assert not unmade(request._messages)


@pytest.mark.django_db
def test_an_unused_deferred_storage_is_not_made_on_the_way_out_and_sets_no_cookie():
    request = deferred_request(cookie_with("saved before"))
    response = DeferredMessageMiddleware(lambda r: HttpResponse()).process_response(request, HttpResponse())
    assert unmade(request._messages)
    assert not response.cookies


@pytest.mark.django_db
def test_a_message_added_before_the_response_is_stored_as_djangos_middleware_stores_it():
    def added(middleware_class):
        request = handshake_request(message_middleware=middleware_class)
        messages.info(request, "added before the 101")
        response = middleware_class(lambda r: HttpResponse()).process_response(request, HttpResponse())
        return response.cookies[CookieStorage.cookie_name]

    deferred, djangos = added(DeferredMessageMiddleware), added(MessageMiddleware)
    assert deferred.value and deferred.value == djangos.value


@pytest.mark.django_db
def test_lighten_leaves_an_unmade_storage_as_it_is():
    request = deferred_request()
    storage = request._messages
    lighten(request)
    assert request._messages is storage and unmade(storage)


def chain_of(*middleware_classes):
    """A middleware chain as Django builds it (``convert_exception_to_response`` around each)."""
    chain = convert_exception_to_response(lambda request: HttpResponse())
    for middleware_class in reversed(middleware_classes):
        chain = convert_exception_to_response(middleware_class(chain))
    return chain


def middleware_in(chain):
    found = []
    while chain is not None:
        middleware = getattr(chain, "__wrapped__", None)
        found.append(type(middleware))
        chain = getattr(middleware, "get_response", None)
    return found


def test_djangos_message_middleware_in_a_chain_is_deferred():
    chain = chain_of(SessionMiddleware, MessageMiddleware, XFrameOptionsMiddleware)
    assert defer_message_storage(chain)
    assert DeferredMessageMiddleware in middleware_in(chain)
    assert MessageMiddleware not in middleware_in(chain)


def test_a_subclass_or_a_chain_the_walk_cannot_follow_is_left_alone():
    class OwnMessageMiddleware(MessageMiddleware):
        pass

    def function_middleware(get_response):
        return lambda request: get_response(request)

    assert not defer_message_storage(chain_of(SessionMiddleware, OwnMessageMiddleware))
    assert not defer_message_storage(chain_of(function_middleware, MessageMiddleware))
    assert not defer_message_storage(chain_of(SessionMiddleware))


def test_the_websocket_handler_defers_the_message_storage():
    assert DeferredMessageMiddleware in middleware_in(WebSocketHandler()._middleware_chain)


class MessagesInViewTests(TestCase):
    def test_the_view_reads_the_cookies_messages_and_adds_its_own(self):
        client = WebSocketClient()
        client.cookies[CookieStorage.cookie_name] = cookie_with("saved before")[CookieStorage.cookie_name]
        with client.connect("/flash-messages/") as ws:
            assert ws.receive_json() == ["saved before"]
            assert ws.receive_json() == ["saved before", "added in the view"]  # as Django iterates
