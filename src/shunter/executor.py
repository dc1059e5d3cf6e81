"""Running one claimed job as a pipeline of small steps, on the worker's event loop:

    load (decode the hash) -> resolve (find the handler) -> invoke (run it, honouring the
    timeout and interrupts) -> decide (:func:`shunter.outcome.decide`) -> commit (one fenced
    storage call).

An attempt can be interrupted by the worker: a user's cancel request, a lost lease, or
shutdown. Each interrupt has its own ending: cancelled jobs are aborted, lost jobs are
never committed, and jobs interrupted by shutdown are released without using an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from .errors import DecodeError, JobNotFound, JobNotInState, LeaseLost, UnregisteredTask
from .job import Job
from .outcome import JobTimeout, Outcome, Task, decide, error_json
from .storage import UNAVAILABLE, raise_for

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["Interrupt", "Running", "execute"]

log = logging.getLogger("shunter.worker")


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
    reason: Interrupt | None = None
    waiter: asyncio.Future[None] | None = None
    handler: asyncio.Future[Any] | None = None
    abandoned: bool = field(default=False)
    #: Set by the pool thread when a sync handler begins: its timeout runs from then.
    began: bool = field(default=False)

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


class NotStarted(Exception):
    """A sync handler's attempt was interrupted while it waited for a thread: never run."""


class HandlerExit(Exception):
    """A handler raised SystemExit or KeyboardInterrupt; the worker treats it as an error."""


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


async def execute(worker: Worker, run: Running) -> None:
    """Run one claimed attempt to its committed end (or to a lease loss)."""
    job = run.job
    if job.decode_error is not None:
        return await _commit(worker, run, Outcome("fail", error=error_json(DecodeError(
            f"job cannot be decoded and was not run: {job.decode_error}"))))
    task = worker.tasks.get(job.task)
    if task is None:
        return await _commit(worker, run, Outcome("fail", error=error_json(UnregisteredTask(
            f"no handler registered for task {job.task!r} on this worker"))))
    exc, result, reason = await _invoke(worker, run, task)
    if reason is Interrupt.LEASE_LOST:
        log.warning("job %s lost its lease during attempt %s; not committing", job.id, job.attempt)
        return None
    if reason is Interrupt.CANCEL:
        return await _finish(worker, run, "abort")
    if reason is Interrupt.SHUTDOWN and (exc is not None or run.abandoned):
        return await _finish(worker, run, "release")
    outcome = decide(job, task, exc, result, classifiers=(task.classify, worker.classify),
                     default_backoff=worker.default_backoff, max_deferrals=worker.max_deferrals,
                     max_result_bytes=worker.storage.max_payload_bytes)
    return await _commit(worker, run, outcome)


Ended = tuple[BaseException | None, Any, Interrupt | None]  #: (error, result, interrupt)


async def _invoke(worker: Worker, run: Running, task: Task) -> Ended:
    """Run the handler until it returns, times out or is interrupted. The timeout of a sync
    handler runs from when its thread starts it, not from when it was queued."""
    job = run.job
    loop = asyncio.get_running_loop()
    timeout = job.timeout or task.timeout or worker.job_timeout
    timer: asyncio.TimerHandle | None = None
    pooled: Future[Any] | None = None
    if task.is_async:
        handler: asyncio.Future[Any] = loop.create_task(_guard(task.fn, job))
    else:
        def began() -> None:  # in the pool thread
            run.began = True
            worker.handler_began(run, timeout)
            with contextlib.suppress(RuntimeError):  # loop closed: the worker is gone
                loop.call_soon_threadsafe(arm)

        def arm() -> None:
            nonlocal timer
            if not handler.done():
                timer = loop.call_later(timeout, run.wake)

        ctx = contextvars.copy_context()
        pooled = worker.threads.submit(ctx.run, _call_sync, task.fn, job, began)
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
    # never start, if no thread took them yet).
    job._stop_asked = True
    if task.is_async:
        handler.cancel()
    elif pooled is not None:
        pooled.cancel()
    await asyncio.wait({handler}, timeout=worker.cancel_grace)
    if not handler.done():
        run.abandoned = True
        if pooled is not None:
            worker.threads.abandon(pooled)
        worker.counters["abandoned"] += 1
        log.warning("job %s: handler did not stop within %.1fs of %s; abandoning it "
                    "(%d abandoned sync handler(s) still running)", job.id, worker.cancel_grace,
                    reason.value if reason else "its timeout", worker.threads.abandoned)
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


async def _commit(worker: Worker, run: Running, outcome: Outcome) -> None:
    job, storage = run.job, worker.storage
    token = job.token or 0
    if outcome.kind == "complete":
        async def complete() -> None:
            code = await worker.acker.complete(job.id, token, outcome.result)
            if code < 0:
                raise_for(code, storage.keys, job.id, "complete")
        await _fenced(worker, run, "completed", complete)
    elif outcome.kind == "retry":
        await _fenced(worker, run, "retried", lambda: storage.retry(
            job.id, token, outcome.delay_ms, outcome.error, outcome.count_attempt))
    else:
        await _fenced(worker, run, "failed", lambda: storage.fail(job.id, token, outcome.error))


async def _finish(worker: Worker, run: Running, verb: str) -> None:
    job, storage = run.job, worker.storage
    token = job.token or 0
    if verb == "abort":
        await _fenced(worker, run, "cancelled", lambda: storage.abort(job.id, token))
    else:
        await _fenced(worker, run, "released", lambda: storage.release(job.id, token))


async def _fenced(worker: Worker, run: Running, counter: str,
                  send: Callable[[], Awaitable[None]]) -> None:
    """Apply one fenced write. While the server is unreachable, keep trying for as long as
    the lease could still be ours.

    A send can land and still look failed (the reply was lost, and the client re-sent it
    after reconnecting): the second apply is then refused with JobNotInState. Every settling
    script records its token as ``settled_token``, so "settled by our token" means our write
    landed; any other refusal means the attempt lost the job (lease expired, rescued).
    """
    deadline = time.monotonic() + worker.lease
    warned = False
    while True:
        try:
            await send()
        except LeaseLost:
            worker.counters["lease_lost"] += 1
            log.warning("job %s: commit rejected, another attempt owns the job now", run.job.id)
            return
        except JobNotFound:
            # Deleted meanwhile: by obliterate, or by retention (keep count 0) right after
            # our own write landed and its reply was lost. Nothing is left to record.
            log.info("job %s: gone before its %s was recorded (deleted meanwhile)",
                     run.job.id, counter)
        except JobNotInState:
            if not await _landed(worker, run):
                # The job left active without our write: rescued after our lease ran out.
                worker.counters["lease_lost"] += 1
                log.warning("job %s: commit rejected, its lease ran out and it was rescued",
                            run.job.id)
                return
        except UNAVAILABLE as exc:
            if time.monotonic() > deadline:
                raise
            if not warned:
                log.warning("job %s: redis unavailable while committing (%s); retrying",
                            run.job.id, exc)
                warned = True
            await asyncio.sleep(0.1)
            continue
        worker.counters[counter] += 1
        return


async def _landed(worker: Worker, run: Running) -> bool:
    try:
        fields = await worker.storage.job_fields(run.job.id)
    except JobNotFound:
        return True  # finished and already removed by retention (keep count 0)
    return fields.get(b"settled_token") == str(run.job.token).encode()
