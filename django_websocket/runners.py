"""Greenlets that serve one connection after another instead of one each.

On Python 3.12+ a greenlet is dear to create: CPython maps a 16 KiB frame data stack for each new
one when its first frame is pushed (``mmap``), unmaps it when the greenlet ends, and its pages
fault in afresh; Django's and asgiref's per-greenlet locals start empty again too. A handshake run
in a fresh greenlet costs about 60 µs more than the same one run in a greenlet that already served
one (``bench/README.md``, "Greenlets that serve one connection after another").
:class:`ReusingPool` is a gevent pool whose greenlets, once their connection (or their detached
view) is done, wait to serve the next (:data:`IDLE_RUNNERS` of each kind at most), as a thread
pool's threads do.

As a thread pool's threads, a runner keeps its greenlet-local state from one job to the next:
Django's database connection objects (closed at the end of each connection by the worker's
``on_connection_end``, and of each view by the handler), the URLconf and language a request set
(set again by the next request, as in a threaded server), its context variables (a detached
view's job runs in a copy of its request's).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import Context
from typing import Any

from gevent import GreenletExit
from gevent.hub import Waiter
from gevent.pool import Pool, PoolFull

from .server import ConnectionGreenlet

#: ``(function, args, at_end)``: a runner's job, and what to call with the runner once it ends (or None).
Job = tuple[Callable[..., Any], tuple, Any]

#: Runners kept waiting for a connection at most; past it, a runner whose connection ended ends too.
IDLE_RUNNERS = 64


class Runner(ConnectionGreenlet):
    """A greenlet that runs ``function(*args)`` jobs one after another for its :class:`ReusingPool`.

    It is in the pool while it runs a job (unless the job itself took it out, as
    ``UpgradeHandler.detach_connection`` does) and out of it while it waits for the next. A
    job's ``at_end`` is called with the runner when the job is over, however it ended. An
    exception a job raises is reported as gevent reports a greenlet's (the hub's
    ``handle_error``) and the runner goes on; a kill (``GreenletExit``) ends it, waiting or not.
    """

    def __init__(self, pool: ReusingPool, idle: list[Runner], job: Job) -> None:
        super().__init__()
        self.pool = pool
        #: Where it waits between jobs (its pool's ``idle`` or ``idle_views``).
        self.idle = idle
        self.job: Job | None = job
        self.waiter: Waiter | None = None

    def _run(self) -> None:  # gevent's hook for a subclass's body
        while self.job is not None:
            function, args, at_end = self.job
            self.job = None
            try:
                function(*args)
            except GreenletExit:
                raise  # killed (a graceful stop's timeout): the runner ends, after at_end
            except Exception:
                self.parent.handle_error(self, *sys.exc_info())
            finally:
                function = args = None  # the connection's objects go now, not when the next comes
                if at_end is not None:
                    self.end_job(at_end)
                    at_end = None
            if not self.pool.take_back(self):
                return
            self.waiter = Waiter()
            self.job = self.waiter.get()
            self.waiter = None

    def end_job(self, at_end: Callable[[Any], Any]) -> None:
        """``at_end(self)``, as gevent calls a link when a greenlet ends; its failure is reported."""
        try:
            at_end(self)
        except Exception:
            self.parent.handle_error(self, *sys.exc_info())

    def resume(self, job: Job) -> None:
        """Give the waiting runner its next job; it starts at the event loop's next turn."""
        waiter = self.waiter
        assert waiter is not None, "resume() of a runner that is not waiting"
        self.parent.loop.run_callback(waiter.switch, job)


class ReusingPool(Pool):
    """A ``gevent.pool.Pool`` (the same size and accounting) whose greenlets are :class:`Runner`\\ s.

    ``spawn(function, *args)`` hands the job to a waiting runner when there is one, else starts a
    new runner; either way the runner is counted in the pool until its job ends, exactly as a
    greenlet spawned by a plain pool is counted until it ends.

    Runners that served connections from their start (deep stacks: pywsgi, Django's middleware)
    and runners that served detached views (:meth:`hand_over`) wait apart, in :attr:`idle` and
    :attr:`idle_views`: a greenlet keeps the frame stack pages it once touched, and a view's
    runner waits for as long as its socket is open, so it must not be one a handshake made deep.
    """

    def __init__(self, size: int | None = None) -> None:
        super().__init__(size, greenlet_class=Runner)
        self.idle: list[Runner] = []
        self.idle_views: list[Runner] = []

    def spawn(self, function: Callable[..., Any], *args: Any) -> Runner:  # type: ignore[override]
        return self.run_job((function, args, None), self.idle)

    def hand_over(
        self, current: Any, function: Callable[..., Any], args: tuple, context: Context, at_end: Any
    ) -> Runner:
        """*current* (in this pool) gives its slot to ``function(*args)``, run in *context* by a runner.

        ``UpgradeHandler.detach_connection``'s hook: the connection's view runs in a runner that
        only ever served views, and *at_end* (its access line, or ``None``) is called with the
        runner when the job ends, as a link is when a greenlet ends.

        The runner joins the pool before *current* leaves it when there is room, so the pool is
        never empty in between: an empty pool, even for an instant, wakes ``Pool.join()``, with
        which a graceful stop waits for the connections before killing what is left.
        """
        job = (function, args, at_end)
        try:
            runner = self.run_job(job, self.idle_views, context, blocking=False)
        except PoolFull:  # current gives up its slot first (empty for that instant only at size 1)
            self.discard(current)
            return self.run_job(job, self.idle_views, context)
        self.discard(current)
        return runner

    def run_job(
        self, job: Job, idle: list[Runner], context: Context | None = None, blocking: bool = True
    ) -> Runner:
        """Run *job* in a runner waiting in *idle*, or a new one (that waits there after it).

        The runner is counted in the pool until the job ends. Not *blocking*, a full pool raises
        gevent's ``PoolFull`` and nothing is run (a waiting runner goes on waiting).
        """
        waiting = None
        while idle and waiting is None:
            runner = idle.pop()
            if not runner.dead:  # a waiting runner can be killed
                waiting = runner
        runner = waiting or Runner(self, idle, job)
        try:
            self.add(runner, blocking=blocking)
        except PoolFull:
            if waiting is not None:
                idle.append(waiting)
            raise
        if context is not None:
            runner.gr_context = context
        if waiting is None:
            runner.start()
        else:
            runner.resume(job)
        return runner

    def take_back(self, runner: Runner) -> bool:
        """*runner*'s job ended: out of the pool; ``True`` if it should wait for another."""
        if runner in self:
            self.discard(runner)
        if len(runner.idle) >= IDLE_RUNNERS:
            return False
        runner.idle.append(runner)
        return True
