"""Per-worker resources (lifespan -> job.context) and middleware around each attempt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shunter import InvalidInput, Job, Queue, State, Worker, WorkerStartupError

from .conftest import REDIS_URL, RunningWorker, eventually
from .worker_support import settled

pytestmark = pytest.mark.redis


async def test_handlers_see_what_the_lifespan_yields(queue: Queue) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(worker: Worker) -> AsyncIterator[dict[str, Any]]:
        log.append(f"start {worker.id}")
        yield {"pool": "db-pool"}
        log.append("stop")

    async def use(job: Job) -> Any:
        return job.context["pool"]

    def use_sync(job: Job) -> Any:
        return job.context["pool"] + "-sync"

    a = await queue.add("use")
    b = await queue.add("use_sync")
    worker = Worker(queue.name, {"use": use, "use_sync": use_sync}, REDIS_URL, lifespan=lifespan,
                    lease=2, name="ls-1")
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 30)
    assert (await queue.get_job(a.id)).result == "db-pool"
    assert (await queue.get_job(b.id)).result == "db-pool-sync"
    assert log == ["start ls-1", "stop"]


async def test_a_failing_startup_claims_nothing(queue: Queue) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(worker: Worker) -> AsyncIterator[None]:
        raise ConnectionRefusedError("database is down")
        yield

    job = await queue.add("t")
    worker = Worker(queue.name, {"t": lambda job: None}, REDIS_URL, lifespan=lifespan, lease=2)
    with pytest.raises(WorkerStartupError, match="database is down") as caught:
        await asyncio.wait_for(worker.run(handle_signals=False), 30)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    stored = await queue.get_job(job.id)
    assert stored.state is State.WAITING and stored.attempts_made == 0


async def test_shutdown_runs_after_in_flight_jobs_end(queue: Queue) -> None:
    events: list[str] = []
    gate = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(worker: Worker) -> AsyncIterator[str]:
        yield "r"
        events.append("lifespan closed")

    async def slow(job: Job) -> None:
        events.append("job started")
        await gate.wait()
        events.append(f"job ended with {job.context}")

    job = await queue.add("slow")
    worker = Worker(queue.name, {"slow": slow}, REDIS_URL, lifespan=lifespan, lease=2,
                    shutdown_timeout=10)
    running = RunningWorker(worker)
    try:
        await eventually(lambda: "job started" in events, message="job started")
        closing = asyncio.ensure_future(running.stop())
        await eventually(lambda: worker.stopping, message="worker stopping")
        assert "lifespan closed" not in events
    finally:
        gate.set()
    await closing
    assert events == ["job started", "job ended with r", "lifespan closed"]
    assert (await queue.get_job(job.id)).state is State.COMPLETED


async def test_middleware_wraps_each_attempt_in_order(queue: Queue) -> None:
    seen: list[str] = []

    async def outer(job: Job, call_next: Any) -> Any:
        seen.append("outer in")
        try:
            return {"wrapped": await call_next()}
        finally:
            seen.append("outer out")

    async def inner(job: Job, call_next: Any) -> Any:
        seen.append("inner in")
        result = await call_next()
        seen.append("inner out")
        return result

    def handler(job: Job) -> int:  # sync: the chain still runs on the loop around it
        seen.append("handler")
        return 42

    job = await queue.add("h")
    worker = Worker(queue.name, {"h": handler}, REDIS_URL, middleware=[outer, inner], lease=2)
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 30)
    assert (await queue.get_job(job.id)).result == {"wrapped": 42}
    assert seen == ["outer in", "inner in", "handler", "inner out", "outer out"]


async def test_middleware_errors_fail_the_attempt_and_handler_errors_reach_it(queue: Queue) -> None:
    caught: list[str] = []

    async def observe(job: Job, call_next: Any) -> Any:
        try:
            return await call_next()
        except ValueError as exc:
            caught.append(str(exc))
            raise

    async def gate(job: Job, call_next: Any) -> Any:
        if job.data == "refused":
            raise PermissionError("not allowed")
        return await call_next()

    async def boom(job: Job) -> None:
        raise ValueError("boom")

    a = await queue.add("boom", "x", max_attempts=1)
    b = await queue.add("boom", "refused", max_attempts=1)
    worker = Worker(queue.name, {"boom": boom}, REDIS_URL, middleware=[observe, gate], lease=2)
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 30)
    failed_a, failed_b = await queue.get_job(a.id), await queue.get_job(b.id)
    assert failed_a.state is State.FAILED and failed_a.error is not None
    assert failed_a.error.type == "ValueError"
    assert failed_b.state is State.FAILED and failed_b.error is not None
    assert failed_b.error.type == "PermissionError"
    assert caught == ["boom"]


async def test_a_cancel_stands_even_if_middleware_swallows_it(queue: Queue) -> None:
    async def swallow(job: Job, call_next: Any) -> Any:
        try:
            return await call_next()
        except BaseException:
            return "swallowed"

    started = asyncio.Event()

    async def forever(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await queue.add("forever")
    worker = Worker(queue.name, {"forever": forever}, REDIS_URL, middleware=[swallow], lease=0.6)
    running = RunningWorker(worker)
    try:
        await asyncio.wait_for(started.wait(), 10)
        await queue.cancel(job.id, by="test", reason="stop")  # active: a request
        done = await settled(queue, job.id)
        assert done.state is State.CANCELLED and done.result is None
    finally:
        await running.stop()


def test_bad_lifespan_and_middleware_are_refused() -> None:
    ok = {"t": lambda job: None}
    with pytest.raises(InvalidInput, match="lifespan"):
        Worker("q", ok, REDIS_URL, lifespan="not callable")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="middleware"):
        Worker("q", ok, REDIS_URL, middleware=[1])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="middleware"):
        Worker("q", ok, REDIS_URL, middleware="abc")  # type: ignore[arg-type]
