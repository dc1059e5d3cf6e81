"""Retries: backoff kinds, RetryAfter, UnrecoverableError and error classifiers.

Each task below fails in a different way; the summary shows how many attempts each job
used, how many times it deferred itself, the delays the worker chose between runs (read
from the queue's event stream) and where it ended. Delays are tiny so it finishes fast.

    .venv/bin/python examples/retries.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable

from shunter import (
    Backoff,
    Decision,
    Event,
    Job,
    Queue,
    QueueEvents,
    RetryAfter,
    Task,
    UnrecoverableError,
    Worker,
)

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


class RemoteError(Exception):
    """What a client library of some remote API might raise."""

    def __init__(self, kind: str, retry_after: float = 0.0) -> None:
        super().__init__(f"remote said {kind}")
        self.kind = kind
        self.retry_after = retry_after


def fail_until(n: int) -> Callable[[Job], Awaitable[str]]:
    """A handler that fails on its first n - 1 attempts, then succeeds."""
    async def handler(job: Job) -> str:
        if job.attempt < n:
            raise ConnectionError(f"attempt {job.attempt} failed")
        return f"succeeded on attempt {job.attempt}"
    return handler


async def always_fails(job: Job) -> None:
    raise ConnectionError(f"attempt {job.attempt} failed")


async def rate_limited(job: Job) -> str:
    # The remote answered 429 with Retry-After: come back later without using an attempt.
    if job.deferrals < 2:
        raise RetryAfter(0.1, "429 Too Many Requests")
    return f"ran after {job.deferrals} deferrals, still on attempt {job.attempt}"


async def always_defers(job: Job) -> None:
    raise RetryAfter(0.05)


async def bad_input(job: Job) -> None:
    raise UnrecoverableError("comment is longer than 8000 characters; retrying will not help")


async def call_remote(job: Job) -> str:
    kind = job.data["kind"]
    if kind == "network" and job.attempt >= 2:
        return "network came back on attempt 2"
    raise RemoteError(kind, retry_after=0.1)


def classify(exc: BaseException, job: Job) -> Decision | RetryAfter | None:
    """The worker's classifier: decide from the error, not from where it was raised."""
    if isinstance(exc, RemoteError):
        if exc.kind == "rate_limit":
            return RetryAfter(exc.retry_after)  # deferred, no attempt used
        if exc.kind in ("auth", "not_found"):
            return Decision.FAIL  # a human must look: straight to the dead-letter set
        if exc.kind == "network":
            return Decision.RETRY  # count the attempt, back off, try again
    return None  # the default rule: retry while attempts remain


async def collect(queue_name: str, into: list[Event]) -> None:
    async with QueueEvents(queue_name, REDIS_URL, since="0") as events:
        async for event in events:
            into.append(event)


async def main() -> None:
    name = f"retries-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    events: list[Event] = []
    collector = asyncio.create_task(collect(name, events))
    async with Queue(name, REDIS_URL) as queue:
        jobs = {
            "fixed backoff": await queue.add("flaky", max_attempts=3, backoff=Backoff.fixed(0.1)),
            "exponential + jitter": await queue.add(
                "always_fails", max_attempts=4, backoff=Backoff.exponential(0.05, factor=2, jitter=0.5)),
            "explicit schedule": await queue.add(
                "always_fails", max_attempts=4, backoff=Backoff.schedule([0.05, 0.1, 0.2], spread=0.02)),
            "Task-level callable": await queue.add("computed_backoff", max_attempts=3),
            "RetryAfter (max_attempts=1)": await queue.add("rate_limited", max_attempts=1),
            "RetryAfter past max_deferrals": await queue.add(
                "always_defers", max_attempts=2, backoff=Backoff.fixed(0.05)),
            "UnrecoverableError": await queue.add("bad_input", max_attempts=5),
            "classifier: rate_limit": await queue.add(
                "call_remote", {"kind": "rate_limit"}, max_attempts=1),
            "classifier: auth": await queue.add("call_remote", {"kind": "auth"}, max_attempts=5),
            "classifier: network": await queue.add(
                "call_remote", {"kind": "network"}, max_attempts=3, backoff=Backoff.fixed(0.05)),
        }
        worker = Worker(name, {
            "flaky": fail_until(3),
            "always_fails": always_fails,
            # A backoff computed in code lives on the worker's Task (code never travels in a job).
            "computed_backoff": Task(fail_until(3), backoff=lambda attempt, exc: 0.05 * attempt),
            "rate_limited": rate_limited,
            "always_defers": always_defers,
            "bad_input": bad_input,
            # The classifier of a Task is asked first; None falls through to the worker's.
            "call_remote": Task(call_remote, classify=lambda exc, job: (
                Decision.FAIL if isinstance(exc, KeyError) else None)),
        }, REDIS_URL, classify=classify, max_deferrals=3, concurrency=10)
        await worker.run(burst=True, handle_signals=False)
        await asyncio.sleep(0.1)  # let the collector read the last events

        for label, job in jobs.items():
            await job.refresh()
            delays = [int(e.fields["delay_ms"]) for e in events
                      if e.job_id == job.id and e.name == "retry"]
            # A completed job keeps the error of its last failed attempt, so look at the state.
            if job.state == "completed" or job.error is None:
                ending = f"result {job.result!r}"
            else:
                ending = f"{job.error.type}: {job.error.message}"
            print(f"{label:31} {job.state:9} attempts_made={job.attempts_made} "
                  f"deferrals={job.deferrals} delays_ms={delays} -> {ending}")

        counts = await queue.counts()
        print(f"summary: completed={counts['completed']} failed={counts['failed']}")
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await queue.obliterate()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
