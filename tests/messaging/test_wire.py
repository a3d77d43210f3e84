"""django_websocket.messaging.wire: payloads and audiences."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.test import RequestFactory

from django_websocket.messaging.wire import (
    BINARY,
    JSON,
    TEXT,
    audience,
    audience_suffixes,
    decode_payload,
    encode_payload,
    prepare,
    split_payload,
    with_id,
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


def test_prepare_keeps_text_as_str_for_the_in_process_broker():
    """prepare() gives the type byte and text as str, bytes as bytes: nothing is encoded for nothing."""
    assert prepare("é") == (TEXT, "é")
    assert prepare(bytearray(b"\x01")) == (BINARY, b"\x01")
    assert prepare({"a": 1}) == (JSON, '{"a":1}')


def test_an_id_travels_in_upper_case_before_the_data():
    """with_id() and split_payload() agree; a payload without an id has None."""
    payload = with_id(JSON, "17-2", b'{"a":1}')
    assert payload == b'J17-2 {"a":1}'
    assert split_payload(payload) == (JSON, "17-2", b'{"a":1}')
    assert split_payload(b"thi") == (TEXT, None, b"hi")


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
