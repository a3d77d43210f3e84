"""django_websocket.runners: a pool whose greenlets serve one job after another."""

from __future__ import annotations

import gevent
import gevent.event
import pytest
from gevent.local import local

from django_websocket import runners
from django_websocket.runners import ReusingPool, Runner


def test_a_finished_runner_serves_the_next_job_and_is_counted_only_while_it_runs():
    pool = ReusingPool(3)
    ran = []
    first = pool.spawn(ran.append, "one")
    assert isinstance(first, Runner) and first in pool and pool.free_count() == 2
    assert pool.join(timeout=1)
    assert ran == ["one"] and first not in pool and pool.free_count() == 3
    assert pool.idle == [first] and not first.dead
    second = pool.spawn(ran.append, "two")
    assert second is first and first in pool and pool.free_count() == 2
    assert pool.join(timeout=1)
    assert ran == ["one", "two"] and pool.free_count() == 3


def test_jobs_at_once_get_runners_of_their_own():
    pool = ReusingPool(5)
    started = gevent.event.Event()
    running = [pool.spawn(started.wait) for _ in range(3)]
    assert len(set(running)) == 3 and pool.free_count() == 2
    started.set()
    assert pool.join(timeout=1)
    assert sorted(map(id, pool.idle)) == sorted(map(id, running))


def test_a_job_s_exception_is_reported_and_the_runner_goes_on(monkeypatch):
    pool = ReusingPool(2)
    reported = []
    hub = gevent.get_hub()
    monkeypatch.setattr(
        hub, "handle_error", lambda context, kind, value, tb: reported.append((context, kind))
    )

    def fail():
        raise ValueError("job failed")

    runner = pool.spawn(fail)
    assert pool.join(timeout=1)
    assert reported == [(runner, ValueError)]
    assert pool.free_count() == 2 and pool.idle == [runner]
    done = []
    assert pool.spawn(done.append, 1) is runner
    assert pool.join(timeout=1) and done == [1]


def test_killing_a_running_job_ends_its_runner_and_frees_its_slot():
    pool = ReusingPool(2)
    started = gevent.event.Event()

    def job():
        started.set()
        gevent.sleep(10)

    runner = pool.spawn(job)
    assert started.wait(timeout=1)
    pool.kill(block=True, timeout=1)
    assert runner.dead and pool.free_count() == 2 and pool.idle == []


def test_a_waiting_runner_killed_is_replaced_by_a_new_one():
    pool = ReusingPool(2)
    runner = pool.spawn(lambda: None)
    assert pool.join(timeout=1) and pool.idle == [runner]
    runner.kill(block=True)
    assert runner.dead
    done = []
    fresh = pool.spawn(done.append, 1)
    assert fresh is not runner
    assert pool.join(timeout=1) and done == [1] and pool.free_count() == 2


def test_a_job_that_leaves_the_pool_itself_is_not_discarded_twice():
    """As UpgradeHandler.detach_connection does: its slot goes to another greenlet."""
    pool = ReusingPool(2)

    def detach():
        pool.discard(gevent.getcurrent())

    pool.spawn(detach)
    assert pool.join(timeout=1)
    assert pool.free_count() == 2  # released once, not twice


def test_at_most_idle_runners_wait(monkeypatch):
    monkeypatch.setattr(runners, "IDLE_RUNNERS", 2)
    pool = ReusingPool(10)
    go = gevent.event.Event()
    spawned = [pool.spawn(go.wait) for _ in range(5)]
    go.set()
    assert pool.join(timeout=1)
    assert len(pool.idle) == 2
    assert sum(runner.dead for runner in spawned) == 3


def test_a_runner_keeps_its_greenlet_local_state_as_a_thread_pool_s_thread_does():
    pool = ReusingPool(1)
    state = local()
    seen = []

    def first():
        state.value = "set by the first job"

    def second():
        seen.append(getattr(state, "value", None))

    pool.spawn(first)
    assert pool.join(timeout=1)
    pool.spawn(second)
    assert pool.join(timeout=1)
    assert seen == ["set by the first job"]


@pytest.mark.parametrize("size", [None, 4])
def test_the_pool_keeps_gevent_s_size(size):
    assert ReusingPool(size).size == size


def test_hand_over_gives_the_slot_the_context_and_the_end_callback_to_a_runner():
    """What UpgradeHandler.detach_connection does: the request's runner passes the connection on,
    to a runner that only serves views (it waits apart from the connections' runners)."""
    import contextvars

    variable = contextvars.ContextVar("variable", default="unset")
    pool = ReusingPool(2)
    seen, ended = [], []

    def request():
        variable.set("the request's")
        current = gevent.getcurrent()
        viewer = pool.hand_over(current, seen.append, ("view ran",), contextvars.copy_context(), ended.append)
        seen.append(viewer is not current and viewer in pool and current not in pool)

    def read_variable():
        seen.append(variable.get())

    first = pool.spawn(request)
    assert pool.join(timeout=1)
    assert ended  # the pool was never empty before the view's end
    assert seen == [True, "view ran"] and len(ended) == 1 and ended[0] is not first
    assert pool.free_count() == 2 and pool.idle == [first] and len(pool.idle_views) == 1
    # The context was the job's only: the next job in that runner starts from the runner's own.
    holder = pool.spawn(gevent.sleep, 0.05)
    pool.hand_over(holder, read_variable, (), contextvars.Context(), ended.append)
    with gevent.Timeout(1):
        while len(ended) < 2:
            gevent.sleep(0.001)
    assert seen[-1] == "unset"


@pytest.mark.parametrize("size", [None, 3])
def test_hand_over_never_leaves_the_pool_empty_for_a_join(size):
    """A graceful stop's Pool.join() must not wake between the request's slot and the view's."""
    pool = ReusingPool(size)
    started, release = gevent.event.Event(), gevent.event.Event()
    joiners = []

    def view():
        started.set()
        release.wait()

    def request():
        joiners.append(gevent.spawn(pool.join))
        gevent.sleep(0)  # the joiner waits for an empty pool
        pool.hand_over(gevent.getcurrent(), view, (), contextvars_context(), None)

    pool.spawn(request)
    assert started.wait(timeout=1)
    gevent.idle()  # whatever the hand-over woke has run: a join woken by an empty pool has returned
    assert not joiners[0].ready() and len(pool) == 1  # the view runs; the join still waits
    release.set()
    assert joiners[0].get(timeout=1) is True and len(pool) == 0


def test_hand_over_in_a_full_pool_takes_the_request_s_slot():
    pool = ReusingPool(2)
    handed, release = gevent.event.Event(), gevent.event.Event()
    other = pool.spawn(release.wait)
    views = []

    def request():
        views.append(pool.hand_over(gevent.getcurrent(), release.wait, (), contextvars_context(), None))
        handed.set()

    requester = pool.spawn(request)
    assert pool.free_count() == 0
    assert handed.wait(timeout=1)
    assert views[0] in pool and requester not in pool and other in pool
    assert pool.free_count() == 0 and pool.idle_views == []
    release.set()
    assert pool.join(timeout=1) and pool.free_count() == 2


def test_an_end_callback_that_fails_is_reported_and_the_runner_goes_on(monkeypatch):
    pool = ReusingPool(2)
    reported = []
    monkeypatch.setattr(gevent.get_hub(), "handle_error", lambda context, kind, *rest: reported.append(kind))

    def fail(runner):
        raise RuntimeError("end callback failed")

    holder = pool.spawn(gevent.sleep, 0.05)
    runner = pool.hand_over(holder, lambda: None, (), contextvars_context(), fail)
    with gevent.Timeout(1):
        while not reported:
            gevent.sleep(0.001)
    assert reported == [RuntimeError] and not runner.dead and runner in pool.idle_views


def contextvars_context():
    import contextvars

    return contextvars.copy_context()


def test_a_killed_job_still_gets_its_end_callback():
    """A graceful stop's timeout kills the pool's greenlets: a view's access line is still written."""
    pool = ReusingPool(2)
    ended = []
    started = gevent.event.Event()

    def view():
        started.set()
        gevent.sleep(10)

    holder = pool.spawn(gevent.sleep, 0.05)
    runner = pool.hand_over(holder, view, (), contextvars_context(), ended.append)
    assert started.wait(timeout=1)
    pool.kill(block=True, timeout=1)
    assert ended == [runner] and runner.dead and pool.free_count() == 2
