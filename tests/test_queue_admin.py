"""Admin behaviour of the asyncio Queue: pause/resume, drain, obliterate, cancel, replay and
retention of finished jobs (by count and by age)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio

from shunter import (
    Backoff,
    Job,
    JobNotFound,
    JobNotInState,
    Queue,
    Retention,
    ShunterError,
    State,
    UnrecoverableError,
)

from .conftest import burst, eventually

pytestmark = pytest.mark.redis


async def keys_of(client: redis.asyncio.Redis, queue: Queue) -> list[bytes]:
    return sorted([k async for k in client.scan_iter(match=queue.storage.keys.prefix + "*")])


async def server_ms(client: redis.asyncio.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def ok(job: Job) -> str:
    return "ok"


async def boom(job: Job) -> None:
    raise UnrecoverableError("boom")


# -- pause / resume ---------------------------------------------------------------------------

async def test_paused_queue_is_not_claimed(queue: Queue, start_worker: Any) -> None:
    done: list[str] = []

    async def handler(job: Job) -> None:
        done.append(job.id)

    start_worker({"t": handler}, block_timeout=0.2)
    first = await queue.add("t")
    await eventually(lambda: first.id in done, message="worker is alive")
    await queue.pause()
    assert (await queue.counts())["paused"] == 1
    job = await queue.add("t")
    # For a bounded time, nothing may claim it (the worker polls at least every 0.2 s).
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert (await queue.get_job(job.id)).state is State.WAITING
        await asyncio.sleep(0.05)
    assert job.id not in done
    await queue.resume()
    assert (await queue.counts())["paused"] == 0
    await eventually(lambda: job.id in done, message="job runs after resume")
    assert (await job.wait(timeout=5)) is None


async def test_burst_worker_returns_on_paused_queue(queue: Queue) -> None:
    job = await queue.add("t")
    await queue.pause()
    await burst(queue, {"t": ok})
    assert (await queue.get_job(job.id)).state is State.WAITING
    await queue.resume()
    await burst(queue, {"t": ok})
    assert (await queue.get_job(job.id)).state is State.COMPLETED


async def test_pause_and_resume_are_idempotent(queue: Queue) -> None:
    await queue.pause()
    await queue.pause()
    assert (await queue.counts())["paused"] == 1
    await queue.resume()
    await queue.resume()
    assert (await queue.counts())["paused"] == 0


# -- drain ------------------------------------------------------------------------------------

async def test_drain_removes_waiting_and_scheduled_only(queue: Queue, client: redis.asyncio.Redis) -> None:
    s = queue.storage
    done = await queue.add("t", job_id="done")
    claim = await s.claim(1, 60_000, "tester")
    await s.complete(done.id, int(claim.jobs[0][b"token"]), b"1")
    active = await queue.add("t", job_id="active")
    await s.claim(1, 60_000, "tester")
    await queue.add("t", job_id="w1")
    await queue.add("t", job_id="w2", priority=3)
    await queue.add("t", job_id="s1", delay=60)
    assert await queue.drain() == 3
    counts = await queue.counts()
    assert (counts["waiting"], counts["scheduled"], counts["active"], counts["completed"]) == (0, 0, 1, 1)
    for gone in ("w1", "w2", "s1"):
        assert await queue.get_job(gone) is None
        assert not await client.exists(s.keys.job(gone))
    assert (await queue.get_job(active.id)).state is State.ACTIVE
    assert (await queue.get_job(done.id)).state is State.COMPLETED
    assert await queue.drain() == 0


async def test_drain_many(queue: Queue) -> None:
    await queue.add_bulk([{"task": "t"}] * 1500 + [{"task": "t", "delay": 60}] * 700)
    assert await queue.drain() == 2200
    assert (await queue.counts())["waiting"] == 0


# -- obliterate -------------------------------------------------------------------------------

async def test_obliterate_refuses_with_active_jobs(queue: Queue, client: redis.asyncio.Redis) -> None:
    await queue.add("t", job_id="a")
    await queue.add("t", job_id="b")
    await queue.storage.claim(1, 60_000, "tester")
    before = await keys_of(client, queue)
    with pytest.raises(ShunterError, match="force=True"):
        await queue.obliterate()
    assert await keys_of(client, queue) == before
    assert await queue.obliterate(force=True) == 2
    assert await keys_of(client, queue) == []


async def test_obliterate_leaves_no_keys(queue: Queue, client: redis.asyncio.Redis) -> None:
    async def logs(job: Job) -> None:
        await job.log("a line")
        await job.update_progress(50)
        if job.data == "fail":
            raise UnrecoverableError("no")

    await queue.add_bulk([{"task": "t", "data": "fail" if i % 3 == 0 else i} for i in range(30)])
    await burst(queue, {"t": logs})
    await queue.add("t", delay=60)
    await queue.add("t", job_id="to-cancel")
    await queue.cancel("to-cancel")
    await queue.add_bulk([{"task": "t"}] * 2500)  # more than one obliterate batch
    await queue.pause()
    await queue.storage.heartbeats.beat("a-worker-that-died", b"{}", 60_000)  # never forgotten
    assert any(b":logs:" in k for k in await keys_of(client, queue))
    assert any(b":worker:" in k for k in await keys_of(client, queue))
    assert await queue.obliterate() == 30 + 1 + 1 + 2500
    assert await keys_of(client, queue) == []
    assert await queue.obliterate() == 0


async def test_heartbeat_index_forgets_long_dead_workers(queue: Queue,
                                                        client: redis.asyncio.Redis) -> None:
    await client.zadd(queue.storage.keys.workers, {"died-long-ago": 1})
    await queue.storage.heartbeats.beat("alive", b"{}", 5_000)
    members = await client.zrange(queue.storage.keys.workers, 0, -1)
    assert members == [b"alive"]


# -- cancel -----------------------------------------------------------------------------------

@pytest.mark.parametrize("delay", [None, 60])
async def test_cancel_waiting_or_scheduled(queue: Queue, client: redis.asyncio.Redis,
                                           delay: float | None) -> None:
    job = await queue.add("t", delay=delay)
    before = await server_ms(client)
    assert await queue.cancel(job.id, by="ops@example", reason="customer asked") is True
    got = await queue.get_job(job.id)
    assert got.state is State.CANCELLED and got.finished
    assert got.cancelled_by == "ops@example" and got.cancel_reason == "customer asked"
    assert got.cancelled_at is not None
    assert before - 5 <= got.cancelled_at.timestamp() * 1000 <= await server_ms(client) + 5
    counts = await queue.counts()
    assert (counts["waiting"], counts["scheduled"], counts["cancelled"]) == (0, 0, 1)
    assert await queue.job_ids("cancelled") == [job.id]
    await burst(queue, {"t": ok})
    assert (await queue.get_job(job.id)).state is State.CANCELLED  # never ran


async def test_cancel_caps_by_and_reason(queue: Queue) -> None:
    job = await queue.add("t")
    await queue.cancel(job.id, by="b" * 5000, reason="r" * 50_000)
    got = await queue.get_job(job.id)
    assert got.cancelled_by == "b" * 200 and got.cancel_reason == "r" * 1000


@pytest.mark.parametrize("handler,state", [(ok, State.COMPLETED), (boom, State.FAILED)])
async def test_cancel_finished_job_is_refused(queue: Queue, handler: Any, state: State) -> None:
    job = await queue.add("t")
    await burst(queue, {"t": handler})
    with pytest.raises(JobNotInState):
        await queue.cancel(job.id)
    got = await queue.get_job(job.id)
    assert got.state is state and got.cancelled_at is None


async def test_cancel_twice_is_refused(queue: Queue) -> None:
    job = await queue.add("t")
    await queue.cancel(job.id, by="first")
    with pytest.raises(JobNotInState):
        await queue.cancel(job.id, by="second")
    assert (await queue.get_job(job.id)).cancelled_by == "first"


async def test_cancel_unknown_job(queue: Queue, client: redis.asyncio.Redis) -> None:
    with pytest.raises(JobNotFound):
        await queue.cancel("nope")
    assert await keys_of(client, queue) == []


async def test_cancel_active_job_is_requested(queue: Queue) -> None:
    job = await queue.add("t")
    await queue.storage.claim(1, 60_000, "tester")
    assert await queue.cancel(job.id, by="me", reason="stop") is False
    got = await queue.get_job(job.id)
    assert got.state is State.ACTIVE and got.cancel_requested
    assert (got.cancelled_by, got.cancel_reason) == ("me", "stop")


# -- replay -----------------------------------------------------------------------------------

async def test_replay_failed_job(queue: Queue) -> None:
    calls: list[int] = []

    async def flaky(job: Job) -> str:
        calls.append(job.attempt)
        if len(calls) <= 2:
            raise RuntimeError(f"attempt {job.attempt}")
        return "finally"

    job = await queue.add("t", max_attempts=2, backoff=Backoff.fixed(0))
    await burst(queue, {"t": flaky})
    failed = await queue.get_job(job.id)
    assert failed.state is State.FAILED and failed.attempts_made == 2
    assert await queue.job_ids("failed") == [job.id]
    await queue.replay(job.id)
    replayed = await queue.get_job(job.id)
    assert replayed.state is State.WAITING and replayed.attempts_made == 0
    assert replayed.finished_at is None and await queue.job_ids("failed") == []
    await burst(queue, {"t": flaky})
    assert calls == [1, 2, 1]
    assert await job.wait(timeout=5) == "finally"


async def test_replay_cancelled_job(queue: Queue) -> None:
    job = await queue.add("t")
    await queue.cancel(job.id, by="x", reason="y")
    await queue.replay(job.id)
    got = await queue.get_job(job.id)
    assert got.state is State.WAITING and got.cancelled_at is None and got.cancelled_by is None
    await burst(queue, {"t": ok})
    assert await job.wait(timeout=5) == "ok"


async def test_replay_refused_outside_dead_letter(queue: Queue) -> None:
    waiting = await queue.add("t")
    with pytest.raises(JobNotInState):
        await queue.replay(waiting.id)
    with pytest.raises(JobNotFound):
        await queue.replay("never-added")
    done = await queue.add("t", job_id="done")
    await queue.cancel(waiting.id)
    await burst(queue, {"t": ok})
    with pytest.raises(JobNotInState):
        await queue.replay(done.id)
    assert (await queue.get_job(done.id)).state is State.COMPLETED


# -- retention --------------------------------------------------------------------------------

async def _finished_ids(queue: Queue, client: redis.asyncio.Redis, state: str) -> set[str]:
    """Ids in the finished index, checking that index and job hashes agree."""
    ids = set(await queue.job_ids(state))
    hashes = {k.decode().rsplit(":", 1)[1]
              async for k in client.scan_iter(match=queue.storage.keys.prefix + "job:*")}
    assert ids <= hashes
    return ids


@pytest.mark.parametrize("handler,state,option", [
    (ok, "completed", "keep_completed"), (boom, "failed", "keep_failed")])
async def test_retention_by_count(queue: Queue, client: redis.asyncio.Redis, handler: Any,
                                  state: str, option: str) -> None:
    jobs = [await queue.add("t", **{option: 2}) for _ in range(6)]
    await burst(queue, {"t": handler})
    kept = await _finished_ids(queue, client, state)
    assert len(kept) == 2 and kept <= {j.id for j in jobs}
    for job in jobs:
        if job.id not in kept:
            assert await queue.get_job(job.id) is None
    assert (await queue.counts())[state] == 2


@pytest.mark.parametrize("handler,state,option", [
    (ok, "completed", "keep_completed"), (boom, "failed", "keep_failed")])
async def test_retention_count_zero_deletes_at_once(queue: Queue, client: redis.asyncio.Redis,
                                                    handler: Any, state: str, option: str) -> None:
    job = await queue.add("t", **{option: 0})
    keep = await queue.add("t")
    await burst(queue, {"t": handler})
    assert await queue.get_job(job.id) is None
    assert (await queue.get_job(keep.id)).state == state
    assert await queue.job_ids(state) == [keep.id]


async def test_cancelled_jobs_follow_keep_failed(queue: Queue) -> None:
    # ids that sort in cancel order: jobs finished in the same millisecond are ordered by id
    a = await queue.add("t", job_id="a", keep_failed=0)
    b = await queue.add("t", job_id="b", keep_failed=Retention(count=1, age=None))
    c = await queue.add("t", job_id="c", keep_failed=Retention(count=1, age=None))
    for job in (a, b, c):
        await queue.cancel(job.id)
    assert await queue.job_ids("cancelled") == [c.id]
    for gone in (a, b):
        assert await queue.get_job(gone.id) is None


@pytest.mark.parametrize("handler,state,option", [
    (ok, "completed", "keep_completed"), (boom, "failed", "keep_failed")])
async def test_retention_by_age(queue: Queue, client: redis.asyncio.Redis, handler: Any,
                                state: str, option: str) -> None:
    short = Retention(count=None, age=0.05)
    old = [await queue.add("t", **{option: short}) for _ in range(3)]
    await burst(queue, {"t": handler})
    assert await _finished_ids(queue, client, state) == {j.id for j in old}
    finished = [(await queue.get_job(j.id)).finished_at for j in old]
    newest = max(f.timestamp() for f in finished if f is not None) * 1000
    # wait for the server clock (the one retention uses) to pass their age, then finish another
    await eventually(lambda: _older_than(client, newest, 60), message="jobs aged past 50 ms")
    late = await queue.add("t", **{option: short})
    await burst(queue, {"t": handler})
    assert await _finished_ids(queue, client, state) == {late.id}
    for job in old:
        assert await queue.get_job(job.id) is None


async def _older_than(client: redis.asyncio.Redis, stamp_ms: float, age_ms: int) -> bool:
    return await server_ms(client) > stamp_ms + age_ms


async def test_retention_age_keeps_young_jobs(queue: Queue, client: redis.asyncio.Redis) -> None:
    hour = Retention(count=None, age=3600)
    first = await queue.add("t", keep_completed=hour)
    await burst(queue, {"t": ok})
    second = await queue.add("t", keep_completed=hour)
    await burst(queue, {"t": ok})
    assert await _finished_ids(queue, client, "completed") == {first.id, second.id}
    got = await queue.get_job(first.id)
    assert got.finished_at is not None and got.finished_at <= datetime.now(UTC)
