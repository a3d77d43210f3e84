"""django_websocket.accepted: the request's messages storage, lazy until the view uses it."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage.base import BaseStorage
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject

from django_websocket.accepted import lighten, untouched


def handshake_request(cookies: dict[str, str] | None = None):
    """A request through the session and message middleware, as a websocket view gets it."""
    request = RequestFactory().get("/echo/")
    request.COOKIES.update(cookies or {})
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    MessageMiddleware(lambda r: HttpResponse()).process_request(request)
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
