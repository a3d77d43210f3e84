"""Unit tests of django_websocket.publishing: wire format, channel names, audiences, failures."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import RequestFactory, override_settings

from django_websocket import last_id, publish
from django_websocket.exceptions import PublishError
from django_websocket.publishing import (
    audience,
    audience_suffixes,
    channel_key,
    channel_name,
    decode_payload,
    encode_payload,
)


@pytest.mark.parametrize(
    "message, decoded",
    [("héllo", "héllo"), (b"\x00\xff", b"\x00\xff"), ({"a": [1, None]}, '{"a":[1,null]}'), (3, "3")],
)
def test_payload_round_trip(message, decoded):
    """Text stays text, bytes stay bytes, JSON-ables travel as JSON text."""
    assert decode_payload(encode_payload(message)) == decoded


def test_payload_uses_django_json_encoder():
    """Dates and UUIDs are encoded as DjangoJSONEncoder does."""
    value = uuid.UUID(int=1)
    assert decode_payload(encode_payload({"id": value})) == f'{{"id":"{value}"}}'


def test_channel_names_carry_prefix_and_audience():
    """channel_key adds the prefix (and audience); channel_name removes both."""
    assert channel_key("room:1") == "django_websocket:room:1"
    key = channel_key("room:1", "@user:7")
    assert key == "django_websocket:room:1@user:7"
    assert channel_name(key) == "room:1"
    with override_settings(WEBSOCKET_CHANNEL_PREFIX="site2:"):
        assert channel_key("a") == "site2:a"


@pytest.mark.parametrize("bad", ["", "a@b", None, 5])
def test_bad_channel_names_are_refused(bad):
    """Empty names, non-strings and the audience separator are ValueError."""
    with pytest.raises(ValueError):
        channel_key(bad)


def test_audience_suffixes_and_one_audience_at_most():
    """user (object or pk), group, session each give a suffix; two at once is an error."""
    assert audience() == ""
    assert audience(user=User(pk=4)) == "@user:4"
    assert audience(user=4) == "@user:4"
    assert audience(group="staff") == "@group:staff"
    assert audience(session="abc") == "@session:abc"
    with pytest.raises(ValueError):
        audience(user=4, group="staff")


@pytest.mark.django_db
def test_a_request_listens_to_its_user_groups_and_session():
    """An authenticated request with a session listens on user, group and session names."""
    user = User.objects.create(username="gina")
    user.groups.add(Group.objects.create(name="staff"))
    request = RequestFactory().get("/")
    request.user = user

    class Session:
        session_key = "k1"

    request.session = Session()
    assert sorted(audience_suffixes(request)) == sorted([f"@user:{user.pk}", "@group:staff", "@session:k1"])


def test_anonymous_request_without_session_listens_to_everyone_only():
    """No user, no session: no audience suffix."""
    assert audience_suffixes(RequestFactory().get("/")) == []


def test_embedded_publish_with_no_subscribers_reaches_nobody():
    """Without Redis, publish() counts the sockets it queued for: none here."""
    with override_settings(WEBSOCKET_REDIS_URL=None):
        assert publish("nobody-listens", "x").receivers == 0


def test_publish_with_redis_down_fails_fast_and_clearly(monkeypatch):
    """A Redis that refuses connections gives PublishError at once, not after hidden retries."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    with override_settings(WEBSOCKET_REDIS_URL=f"redis://:secret@127.0.0.1:{port}/0"):
        started = time.monotonic()
        with pytest.raises(PublishError) as caught:
            publish("room", "x")
    assert time.monotonic() - started < 1.5
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("empty", [{"user": None}, {"session": None}, {"session": ""}, {"group": ""}])
def test_an_empty_audience_is_an_error_not_a_broadcast(empty):
    """publish(..., session=None) must not reach everyone."""
    with pytest.raises(ValueError):
        publish("room", "private", **empty)


@pytest.mark.django_db(transaction=True)
def test_on_commit_publishes_when_the_transaction_commits(broker):
    """publish(on_commit=True) inside atomic() publishes at the commit, not before; returns None."""
    channel = f"commit-{uuid.uuid4().hex}"
    before = last_id(channel)
    with transaction.atomic():
        assert publish(channel, "saved", on_commit=True) is None
        assert last_id(channel) == before
    assert last_id(channel) != before


@pytest.mark.django_db(transaction=True)
def test_on_commit_never_publishes_after_a_rollback(broker):
    """A rolled-back transaction publishes nothing, nested savepoints included."""
    channel = f"rollback-{uuid.uuid4().hex}"
    before = last_id(channel)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            publish(channel, "not saved", on_commit=True)
            raise RuntimeError("rolled back")
    with transaction.atomic():
        try:
            with transaction.atomic():
                publish(channel, "savepoint rolled back", on_commit=True)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert last_id(channel) == before


@pytest.mark.django_db(transaction=True)
def test_on_commit_outside_a_transaction_publishes_at_once(broker):
    """In autocommit mode there is nothing to wait for: the message goes out and its id comes back."""
    channel = f"autocommit-{uuid.uuid4().hex}"
    published = publish(channel, "now", on_commit=True)
    assert published and published == last_id(channel)


@pytest.mark.django_db(transaction=True)
def test_on_commit_checks_its_arguments_at_the_call():
    """A bad channel or audience raises where publish() is called, not later at the commit."""
    with transaction.atomic():
        with pytest.raises(ValueError):
            publish("a@b", "x", on_commit=True)
        with pytest.raises(ValueError):
            publish("room", "x", user=None, on_commit=True)
