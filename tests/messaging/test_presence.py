"""django_websocket.messaging.presence: connection ids, member dicts, events, aggregation."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.test import RequestFactory

from django_websocket.events import Join, Leave
from django_websocket.messaging.presence import change, connection_id, member_for, summarize


def test_connection_ids_are_unique_and_name_the_process():
    import os

    first, second = connection_id(), connection_id()
    assert first != second and f":{os.getpid()}:" in first


@pytest.mark.django_db
def test_member_for_the_user_a_handle_or_anonymous():
    request = RequestFactory().get("/")
    request.user = User.objects.create(username="zoe")
    assert member_for(request, True, "c1") == {"user": request.user.pk, "name": "zoe", "conn": "c1"}
    request.user = AnonymousUser()
    assert member_for(request, True, "c2") == {"user": None, "name": "anonymous", "conn": "c2"}
    assert member_for(request, {"name": "Bo", "color": "#fff"}, "c3") == {
        "user": None, "name": "Bo", "color": "#fff", "conn": "c3",
    }  # fmt: skip
    for bad in [{"color": "#fff"}, {"name": 3}, "bo", {"name": "x", "obj": object()}]:
        with pytest.raises((ValueError, TypeError)):
            member_for(request, bad, "c4")


def test_a_change_is_a_join_or_a_leave_with_its_wire_form():
    """change() builds the event object and, once, the JSON a forwarding socket sends."""
    member = {"conn": "h:1:1", "user": None, "name": "bo"}
    joined = change("join", "room", member)
    assert isinstance(joined, Join) and joined.member is member
    assert json.loads(joined.text) == {"ws": "join", "channel": "room", "member": member}
    assert isinstance(change("leave", "room", member), Leave)


def test_summarize_counts_connections_per_user_and_name():
    """Two tabs of one user are one entry with two connections; entries sorted by name."""
    members = [
        {"conn": "a", "user": 2, "name": "zed"},
        {"conn": "b", "user": 1, "name": "alice"},
        {"conn": "c", "user": 1, "name": "alice"},
    ]
    assert summarize(members) == [
        {"user": 1, "name": "alice", "connections": 2},
        {"user": 2, "name": "zed", "connections": 1},
    ]
