"""The demo's live ops page (``/ops/``, staff only): every worker's sockets, traffic and channels.

How the numbers travel: each worker process publishes a snapshot of itself
(:func:`snapshot`) to channel :data:`CHANNEL` about once a second; the ops socket forwards
that channel to the page, which merges the snapshots by pid, computes messages/s from two
consecutive ones and forgets a worker not heard from for 5 s. With Redis every worker's
snapshot reaches every page, whichever worker serves it; with the in-process broker there is
one process, so one snapshot.

Why a publisher in every worker, started with the worker rather than by the ops socket: a
worker only receives a channel's messages while one of its own sockets subscribes, so a worker
without an ops page could never learn that one is open elsewhere; it must publish regardless.
:class:`OpsPublisherMiddleware` starts it when Django builds the worker's handler, at boot
(or, when the handler was built before the fork, as with ``gunicorn --preload``, at the
worker's first request). Without the middleware in ``MIDDLEWARE`` only a worker that serves
an ops socket publishes (the socket starts it too).

The cost: one small message (a few hundred bytes, one ``PUBLISH``) per worker per second,
dropped by the broker when nobody listens; the presence reads (one per top channel, a Redis
round trip each) are skipped unless the last snapshot had receivers, and done at most every
:data:`PRESENCE_INTERVAL` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

import gevent
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponseForbidden
from django.shortcuts import render
from gevent import monkey

from django_websocket.brokers import hubs
from django_websocket.connection import open_connections
from django_websocket.counters import Counters, counters
from django_websocket.decorators import websocket as websocket_view
from django_websocket.exceptions import PublishError
from django_websocket.publishing import presence, publish

logger = logging.getLogger(__name__)

#: The channel every worker's snapshot is published to.
CHANNEL = "ops:workers"
#: Seconds between two snapshots of one worker.
INTERVAL = 1.0
#: Seconds between two presence reads (only while somebody listens).
PRESENCE_INTERVAL = 5.0
#: Channels listed per worker, by subscriber count; their presence is read.
TOP_CHANNELS = 5

#: When this process's publisher started (epoch seconds); empty until it has.
_started: list[float] = []


def top_channels(hubs: Iterable[Any], limit: int = TOP_CHANNELS) -> list[tuple[str, int]]:
    """The *limit* channels with the most subscribed sockets in *hubs*: ``[(channel, sockets), ...]``.

    A socket subscribes to a channel's broker key for everyone and to one key per audience it
    belongs to (its user, groups, session), all in a hub's ``mailboxes``: only the key for
    everyone is counted, so each socket once. Ties go by name, so the order is stable.
    """
    subscribers: dict[str, int] = {}
    for hub in hubs:
        for key, mailboxes in list(hub.mailboxes.items()):
            channel = hub.channel_name(key)
            if key == hub.broker.key(channel):
                subscribers[channel] = subscribers.get(channel, 0) + len(mailboxes)
    ranked = sorted(subscribers.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:limit]


def snapshot(
    *,
    pid: int,
    started: float,
    now: float,
    sockets: int,
    totals: Counters,
    hubs: Iterable[Any],
    members: dict[str, int] | None = None,
) -> dict[str, Any]:
    """This worker's state as the page reads it (JSON-ready; the page relies on these keys).

    - ``pid``, ``uptime`` (seconds since *started*), ``time`` (*now*, epoch seconds: the page
      divides counter differences by time differences);
    - ``sockets``: websockets open in the process now;
    - ``in`` / ``out`` / ``bytes_in`` / ``bytes_out``: the cumulative counters of *totals*;
    - ``handshakes``: ``{status: count}`` (status as a string: JSON keys are strings);
    - ``channels``: ``[[channel, sockets here, members or None], ...]``, most subscribed first,
      with the members count of the channel's presence (cluster-wide) from *members* when known.
    """
    members = members or {}
    return {
        "pid": pid,
        "time": now,
        "uptime": round(now - started, 1),
        "sockets": sockets,
        "in": totals.messages_received,
        "out": totals.messages_sent,
        "bytes_in": totals.bytes_received,
        "bytes_out": totals.bytes_sent,
        "handshakes": {str(status): count for status, count in sorted(totals.handshakes.items())},
        "channels": [[channel, count, members.get(channel)] for channel, count in top_channels(hubs)],
    }


def read_members(channels: Iterable[str], read: Callable[[str], list[dict]] = presence) -> dict[str, int]:
    """``{channel: people in its presence}`` for *channels*, less those the broker cannot answer for."""
    found: dict[str, int] = {}
    for channel in channels:
        try:
            found[channel] = len(read(channel))
        except PublishError as error:
            logger.debug("ops: no presence for %s: %s", channel, error)
    return found


def current_snapshot(members: dict[str, int] | None = None) -> dict[str, Any]:
    """:func:`snapshot` of this process now."""
    return snapshot(
        pid=os.getpid(),
        started=_started[0] if _started else time.time(),
        now=time.time(),
        sockets=len(open_connections),
        totals=counters,
        hubs=hubs(),
        members=members,
    )


def publish_forever() -> None:
    """Publish this worker's snapshot every :data:`INTERVAL` seconds, for the life of the process."""
    listened = False
    members: dict[str, int] = {}
    members_read = 0.0
    while True:
        now = time.monotonic()
        if listened and now - members_read >= PRESENCE_INTERVAL:
            members_read = now
            members = read_members(channel for channel, _ in top_channels(hubs()))
        try:
            listened = publish(CHANNEL, current_snapshot(members)).receivers > 0
        except PublishError as error:  # the broker is away: try again next time
            logger.debug("ops: snapshot not published: %s", error)
            listened = False
        except Exception:  # a bug here must not end the process's snapshots for good
            logger.exception("ops: snapshot failed")
        gevent.sleep(INTERVAL)


def ensure_started() -> None:
    """Start this process's publisher greenlet once (only under gevent's monkey-patching: a server)."""
    if _started:
        return
    if not monkey.is_module_patched("socket"):
        return  # runserver, manage.py, tests: no gevent loop runs the greenlet
    _started.append(time.time())
    gevent.spawn(publish_forever)


class OpsPublisherMiddleware:
    """Starts the worker's snapshot publisher when Django loads the middleware, else at a first request.

    Django builds the middleware chain when the WSGI handler is made: in a gunicorn worker, at
    boot. Per request it costs one list test.
    """

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        ensure_started()

    def __call__(self, request: Any) -> Any:
        if not _started:
            ensure_started()
        return self.get_response(request)


def staff_only(view: Callable) -> Callable:
    """Refuse the handshake with 403 unless the user is active staff (a socket follows no redirect)."""

    @wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        user = request.user
        if not (user.is_active and user.is_staff):
            return HttpResponseForbidden("staff only")
        return view(request, *args, **kwargs)

    return wrapper


@staff_member_required
def ops_page(request: Any) -> Any:
    """The ops page (staff only; others go to the admin login)."""
    return render(request, "ops.html", {"channel": CHANNEL, "top": TOP_CHANNELS})


@staff_only
@websocket_view
def ops_socket(request: Any, websocket: Any) -> None:
    """Forward every worker's snapshots to the page until it closes."""
    ensure_started()
    websocket.subscribe(CHANNEL, forward=True)
    for _ in websocket:
        pass  # the page sends nothing; a message from it is ignored
