"""Stopping a running attempt: timeouts (job > task > worker) and cancellation of waiting
and active jobs, for async and sync handlers, including handlers that will not stop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from shunter import Backoff, Job, JobNotInState, Queue, State, Task

from .conftest import eventually
from .worker_support import counter, events, settled

pytestmark = pytest.mark.redis

# -- timeouts --------------------------------------------------------------------------------

async def test_timed_out_async_job_is_a_retryable_failure(queue: Queue, start_worker: Any) -> None:
    calls, bump = counter()
    interrupted: list[int] = []

    async def slow(job: Job) -> str:
        if bump(job.id) == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                interrupted.append(job.attempt)
                raise
        return "second time lucky"

    job = await queue.add("slow", max_attempts=2, timeout=0.2, backoff=Backoff.fixed(0))
    start_worker({"slow": slow})
    assert await job.wait(timeout=5) == "second time lucky"
    done = await queue.get_job(job.id)
    assert interrupted == [1] and done.attempts_made == 2 and calls[job.id] == 2
    assert done.error is not None and done.error.type == "JobTimeout"
    assert "timeout of 0.2s" in done.error.message
    claim, retry = [e for e in await events(queue.storage, job.id) if e["event"] in ("claim", "retry")][:2]
    assert (claim["event"], retry["event"]) == ("claim", "retry")
    assert 200 <= int(retry["ms"]) - int(claim["ms"]) < 1000


@pytest.mark.parametrize("where", ["job", "task", "worker", "job_beats_task"])
async def test_timeout_comes_from_job_then_task_then_worker(queue: Queue, start_worker: Any,
                                                            where: str) -> None:
    async def slow(job: Job) -> None:
        await asyncio.sleep(30)

    job_timeout = {"job": 0.2, "job_beats_task": 0.2}.get(where)
    task_timeout = {"task": 0.25, "job_beats_task": 20.0}.get(where)
    worker_timeout = 0.3 if where == "worker" else 20.0
    job = await queue.add("slow", max_attempts=1, timeout=job_timeout)
    start_worker({"slow": Task(slow, timeout=task_timeout)}, job_timeout=worker_timeout)
    done = await settled(queue, job.id)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "JobTimeout"
    expected = {"job": "0.2s", "task": "0.25s", "worker": "0.3s", "job_beats_task": "0.2s"}[where]
    assert done.error.message.endswith(f"timeout of {expected}")


async def test_sync_handler_ignoring_the_timeout_is_abandoned(queue: Queue, start_worker: Any) -> None:
    release = threading.Event()
    saw_flag: list[bool] = []

    def stubborn(job: Job) -> str:
        release.wait(10)  # never looks at job.cancelled
        saw_flag.append(job.cancelled)
        return "too late"

    job = await queue.add("stubborn", max_attempts=1, timeout=0.2)
    running = start_worker({"stubborn": stubborn}, cancel_grace=0.2)
    started = time.monotonic()
    done = await settled(queue, job.id)
    elapsed = time.monotonic() - started
    try:
        assert not release.is_set()  # the thread is still blocked: the job did not wait for it
        assert done.state is State.FAILED and done.error is not None
        assert done.error.type == "JobTimeout" and done.result is None
        assert 0.35 <= elapsed < 2.0  # timeout + grace, not the handler's 10 s
        await eventually(lambda: running.worker.running == 0, 2)  # its slot is free again
    finally:
        release.set()
    await eventually(lambda: saw_flag, 5)
    assert saw_flag == [True]
    assert (await queue.get_job(job.id)).result is None  # the late return is dropped


# -- cancellation -------------------------------------------------------------------------------

async def test_cancelling_a_waiting_job_is_immediate(queue: Queue, start_worker: Any) -> None:
    ran: list[str] = []

    async def work(job: Job) -> None:
        ran.append(job.id)

    doomed = await queue.add("work")
    later = await queue.add("work", delay=60)
    kept = await queue.add("work")
    assert await queue.cancel(doomed.id, by="alice", reason="not needed") is True
    assert await queue.cancel(later.id) is True
    for job_id in (doomed.id, later.id):
        job = await queue.get_job(job_id)
        assert job.state is State.CANCELLED and job.cancelled_at is not None
    job = await queue.get_job(doomed.id)
    assert (job.cancelled_by, job.cancel_reason) == ("alice", "not needed")
    start_worker({"work": work})
    await kept.wait(timeout=5)
    assert ran == [kept.id]
    counts = await queue.counts()
    assert (counts["cancelled"], counts["scheduled"], counts["waiting"]) == (2, 0, 0)
    with pytest.raises(JobNotInState):
        await queue.cancel(kept.id)  # finished jobs cannot be cancelled


async def test_cancelling_an_active_async_job_interrupts_its_handler(queue: Queue,
                                                                    start_worker: Any) -> None:
    started = asyncio.Event()
    interrupted_at: list[float] = []

    async def long(job: Job) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted_at.append(time.monotonic())
            raise
        return "finished"

    lease = 0.9
    job = await queue.add("long", max_attempts=3)
    running = start_worker({"long": long}, lease=lease)
    await eventually(started.is_set, 5)
    asked = time.monotonic()
    assert await queue.cancel(job.id, by="ops", reason="wrong customer") is False  # active: asked
    done = await settled(queue, job.id)
    assert interrupted_at and interrupted_at[0] - asked <= lease / 3 + 0.3
    assert done.state is State.CANCELLED and done.result is None
    assert done.cancelled_at is not None and done.finished_at is not None
    assert (done.cancelled_by, done.cancel_reason) == ("ops", "wrong customer")
    assert done.attempts_made == 0  # cancelled, not failed: no retry follows
    assert [e["event"] for e in await events(queue.storage, job.id)][-2:] == ["cancel", "abort"]
    await eventually(lambda: running.worker.running == 0, 2)
    assert running.worker.counters["cancelled"] == 1


async def test_cancelling_an_active_sync_job_sets_job_cancelled(queue: Queue,
                                                               start_worker: Any) -> None:
    started = threading.Event()
    polls: list[bool] = []

    def long(job: Job) -> str:
        started.set()
        deadline = time.monotonic() + 10
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        polls.append(job.cancelled)
        return "stopped early"

    job = await queue.add("long")
    start_worker({"long": long}, lease=0.9)
    await eventually(started.is_set, 5)
    assert await queue.cancel(job.id, by="ops") is False
    done = await settled(queue, job.id, timeout=3)
    assert polls == [True]
    assert done.state is State.CANCELLED and done.result is None
    assert done.cancelled_by == "ops"


async def test_handler_that_swallows_cancellation_is_abandoned(queue: Queue,
                                                               start_worker: Any) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    swallowed: list[bool] = []
    finished: list[bool] = []

    async def stubborn(job: Job) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append(True)  # and carries on regardless
        await release.wait()
        finished.append(True)
        return "ignored"

    job = await queue.add("stubborn")
    running = start_worker({"stubborn": stubborn}, lease=0.9, cancel_grace=0.3)
    await eventually(started.is_set, 5)
    await queue.cancel(job.id, reason="stop it")
    try:
        done = await settled(queue, job.id, timeout=5)
        assert swallowed == [True] and not finished  # still running, yet the job ended
        assert done.state is State.CANCELLED and done.cancel_reason == "stop it"
        await eventually(lambda: running.worker.running == 0, 2)
    finally:
        release.set()
    await eventually(lambda: finished, 5)
    assert (await queue.get_job(job.id)).state is State.CANCELLED  # its return changes nothing
