"""A queue-wide concurrency limit (issue 11, item 1, queue-wide part): enforced at claim
time across every worker, a slot freed by every way out of active (rescue included), idle
workers woken when one frees, and no spinning while the limit holds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio

from faults.redis_server import RedisServer
from shunter import InvalidInput, Job, Queue, State, Worker
from shunter.storage import Storage

from .conftest import REDIS_URL, eventually

pytestmark = pytest.mark.redis


async def test_claims_stop_at_the_limit_and_a_freed_slot_wakes_workers(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    assert (await queue.configure(concurrency=2))["concurrency"] == 2
    for n in range(5):
        await queue.add("t", n)
    await client.delete(storage.keys.marker)
    first = await storage.claim(5, 60_000, "w1")
    assert len(first.jobs) == 2
    assert not await client.exists(storage.keys.marker), "a claim that filled the limit must not wake"
    blocked = await storage.claim(5, 60_000, "w2")
    assert blocked.jobs == [] and blocked.pending == 3
    assert not await client.exists(storage.keys.marker), "a claim at the limit must not wake"
    done = first.jobs[0]
    await storage.complete(done[b"id"].decode(), int(done[b"token"]), b"1")
    assert await client.exists(storage.keys.marker), "a freed slot wakes idle workers"
    assert len((await storage.claim(5, 60_000, "w2")).jobs) == 1
    failing = first.jobs[1]
    await client.delete(storage.keys.marker)
    await storage.fail(failing[b"id"].decode(), int(failing[b"token"]), b'{"type": "E"}')
    assert await client.exists(storage.keys.marker), "a failure frees its slot too"
    assert len((await storage.claim(5, 60_000, "w2")).jobs) == 1
    assert (await queue.configure(concurrency=0))["concurrency"] is None
    assert len((await storage.claim(5, 60_000, "w3")).jobs) == 1  # the last one, no limit


async def test_rescue_of_a_dead_workers_job_frees_its_slot(queue: Queue, storage: Storage) -> None:
    await queue.configure(concurrency=1)
    a = await queue.add("t", 1)
    await queue.add("t", 2)
    held = await storage.claim(2, 150, "dead-worker")  # never renewed: the worker died
    assert [j[b"id"].decode() for j in held.jobs] == [a.id]
    assert (await storage.claim(2, 60_000, "w2")).jobs == []

    async def rescued() -> bool:
        return await storage.rescue(5, lock_ms=0) > 0

    await eventually(rescued, 10, message="the expired lease rescued")
    again = await storage.claim(2, 60_000, "w2")
    assert len(again.jobs) == 1  # one slot: the rescued job went back to waiting, behind


async def test_the_limit_holds_across_workers(queue: Queue, client: redis.asyncio.Redis) -> None:
    await queue.configure(concurrency=2)
    running, most, active_seen = 0, 0, 0

    async def work(job: Job) -> None:
        nonlocal running, most, active_seen
        running += 1
        most = max(most, running)
        active_seen = max(active_seen, await client.zcard(queue.storage.keys.active))
        await asyncio.sleep(0.02)
        running -= 1

    await queue.add_bulk([{"task": "work", "data": n} for n in range(30)])
    workers = [Worker(queue.name, {"work": work}, REDIS_URL, concurrency=5, lease=2,
                      block_timeout=1) for _ in range(3)]
    runs = [asyncio.ensure_future(w.run(handle_signals=False)) for w in workers]
    try:
        async def drained() -> bool:
            return (await queue.counts())["completed"] == 30

        await eventually(drained, 30, message="every job completed")
    finally:
        for w in workers:
            await w.close()
        await asyncio.wait_for(asyncio.gather(*runs), 30)
    assert most <= 2 and active_seen <= 2
    assert most == 2, "the limit, not less, was used"
    assert sum(w.counters["completed"] for w in workers) == 30


@pytest.fixture(scope="module")
def own_server() -> Iterator[RedisServer]:
    srv = RedisServer()
    srv.start()
    yield srv
    srv.cleanup()


async def test_blocked_workers_wait_instead_of_spinning(own_server: RedisServer) -> None:
    """Three idle workers while the only slot is held for a second: a handful of script
    calls, not a busy loop (a claim at the limit must not wake the others)."""
    queue = Queue(f"limits-{uuid.uuid4().hex[:8]}", own_server.url)
    client = redis.asyncio.Redis.from_url(own_server.url)
    gate = asyncio.Event()

    async def hold(job: Job) -> None:
        await gate.wait()

    try:
        await queue.configure(concurrency=1)
        first = await queue.add("hold")
        for _ in range(3):
            await queue.add("hold")
        workers = [Worker(queue.name, {"hold": hold}, own_server.url, concurrency=2, lease=5,
                          block_timeout=5) for _ in range(3)]
        runs = [asyncio.ensure_future(w.run(handle_signals=False)) for w in workers]
        try:
            await eventually(lambda: sum(w.running for w in workers) == 1, message="one running")

            async def calls() -> int:
                stats = await client.info("commandstats")
                return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

            before, started = await calls(), time.monotonic()
            await asyncio.sleep(1.0)  # the window measured, not a wait for a condition
            during = await calls() - before
            assert sum(w.running for w in workers) == 1
            # maintenance (rescue about every lease/2) and the odd claim: far from a spin
            assert during < 40, f"{during} script calls in {time.monotonic() - started:.1f}s"
            gate.set()

            async def drained() -> bool:
                return (await queue.counts())["completed"] == 4

            await eventually(drained, 30, message="the rest ran one at a time")
            assert (await queue.get_job(first.id)).state is State.COMPLETED  # type: ignore[union-attr]
        finally:
            gate.set()
            for w in workers:
                await w.close()
            await asyncio.wait_for(asyncio.gather(*runs), 30)
    finally:
        await queue.obliterate(force=True)
        await queue.close()
        await client.aclose()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", 1_000_001])
async def test_bad_limits_are_refused(queue: Queue, bad: Any) -> None:
    with pytest.raises(InvalidInput, match="concurrency"):
        await queue.configure(concurrency=bad)
    assert (await queue.settings())["concurrency"] is None
