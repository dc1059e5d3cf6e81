"""One worker, many queues: strict order, weights, one set of slots, one blocking wait on
every queue, and the CLI's -Q running one worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from shunter import InvalidInput, Job, Queue, Worker

from .conftest import REDIS_URL, RunningWorker, eventually
from .worker_support import settled

pytestmark = pytest.mark.redis


@pytest.fixture
async def queues(queue_name: str) -> AsyncIterator[list[Queue]]:
    made = [Queue(f"{queue_name}-{i}", REDIS_URL) for i in range(3)]
    yield made
    for q in made:
        with contextlib.suppress(Exception):
            await q.obliterate(force=True)
        await q.close()


async def test_strict_order_serves_the_first_queue_first(queues: list[Queue]) -> None:
    high, low, _ = queues
    order: list[str] = []

    async def record(job: Job) -> None:
        order.append(job.queue)

    for i in range(20):
        await low.add("t", i)
        await high.add("t", i)
    worker = Worker([high.name, low.name], {"t": record}, REDIS_URL, concurrency=1, lease=2)
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 30)
    assert order == [high.name] * 20 + [low.name] * 20


async def test_weights_share_the_claims(queues: list[Queue]) -> None:
    a, b, _ = queues
    seen: Counter[str] = Counter()

    async def record(job: Job) -> None:
        seen[job.queue] += 1

    await a.add_bulk([{"task": "t", "data": i} for i in range(400)])
    await b.add_bulk([{"task": "t", "data": i} for i in range(400)])
    worker = Worker({a.name: 3, b.name: 1}, {"t": record}, REDIS_URL, concurrency=1, batch=1,
                    lease=2)
    task = asyncio.ensure_future(worker.run(handle_signals=False))
    await eventually(lambda: sum(seen.values()) >= 200, 30, message="200 jobs ran")
    await worker.close()
    await asyncio.wait_for(task, 30)
    # 3:1 expected; with 200+ draws, a share of A under 60 % or over 90 % would be a bug
    share = seen[a.name] / sum(seen.values())
    assert 0.6 < share < 0.9, seen


async def test_one_concurrency_limit_for_every_queue(queues: list[Queue]) -> None:
    running, most = 0, 0
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    for q in queues:
        for i in range(3):
            await q.add("hold", i)
    worker = Worker([q.name for q in queues], {"hold": hold}, REDIS_URL, concurrency=4, lease=2)
    task = asyncio.ensure_future(worker.run(handle_signals=False))
    await eventually(lambda: running == 4, message="4 jobs running")
    assert worker.running == 4
    release.set()
    await eventually(lambda: running == 0 and most == 4, message="all ran")

    async def all_done() -> bool:
        return all([(await q.counts())["completed"] == 3 for q in queues])

    await eventually(all_done, message="every job completed")
    await worker.close()
    await asyncio.wait_for(task, 30)
    assert most == 4


async def test_an_idle_worker_wakes_for_any_of_its_queues(queues: list[Queue]) -> None:
    """block_timeout of 30 s: a job on the third queue starting at once shows the worker
    waits on all markers at once, not in turn."""
    started: dict[str, float] = {}

    async def mark(job: Job) -> None:
        started[job.id] = time.monotonic()

    worker = Worker([q.name for q in queues], {"t": mark}, REDIS_URL, block_timeout=30, lease=2)
    blocked = asyncio.Event()

    class Recording:  # the fetcher's storage, telling when it blocks
        def __getattr__(self, name: str) -> Any:
            return getattr(worker.storage, name)

        async def wait_for_work(self, timeout: float, others: Any = ()) -> bool:
            blocked.set()
            try:
                return await worker.storage.wait_for_work(timeout, others)
            finally:
                blocked.clear()

    worker.fetcher.storage = Recording()  # type: ignore[assignment]
    running = RunningWorker(worker)
    try:
        for q in reversed(queues):
            await asyncio.wait_for(blocked.wait(), 10)  # the worker waits for work
            added = time.monotonic()
            job = await q.add("t")
            await eventually(lambda j=job: j.id in started, 10, message=f"job on {q.name} ran")
            assert started[job.id] - added < 5, "the worker did not wake for this queue"
    finally:
        await running.stop()


async def test_each_queue_keeps_its_own_jobs_and_heartbeat(queues: list[Queue]) -> None:
    async def echo(job: Job) -> Any:
        return [job.queue, job.data]

    jobs = [(q, await q.add("echo", i, job_id="same-id")) for i, q in enumerate(queues)]
    worker = Worker([q.name for q in queues], {"echo": echo}, REDIS_URL, lease=2, name="multi-1")
    running = RunningWorker(worker)
    try:
        for i, (q, job) in enumerate(jobs):
            done = await settled(q, job.id)
            assert done.result == [q.name, i]
        for q in queues:
            beats = [orjson.loads(b) for b in await q.storage.heartbeats.alive()]
            mine = [b for b in beats if b["id"] == "multi-1"]
            assert len(mine) == 1 and mine[0]["queue"] == q.name
            assert mine[0]["queues"] == [x.name for x in queues]
    finally:
        await running.stop()


async def test_queue_options_are_checked() -> None:
    ok = {"t": lambda job: None}
    for bad in ([], {}, ["a", "a"], {"a": 0}, {"a": 1.5}, {"a": True}, 42, ["bad name!"]):
        with pytest.raises(InvalidInput):
            Worker(bad, ok, REDIS_URL)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="queues"):
        Worker(None, ok, REDIS_URL)


async def test_replace_keeps_every_other_option() -> None:
    base = Worker("a", {"t": lambda job: None}, REDIS_URL, concurrency=7, lease=3, name="w-x",
                  max_events=5000, max_payload_bytes=4096, job_timeout=12)
    other = base.replace(queues=["b", "c"], concurrency=3)
    assert other.queues == ["b", "c"] and other.concurrency == 3
    assert (other.id, other.lease, other.job_timeout) == ("w-x", 3, 12)
    assert (other.storage.max_events, other.storage.max_payload_bytes) == (5000, 4096)
    with pytest.raises(InvalidInput, match="no option"):
        base.replace(colour="red")


async def test_unique_names_per_queue_in_the_worker(queue_name: str) -> None:
    """Two queues with a job of the same id: both run, and neither attempt is taken for
    the other (attempts are keyed by queue too)."""
    a, b = Queue(f"{queue_name}-a", REDIS_URL), Queue(f"{queue_name}-b", REDIS_URL)
    gate = asyncio.Event()
    seen: list[str] = []

    async def wait(job: Job) -> None:
        seen.append(job.queue)
        await gate.wait()

    try:
        same = uuid.uuid4().hex
        await a.add("w", job_id=same)
        await b.add("w", job_id=same)
        worker = Worker([a.name, b.name], {"w": wait}, REDIS_URL, lease=2)
        running = RunningWorker(worker)
        await eventually(lambda: len(seen) == 2, message="both attempts running")
        assert worker.running == 2
        gate.set()
        assert (await settled(a, same)).state == (await settled(b, same)).state
        await running.stop()
    finally:
        for q in (a, b):
            await q.obliterate(force=True)
            await q.close()
