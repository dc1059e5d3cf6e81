"""The task registry: declared once by name, enqueued through the task object, served by a
Worker built from the registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import shunter.sync
from shunter import Backoff, InvalidInput, Job, Queue, State, TaskDef, Tasks, Worker

from .conftest import REDIS_URL


@pytest.fixture
async def registry(queue_name: str) -> AsyncIterator[Tasks]:
    tasks = Tasks(queue=queue_name, redis=REDIS_URL)
    yield tasks
    await tasks.close()


def test_the_decorator_returns_a_callable_task_with_its_options() -> None:
    tasks = Tasks()

    @tasks.task("emails.send", queue="emails", timeout=30, max_attempts=5,
                backoff=Backoff.fixed(2), priority=7)
    def send_email(job: Any) -> str:
        """Send one email."""
        return f"sent {job}"

    assert isinstance(send_email, TaskDef)
    assert send_email("x") == "sent x"  # a plain call runs the handler
    assert (send_email.name, send_email.queue, send_email.__name__) == ("emails.send", "emails",
                                                                         "send_email")
    assert send_email.__doc__ == "Send one email."
    assert send_email.job_options() == {"max_attempts": 5, "backoff": Backoff.fixed(2),
                                        "timeout": 30, "priority": 7}
    assert tasks["emails.send"] is send_email and "emails.send" in tasks
    assert tasks.names == ["emails.send"] and tasks.queues == ["emails"]
    assert tasks.handlers()["emails.send"].timeout == 30


def test_mistakes_fail_at_declaration() -> None:
    tasks = Tasks()

    @tasks.task("a")
    def a(job: Any) -> None: ...

    with pytest.raises(InvalidInput, match="registered already"):
        tasks.task("a")(lambda job: None)
    with pytest.raises(InvalidInput, match="registered already"):
        tasks.register("b", a)  # type: ignore[arg-type]
    bad: list[dict[str, Any]] = [
        {"max_attempts": 0}, {"max_attempts": 1001}, {"priority": 5000}, {"timeout": -1},
        {"backoff": "fast"}, {"queue": "no spaces allowed"}, {"classify": 3},
    ]
    for options in bad:
        with pytest.raises(InvalidInput):
            tasks.task("c", **options)(lambda job: None)
    for name in ("", "1starts-with-digit", "has space", "x" * 201):
        with pytest.raises(InvalidInput):
            tasks.task(name)(lambda job: None)
    with pytest.raises(InvalidInput):
        tasks.task("d")(42)  # type: ignore[arg-type]
    assert tasks.names == ["a"]
    with pytest.raises(KeyError, match="no task named 'typo'"):
        tasks["typo"]


def test_include_merges_registries() -> None:
    a, b, c = Tasks(), Tasks(), Tasks()
    a.task("one")(lambda job: 1)
    b.task("two", queue="other")(lambda job: 2)
    c.task("one")(lambda job: 3)
    a.include(b)
    assert a.names == ["one", "two"] and a.queues == ["default", "other"]
    with pytest.raises(InvalidInput, match="both registries"):
        a.include(c)


@pytest.mark.redis
async def test_add_through_the_task_uses_its_options(registry: Tasks, queue: Queue) -> None:
    @registry.task("report.build", timeout=12, max_attempts=7, backoff=Backoff.fixed(3),
                   priority=5)
    async def build(job: Job) -> None: ...

    job = await build.add({"month": 11})
    assert (job.queue, job.task, job.data, job.max_attempts, job.priority) == (
        queue.name, "report.build", {"month": 11}, 7, 5)
    stored = await queue.get_job(job.id)
    assert stored is not None
    assert (stored.timeout, stored.backoff, stored.max_attempts) == (12, Backoff.fixed(3), 7)
    # options given to add win, including a priority of 0 over the task's 5
    override = await build.add(None, priority=0, max_attempts=1, timeout=1)
    stored = await queue.get_job(override.id)
    assert stored is not None
    assert (stored.priority, stored.max_attempts, stored.timeout) == (0, 1, 1)


@pytest.mark.redis
async def test_queues_take_the_task_object(registry: Tasks, queue: Queue) -> None:
    @registry.task("thumbs.make", max_attempts=4)
    def make(job: Job) -> None: ...

    job = await queue.add(make, {"img": 1})
    assert (job.task, job.max_attempts) == ("thumbs.make", 4)
    [bulk] = await queue.add_bulk([{"task": make, "data": 2, "priority": 3}])
    assert (bulk.task, bulk.max_attempts, bulk.priority) == ("thumbs.make", 4, 3)
    with shunter.sync.Queue(queue.name, REDIS_URL) as sync_queue:
        blocking = sync_queue.add(make, {"img": 3})
        assert (blocking.task, blocking.max_attempts) == ("thumbs.make", 4)
    with pytest.raises(InvalidInput, match="task name or a registered task"):
        await queue.add(object(), 1)  # type: ignore[arg-type]


@pytest.mark.redis
async def test_a_worker_built_from_the_registry_serves_its_queues(queue_name: str) -> None:
    tasks = Tasks(queue=f"{queue_name}-a", redis=REDIS_URL)

    @tasks.task("double")
    async def double(job: Job) -> int:
        return int(job.data) * 2

    @tasks.task("shout", queue=f"{queue_name}-b")
    def shout(job: Job) -> str:
        return str(job.data).upper()

    @tasks.task("slow", timeout=0.2, max_attempts=1)
    async def slow(job: Job) -> None:
        await asyncio.sleep(30)

    a, b = Queue(f"{queue_name}-a", REDIS_URL), Queue(f"{queue_name}-b", REDIS_URL)
    try:
        jobs = [await double.add(21), await shout.add("hi"), await slow.add(),
                await a.add("not.registered", max_attempts=1)]
        worker = Worker(tasks=tasks, redis=REDIS_URL, lease=2)
        assert worker.queues == [a.name, b.name]
        await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 30)
        done = [await q.get_job(j.id) for q, j in zip((a, b, a, a), jobs, strict=True)]
        assert [d.state if d else None for d in done] == [State.COMPLETED, State.COMPLETED,
                                                          State.FAILED, State.FAILED]
        assert done[0] is not None and done[0].result == 42
        assert done[1] is not None and done[1].result == "HI"
        assert done[2] is not None and done[2].error is not None
        assert done[2].error.type == "JobTimeout"  # the task's timeout
        assert done[3] is not None and done[3].error is not None
        assert done[3].error.type == "UnregisteredTask"
        assert "not.registered" in done[3].error.message
    finally:
        await tasks.close()
        for q in (a, b):
            with contextlib.suppress(Exception):
                await q.obliterate(force=True)
            await q.close()


def test_a_worker_needs_queues_or_a_registry() -> None:
    with pytest.raises(InvalidInput, match="queues"):
        Worker(tasks={"t": lambda job: None}, redis=REDIS_URL)
    with pytest.raises(InvalidInput, match="registry"):
        Worker("q", tasks=[], redis=REDIS_URL)  # type: ignore[arg-type]
