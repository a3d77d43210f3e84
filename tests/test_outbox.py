"""django_websocket.outbox: publish(durable=True) with the caller's transaction, on the in-process
broker, a real Redis that is stopped and started, and a real Redis Cluster."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings

from django_websocket import outbox, publish
from django_websocket.brokers import get_broker
from django_websocket.models import OutboxMessage
from django_websocket.publishing import history

_names = itertools.count()


def fresh() -> str:
    return f"outbox-{next(_names)}-{time.monotonic_ns()}"


@pytest.fixture(autouse=True)
def broker_was_fine():
    """Each test starts with no broker failure remembered by this process."""
    outbox.state.failed_at = 0.0
    yield
    outbox.state.failed_at = 0.0


@pytest.mark.django_db(transaction=True)
def test_durable_publish_goes_out_at_the_commit_in_order(broker):
    """Inside atomic(): nothing before the commit, then every message in order, and no row left."""
    channel = fresh()
    with transaction.atomic():
        for n in range(5):
            assert publish(channel, {"n": n}, durable=True) is None
        assert history(channel) == [] and OutboxMessage.objects.count() == 5
    assert [m.json() for m in history(channel)] == [{"n": n} for n in range(5)]
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_durable_publish_never_goes_out(broker):
    """The outbox row dies with the transaction: nothing is ever published."""
    channel = fresh()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            publish(channel, "rolled back", durable=True)
            raise RuntimeError
    assert outbox.relay_all() == 0
    assert history(channel) == [] and not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_durable_publish_checks_its_arguments_at_the_call():
    """A bad channel or audience raises at the call; no row is written."""
    with pytest.raises(ValueError):
        publish("a@b", "x", durable=True)
    with pytest.raises(ValueError):
        publish("room", "x", session="", durable=True)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_redis_outage_delays_durable_messages_never_loses_or_doubles_them(redis_server):
    """Redis down: commits succeed, rows wait; Redis back: relayed in order, exactly once."""
    channel = fresh()
    with override_settings(WEBSOCKET_REDIS_URL=redis_server.url):
        before = publish(channel, "before")
        redis_server.kill()
        try:
            started = time.monotonic()
            with transaction.atomic():
                publish(channel, "during 1", durable=True)
                publish(channel, {"n": 2}, durable=True, user=7)
            assert time.monotonic() - started < 3  # one failed attempt at the commit, then left to the relay
            assert outbox.broker_unavailable() and OutboxMessage.objects.count() == 2
            with transaction.atomic():
                publish(channel, b"during 3", durable=True)  # not even tried: the broker just failed
        finally:
            redis_server.start()
        assert outbox.relay_all() == 3
        assert outbox.relay_all() == 0
    with override_settings(WEBSOCKET_REDIS_URL=redis_server.url):
        messages = history(channel)
        assert [m.data for m in messages] == ["during 1", '{"n":2}', b"during 3"]
        assert str(before) not in [m.id for m in messages]  # Redis restarted empty: only what the relay sent
        entry = get_broker().read(channel, "0-0").entries[1]
        assert entry.key == get_broker().key(channel, "@user:7")  # the audience travelled with the row


@pytest.mark.django_db(transaction=True)
def test_a_row_relayed_twice_is_published_once(broker):
    """A relay that published and died before deleting its rows: the next relay publishes nothing new."""
    channel = fresh()
    with transaction.atomic():
        row = outbox.enqueue(channel, get_broker().key(channel), b"t", "once", None)
        outbox.state.failed_at = time.monotonic()  # keep the commit from relaying it
    first = get_broker().publish(channel, row.key, b"t", "once", once=str(row.token))  # the relay that died
    assert first[1] != -1
    assert outbox.relay_all() == 1  # the row is relayed again and deleted...
    assert [m.data for m in history(channel)] == ["once"]  # ...but published only once
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rows_stored_under_another_broker_or_prefix_go_where_subscribers_listen_now(broker):
    """A row named by an older prefix (or by plain Redis, no hash tag) is published under today's name.

    Under the cluster pass, the stored name hashes to another slot than the channel's history:
    published as stored, it failed with a cross-slot error and stopped the outbox.
    """
    channel = fresh()
    with transaction.atomic():
        outbox.enqueue(channel, f"old_prefix:{channel}@user:7", b"t", "moved", None)
        outbox.enqueue(channel, f"old_prefix:{channel}", b"t", "to all", None)
        outbox.state.failed_at = time.monotonic()  # keep the commit from relaying them
    assert outbox.relay_all() == 2
    entries = get_broker().read(channel, "0-0").entries
    assert [(entry.data, entry.key) for entry in entries] == [
        (b"moved", get_broker().key(channel, "@user:7")),
        (b"to all", get_broker().key(channel)),
    ]
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_row_the_broker_cannot_name_is_dropped_with_an_error_not_stopping_the_rest(broker, caplog):
    """Braces are fine in a channel name until the project moves to a cluster: that row goes, loudly."""
    channel = fresh()
    with transaction.atomic():
        outbox.enqueue("{braced}", "django_websocket:{braced}", b"t", "stuck?", None)
        outbox.enqueue(channel, get_broker().key(channel), b"t", "next", None)
        outbox.state.failed_at = time.monotonic()
    assert outbox.relay_all() == 2
    assert [m.data for m in history(channel)] == ["next"]
    assert not OutboxMessage.objects.exists()
    on_cluster = "cluster" in type(get_broker()).__name__.lower()
    dropped = [r for r in caplog.records if "dropped message" in r.getMessage()]
    assert [r.levelname for r in dropped] == (["ERROR"] if on_cluster else [])


def test_current_key_keeps_the_audience_and_takes_the_brokers_prefix(broker):
    """Stored names with today's prefix (even one with an ``@``), another prefix, or none at all."""
    current = get_broker()
    named = current.key("room", "@user:1")
    assert outbox.current_key(current, "room", named) == named
    assert outbox.current_key(current, "room", "x:{room}@group:a@b") == current.key("room", "@group:a@b")
    assert outbox.current_key(current, "room", "room") == current.key("room")
    with override_settings(WEBSOCKET_CHANNEL_PREFIX="at@home:"):
        moved = get_broker()
        assert outbox.current_key(moved, "room", moved.key("room", "@user:1")) == moved.key("room", "@user:1")


@pytest.mark.django_db(transaction=True)
def test_the_relay_command(redis_server):
    """``websocket_relay --once`` publishes what waits; with the broker down it fails, rows kept."""
    channel = fresh()
    # The same kind of broker, unreachable: a row keeps the key its broker gave it.
    with override_settings(WEBSOCKET_REDIS_URL=re.sub(r":\d+\b(?=[,/]|$)", ":1", redis_server.url)):
        publish(channel, "waits", durable=True)
        assert OutboxMessage.objects.count() == 1
        with pytest.raises(CommandError, match="broker is unavailable"):
            call_command("websocket_relay", "--once")
    outbox.state.failed_at = 0.0
    with override_settings(WEBSOCKET_REDIS_URL=redis_server.url):
        call_command("websocket_relay", "--once")
        assert [m.data for m in history(channel)] == ["waits"]
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_the_migrations_match_the_model():
    """``makemigrations --check`` finds nothing to do for the app (a shipped model never drifts)."""
    call_command("makemigrations", "django_websocket", "--check", "--dry-run", verbosity=0)
