"""Step 4½ of a connection: what the request keeps once its handshake is accepted.

The view's ``request`` lives as long as its websocket, and with it whatever the middleware hung
on it. Some of that the view seldom touches and can be made again, the same, if it does:
:func:`lighten` puts a lazy stand-in in its place, which builds it on first use.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def lighten(request: HttpRequest) -> None:
    """Replace what the middleware made for *request* and nothing used yet by lazy equivalents.

    Today: ``django.contrib.messages``' storage (``request._messages``; with the default
    ``FallbackStorage``, two storages and a cookie ``Signer``: about 0.9 KB per socket). The
    view's ``messages.get_messages(request)`` or ``messages.info(request, …)`` get a storage
    of the same class, built from the same cookies and session as the middleware's. A storage
    something already read, added to or marked used is left as it is.
    """
    storage = vars(request).get("_messages")
    if storage is not None and untouched(storage):
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
