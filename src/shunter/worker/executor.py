"""Running one claimed job as a pipeline of small steps, on the worker's event loop:

    load (decode the hash) -> resolve (find the handler) -> invoke (run it, honouring the
    timeout and interrupts) -> decide (:func:`shunter.outcome.decide`) -> commit (one fenced
    write, through the :class:`~shunter.worker.settler.Settler`).

The executor gets a frozen :class:`RunContext` (the worker's options, its threads, process
pool and hooks) and the settler, not the worker.

An attempt can be interrupted by the worker: a user's cancel request, a lost lease, or
shutdown. Each interrupt has its own ending: cancelled jobs are aborted, lost jobs are
never committed, and jobs interrupted by shutdown are released without using an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import DecodeError, UnregisteredTask
from ..job import Job
from ..options import Backoff
from ..outcome import Classifier, HandlerExit, JobTimeout, Outcome, Task, decide, error_json
from .hooks import HookSet
from .processes import KILL_TIME, ProcessPool
from .settler import Settler
from .threads import HandlerThreads

__all__ = ["Interrupt", "Middleware", "RunContext", "Running", "execute"]

log = logging.getLogger("shunter.worker")


#: ``async (job, call_next) -> result`` around each attempt (see :class:`~shunter.Worker`).
Middleware = Callable[[Job, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Interrupt(Enum):
    CANCEL = "cancelled by user"
    LEASE_LOST = "lease lost"
    SHUTDOWN = "worker shutting down"


@dataclass(slots=True)
class Running:
    """One attempt in flight, identified by (queue, job id, fencing token): the job, why it
    was interrupted (the first reason wins), and the future the executor sleeps on until the
    handler ends, times out or is interrupted. (One future woken by three callbacks:
    asyncio.wait would build sets, futures and callbacks for every job.)"""

    job: Job
    queue: str
    job_id: str
    token: int  #: the fencing token of this attempt
    reason: Interrupt | None = None
    waiter: asyncio.Future[None] | None = None
    handler: asyncio.Future[Any] | None = None
    abandoned: bool = field(default=False)
    #: Set by the pool thread when a sync handler begins: its timeout runs from then.
    began: bool = field(default=False)

    def supersede(self) -> bool:
        """The same job was claimed again here under a newer token: this attempt lost its
        lease. False if it was interrupted already."""
        return self.signal(Interrupt.LEASE_LOST)

    def signal(self, reason: Interrupt) -> bool:
        """Interrupt the attempt; False if it already was (the first reason stands)."""
        if self.reason is not None:
            return False
        self.reason = reason
        self.wake()
        return True

    def wake(self, _: object = None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every attempt of one worker needs: its options, its threads and hooks."""

    tasks: Mapping[str, Task]
    job_timeout: float
    cancel_grace: float
    classify: Classifier | None
    default_backoff: Backoff
    max_deferrals: int
    threads: HandlerThreads
    hooks: HookSet
    counters: Counter[str]
    #: Called in the pool thread when a sync handler begins, with its timeout (and on the
    #: loop by the process pool, with the time a process job may hold its lease from now).
    began: Callable[[Running, float], None]
    #: The children of ``executor="process"`` tasks.
    processes: ProcessPool
    middleware: tuple[Middleware, ...] = ()


class NotStarted(Exception):
    """A sync handler's attempt was interrupted while it waited for a thread: never run."""


async def _guard(fn: Any, job: Job) -> Any:
    try:
        return await fn(job)
    except (SystemExit, KeyboardInterrupt) as exc:  # would otherwise stop the event loop
        raise HandlerExit(f"handler raised {type(exc).__name__}({exc})") from None


def _call_sync(fn: Any, job: Job, began: Callable[[], None]) -> Any:
    # Runs in a pool thread. An attempt interrupted while it waited for a thread (lease
    # lost, cancelled, shutdown) must not start at all.
    if job._stop_asked:
        raise NotStarted()
    began()
    try:
        result = fn(job)
    except (SystemExit, KeyboardInterrupt) as exc:  # same error as from an async handler
        raise HandlerExit(f"handler raised {type(exc).__name__}({exc})") from None
    if asyncio.iscoroutine(result):
        result.close()
        raise TypeError("handler returned a coroutine: declare it with 'async def'")
    return result


async def execute(ctx: RunContext, settler: Settler, run: Running) -> None:
    """Run one claimed attempt to its committed end (or to a lease loss)."""
    job = run.job
    if job.decode_error is not None:
        return await settler.apply(job, Outcome("fail", error=error_json(DecodeError(
            f"job cannot be decoded and was not run: {job.decode_error}"))))
    task = ctx.tasks.get(job.task)
    if task is None:
        return await settler.apply(job, Outcome("fail", error=error_json(UnregisteredTask(
            f"no handler registered for task {job.task!r} on this worker"))))
    if ctx.hooks.active:
        ctx.hooks.started(job)
    if ctx.middleware:
        exc, result, reason = await _around(ctx.middleware, job, lambda: _invoke(ctx, run, task))
    else:
        exc, result, reason = await _invoke(ctx, run, task)
    if reason is Interrupt.LEASE_LOST:
        log.warning("job %s lost its lease during attempt %s; not committing", job.id, job.attempt)
        if ctx.hooks.active:
            ctx.hooks.lease_lost(job)
        return None
    if reason is Interrupt.CANCEL:
        return await settler.abort(job)
    if reason is Interrupt.SHUTDOWN and (exc is not None or run.abandoned):
        return await settler.release(job)
    outcome = decide(job, task, exc, result, classifiers=(task.classify, ctx.classify),
                     default_backoff=ctx.default_backoff, max_deferrals=ctx.max_deferrals,
                     max_result_bytes=settler.storage.max_payload_bytes)
    return await settler.apply(job, outcome)


Ended = tuple[BaseException | None, Any, Interrupt | None]  #: (error, result, interrupt)


async def _around(chain: tuple[Middleware, ...], job: Job,
                  invoke: Callable[[], Awaitable[Ended]]) -> Ended:
    """Run the attempt inside the middleware chain. What a middleware returns or raises is
    the attempt's result or error; an interrupt (cancel, lost lease, shutdown) stands
    whatever the middleware does with it."""
    ended: Ended | None = None

    async def innermost() -> Any:
        nonlocal ended
        ended = await invoke()
        if ended[0] is not None:
            raise ended[0]
        return ended[1]

    call: Callable[[], Awaitable[Any]] = innermost
    for middleware in reversed(chain):
        call = functools.partial(middleware, job, call)
    try:
        result = await call()
    except BaseException as exc:
        if ended is not None and ended[2] is not None:
            return ended
        if ended is None and isinstance(exc, asyncio.CancelledError):
            raise  # our own task is being cancelled
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            exc = HandlerExit(f"middleware raised {type(exc).__name__}({exc})")
        return exc, None, None
    if ended is not None and ended[2] is not None:
        return ended
    return None, result, None


async def _invoke(ctx: RunContext, run: Running, task: Task) -> Ended:
    """Run the handler until it returns, times out or is interrupted. The timeout of a sync
    handler runs from when its thread starts it, not from when it was queued; a process job's
    timeout is kept by its pool (:mod:`.processes`), which ends the process at the deadline."""
    job = run.job
    loop = asyncio.get_running_loop()
    timeout = job.timeout or task.timeout or ctx.job_timeout
    timer: asyncio.TimerHandle | None = None
    pooled: Future[Any] | None = None
    in_process = task.executor == "process"
    if task.is_async:
        handler: asyncio.Future[Any] = loop.create_task(_guard(task.fn, job))
    elif in_process:  # the pool keeps its timeout, and ends the process to stop it
        handler = loop.create_task(ctx.processes.run(task.fn, job, timeout,
                                                     functools.partial(ctx.began, run)))
    else:
        def began() -> None:  # in the pool thread
            run.began = True
            ctx.began(run, timeout)
            with contextlib.suppress(RuntimeError):  # loop closed: the worker is gone
                loop.call_soon_threadsafe(arm)

        def arm() -> None:
            nonlocal timer
            if not handler.done():
                timer = loop.call_later(timeout, run.wake)

        copied = contextvars.copy_context()
        pooled = ctx.threads.submit(copied.run, _call_sync, task.fn, job, began)
        handler = asyncio.wrap_future(pooled)
    run.handler = handler
    if run.reason is None:  # an interrupt may have come before the handler started
        run.waiter = loop.create_future()
        handler.add_done_callback(run.wake)
        if task.is_async:
            timer = loop.call_later(timeout, run.wake)
        try:
            await run.waiter
        finally:
            if timer is not None:
                timer.cancel()
    if handler.done() and not (handler.cancelled() or isinstance(handler.exception(), NotStarted)):
        # It ended by itself: its outcome stands, unless the lease is gone (then the commit
        # would be refused anyway, and we say why in the log instead).
        lost = run.reason is Interrupt.LEASE_LOST
        err = handler.exception()
        return err, (None if err else handler.result()), (Interrupt.LEASE_LOST if lost else None)
    reason = run.reason
    # Stop the handler: async ones get CancelledError, sync ones see job.cancelled (or
    # never start, if no thread or process took them yet); a process is ended after the grace.
    job._stop_asked = True
    if pooled is not None:
        pooled.cancel()
    else:
        handler.cancel()
    await asyncio.wait({handler}, timeout=ctx.cancel_grace + (KILL_TIME if in_process else 0))
    if not handler.done():
        run.abandoned = True
        if pooled is not None:
            ctx.threads.abandon(pooled)
        ctx.counters["abandoned"] += 1
        ctx.hooks.abandoned(job)
        log.warning("job %s: handler did not stop within %.1fs of %s; abandoning it "
                    "(%d abandoned sync handler(s) still running)", job.id, ctx.cancel_grace,
                    reason.value if reason else "its timeout", ctx.threads.abandoned)
        handler.add_done_callback(_swallow)
    elif (not handler.cancelled() and handler.exception() is None
          and reason is Interrupt.SHUTDOWN and not job._stop_seen):
        return None, handler.result(), reason  # it finished during the grace period: keep it
    # A sync handler that saw job.cancelled and returned stopped early, as documented; its
    # return value is not a finished result, so shutdown hands the job back instead.
    if reason is None:
        return JobTimeout(f"attempt {job.attempt} exceeded its timeout of {timeout:g}s"), None, None
    return asyncio.CancelledError(reason.value), None, reason


def _swallow(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
