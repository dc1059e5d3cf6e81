"""Sync handlers and their threads (issue 8, item 4): an attempt interrupted while its
handler waits for a thread never starts; a handler's timeout runs from when its thread
starts it; abandoned handlers are counted and reported, and do not take the threads that
new jobs need."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import orjson
import pytest

from shunter import Job, Queue, State
from shunter.worker.threads import HandlerThreads

from .conftest import eventually
from .worker_support import settled


def test_work_cancelled_before_a_thread_takes_it_never_runs() -> None:
    threads = HandlerThreads(1)
    gate = threading.Event()
    ran: list[str] = []
    busy = threads.submit(gate.wait, 10)
    queued = threads.submit(ran.append, "queued")
    assert queued.cancel()
    gate.set()
    assert busy.result(5) is True
    assert threads.submit(ran.append, "later").result(5) is None
    with pytest.raises(CancelledError):
        queued.result(0)
    assert ran == ["later"]
    threads.shutdown()


def test_an_abandoned_handler_gets_a_thread_added_until_it_returns() -> None:
    threads = HandlerThreads(1)
    stuck = threading.Event()
    hung = threads.submit(stuck.wait, 10)
    threads.abandon(hung)
    assert threads.abandoned == 1
    # the one thread is taken by the abandoned handler, yet new work runs at once
    assert threads.submit(lambda: "ran").result(5) == "ran"
    assert threads.threads == 2
    stuck.set()
    hung.result(5)

    def retired() -> bool:
        return threads.abandoned == 0 and threads.threads == 1

    deadline = time.monotonic() + 5
    while not retired() and time.monotonic() < deadline:
        threads.submit(lambda: None).result(5)  # an idle extra thread retires after its next item
    assert retired()
    threads.shutdown()


@pytest.mark.redis
async def test_a_sync_timeout_runs_from_when_its_thread_starts(queue: Queue,
                                                               start_worker: Any) -> None:
    """The worker's only thread is busy for 0.6 s; a job with a 0.4 s timeout that takes
    0.1 s once it runs must complete, not time out while it waited."""

    def quick(job: Job) -> str:
        time.sleep(0.1)
        return "done"

    running = start_worker({"quick": quick}, concurrency=1)
    gate = threading.Event()
    busy = running.worker.threads.submit(gate.wait, 0.6)
    job = await queue.add("quick", max_attempts=1, timeout=0.4)
    done = await settled(queue, job.id, timeout=10)
    assert busy.done()
    assert done.state is State.COMPLETED, done.error
    assert done.result == "done"


@pytest.mark.redis
async def test_an_attempt_interrupted_while_queued_never_starts(queue: Queue,
                                                                start_worker: Any) -> None:
    started: list[str] = []

    def handler(job: Job) -> str:
        started.append(job.id)
        return "ran"

    running = start_worker({"handler": handler}, concurrency=1, lease=0.6)
    gate = threading.Event()
    running.worker.threads.submit(gate.wait, 10)  # the only thread is taken
    try:
        job = await queue.add("handler")
        await eventually(lambda: running.worker.running == 1, 5, message="job claimed")
        assert await queue.cancel(job.id, by="test", reason="never mind") is False  # active
        done = await settled(queue, job.id, timeout=5)
        assert done.state is State.CANCELLED and done.cancel_reason == "never mind"
    finally:
        gate.set()
    await eventually(lambda: running.worker.running == 0, 5)
    # the thread is free now: had the cancelled attempt stayed queued, it would run here
    later = await queue.add("handler")
    assert (await settled(queue, later.id)).state is State.COMPLETED
    assert started == [later.id]


@pytest.mark.redis
async def test_abandoned_handlers_never_starve_new_sync_jobs(queue: Queue,
                                                             start_worker: Any) -> None:
    """Eight handlers that ignore job.cancelled are abandoned on a worker of concurrency
    2 (a fixed pool of concurrency + 4 threads would be exhausted); the next sync jobs
    still run and complete, and the worker reports what it abandoned."""
    release = threading.Event()

    def stubborn(job: Job) -> None:
        release.wait(30)

    def quick(job: Job) -> str:
        return "ok"

    running = start_worker({"stubborn": stubborn, "quick": quick}, concurrency=2,
                           cancel_grace=0.05)
    worker = running.worker
    try:
        stuck = [await queue.add("stubborn", max_attempts=1, timeout=0.05) for _ in range(8)]
        for job in stuck:
            assert (await settled(queue, job.id, timeout=10)).state is State.FAILED
        assert worker.threads.abandoned == 8 and worker.counters["abandoned"] == 8
        fresh = [await queue.add("quick", max_attempts=1, timeout=1) for _ in range(4)]
        for job in fresh:
            done = await settled(queue, job.id, timeout=10)
            assert done.state is State.COMPLETED, done.error
        beat = orjson.loads(worker._heartbeat(worker.queues[0]))
        assert beat["abandoned"] == 8
    finally:
        release.set()
    await eventually(lambda: worker.threads.abandoned == 0, 5, message="abandoned handlers returned")
