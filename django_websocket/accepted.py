"""Step 4½ of a connection: what the request keeps once its handshake is accepted.

The view's ``request`` lives as long as its websocket, and with it whatever the middleware hung
on it. Some of that the view seldom touches and can be made again, the same, if it does:
:func:`lighten` puts a lazy stand-in in its place, which builds it on first use. Django's
``MessageMiddleware`` in the websocket handler's chain makes its storage lazy from the start
(:func:`defer_message_storage`): most handshakes never read or add a message, and the storage
(two storages and a cookie ``Signer`` with the default ``FallbackStorage``) costs about 30 µs
to make.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse
from django.utils.functional import LazyObject, SimpleLazyObject, empty


def lighten(request: HttpRequest) -> None:
    """Replace what the middleware made for *request* and nothing used yet by lazy equivalents.

    Today: ``django.contrib.messages``' storage (``request._messages``; with the default
    ``FallbackStorage``, two storages and a cookie ``Signer``: about 0.9 KB per socket). The
    view's ``messages.get_messages(request)`` or ``messages.info(request, …)`` get a storage
    of the same class, built from the same cookies and session as the middleware's. A storage
    something already read, added to or marked used is left as it is; one still lazy
    (:class:`DeferredMessageMiddleware`'s, never used) too.
    """
    storage = vars(request).get("_messages")
    if storage is not None and not unmade(storage) and untouched(storage):
        request._messages = SimpleLazyObject(partial(type(storage), request))


def untouched(storage: Any) -> bool:
    """Whether *storage* (and its ``storages``, for ``FallbackStorage``) holds no state of its own yet.

    Django's storages load lazily, queue what is added, note ``used``/``added_new`` and a level
    set; a storage class without these attributes counts as touched.
    """
    parts = [storage, *getattr(storage, "storages", ())]
    return not getattr(storage, "_used_storages", None) and all(
        getattr(part, "used", True) is False
        and getattr(part, "added_new", True) is False
        and getattr(part, "_queued_messages", None) == []
        and "_loaded_data" not in vars(part)
        and "_level" not in vars(part)
        for part in parts
    )


def unmade(value: Any) -> bool:
    """Whether *value* is a lazy object that nothing has used yet (so nothing has made it)."""
    return isinstance(value, LazyObject) and value._wrapped is empty


class DeferredMessageMiddleware(MessageMiddleware):
    """Django's ``MessageMiddleware`` whose storage is made when something first uses it.

    ``request._messages`` is a lazy object that makes ``default_storage(request)`` on first use:
    Django's ``messages`` API, ``isinstance()`` checks and the view see the storage itself. On
    the way out, a storage nothing used is not made just to be told there is nothing to store;
    one that was made is updated as Django's middleware updates it.
    """

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(partial(default_storage, request))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if unmade(vars(request).get("_messages")):
            return response
        return super().process_response(request, response)


def defer_message_storage(chain: Callable[..., Any]) -> bool:
    """Make Django's own ``MessageMiddleware`` in a handler's *chain* a :class:`DeferredMessageMiddleware`.

    The chain is walked as Django builds it: each layer wraps a middleware instance (its
    ``__wrapped__``, set by ``functools.wraps``) whose ``get_response`` is the next layer. A
    subclass of Django's middleware (it may rely on the storage being made) and a chain the
    walk cannot follow (a function middleware, an async adapter) are left as they are.
    Returns whether a middleware was changed.
    """
    layer: Any = chain
    while layer is not None:
        middleware = getattr(layer, "__wrapped__", None)
        if type(middleware) is MessageMiddleware:
            middleware.__class__ = DeferredMessageMiddleware
            return True
        layer = getattr(middleware, "get_response", None)
    return False
