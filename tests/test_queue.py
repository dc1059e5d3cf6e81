"""Producer behaviour of the asyncio Queue: add and its options, dedup by job id (also
under concurrent producers), add_bulk, get_job, counts, Job.wait and QueueEvents."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio

from shunter import (
    Backoff,
    BulkAddError,
    InvalidInput,
    Job,
    JobFailed,
    JobNotFound,
    Queue,
    QueueEvents,
    Retention,
    State,
    UnrecoverableError,
    WrongKeyType,
)
from shunter.job import JobSnapshot
from shunter.producer import build_spec
from shunter.storage import ENQUEUE_CHUNK, Enqueued, Storage
from shunter.storage.calls import enqueue_many, enqueue_replies
from shunter.storage.keys import QueueKeys

from .conftest import REDIS_URL, burst, eventually

pytestmark = pytest.mark.redis


async def server_ms(client: redis.asyncio.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def fields_of(job: JobSnapshot) -> dict[str, Any]:
    """Every public field of a job: what a reader of the job sees."""
    fields = {name: getattr(job, name) for name in JobSnapshot.__slots__
              if not name.startswith("_") and name != "existing"}
    assert len(fields) > 20  # the fields live in the base class both kinds of job share
    return fields


async def event_names(client: redis.asyncio.Redis, queue: Queue, job_id: str) -> list[str]:
    entries = await client.xrange(queue.storage.keys.events)
    return [f[b"event"].decode() for _, f in entries if f[b"job"] == job_id.encode()]


# -- add and its options ---------------------------------------------------------------------

async def test_add_defaults(queue: Queue, client: redis.asyncio.Redis) -> None:
    job = await queue.add("send", {"to": "a@example.com", "n": [1, 2.5, None, True]})
    assert not job.existing
    assert job.state is State.WAITING
    assert len(job.id) == 32 and job.task == "send"
    stored = await queue.get_job(job.id)
    assert stored.data == {"to": "a@example.com", "n": [1, 2.5, None, True]}
    assert (stored.state, stored.priority, stored.max_attempts, stored.attempts_made) == (
        State.WAITING, 0, 3, 0)
    assert stored.timeout is None and stored.backoff is None and stored.scheduled_for is None
    assert stored.created_at is not None
    assert abs(stored.created_at.timestamp() * 1000 - await server_ms(client)) < 5000
    assert await queue.job_ids("waiting") == [job.id]
    raw = await client.hgetall(queue.storage.keys.job(job.id))
    assert raw[b"keep_completed"] == b"1000:86400000"
    assert raw[b"keep_failed"] == b"10000:604800000"


async def test_two_adds_without_id_make_two_jobs(queue: Queue) -> None:
    a, b = await queue.add("t"), await queue.add("t")
    assert a.id != b.id and not a.existing and not b.existing
    assert (await queue.counts())["waiting"] == 2


async def test_add_with_every_option(queue: Queue, client: redis.asyncio.Redis) -> None:
    backoff = Backoff.schedule([1, 5, 30], jitter=0.1, spread=2)
    job = await queue.add("t", [1], job_id="order-42/v1@x=y+z", priority=7, max_attempts=9,
                          backoff=backoff, timeout=2.5, keep_completed=Retention(count=3, age=60),
                          keep_failed=5)
    assert job.id == "order-42/v1@x=y+z"
    got = await queue.get_job(job.id)
    assert (got.priority, got.max_attempts, got.timeout, got.backoff) == (7, 9, 2.5, backoff)
    raw = await client.hgetall(queue.storage.keys.job(job.id))
    assert raw[b"keep_completed"] == b"3:60000"
    assert raw[b"keep_failed"] == b"5:-1"  # a plain int is a count with no age limit
    unlimited = await queue.add("t", keep_completed=Retention(count=None, age=None))
    raw = await client.hgetall(queue.storage.keys.job(unlimited.id))
    assert raw[b"keep_completed"] == b"-1:-1"


@pytest.mark.parametrize("options", [
    {},
    {"delay": 60, "priority": -3, "max_attempts": 9, "timeout": 2.5,
     "backoff": Backoff.schedule([1, 5], jitter=0.1, spread=2), "keep_completed": 4},
    {"run_at": "in 5 minutes", "priority": 1000, "max_attempts": 1000},
    {"run_at": "a minute ago", "backoff": Backoff.fixed(3)},
], ids=["defaults", "delay", "run_at", "run_at-past"])
async def test_add_returns_the_job_as_stored(queue: Queue, options: dict[str, Any]) -> None:
    when = {"in 5 minutes": timedelta(minutes=5), "a minute ago": timedelta(minutes=-1)}
    if "run_at" in options:
        options["run_at"] = datetime.now(UTC) + when[options["run_at"]]
    job = await queue.add("t", {"n": [1, 2.5], "s": "x"}, **options)
    assert not job.existing and job.created_at is not None
    assert fields_of(job) == fields_of(await queue.get_job(job.id))
    assert job.data == {"n": [1, 2.5], "s": "x"}


async def test_add_bulk_returns_the_jobs_as_stored(queue: Queue) -> None:
    await queue.add("old", {"v": "original"}, job_id="x", priority=5, max_attempts=2)
    entries: list[dict[str, Any]] = [
        {"task": "a", "data": [1]},
        {"task": "b", "job_id": "x", "data": "ignored", "priority": -1},
        {"task": "c", "delay": 30, "max_attempts": 4, "timeout": 1, "backoff": Backoff.fixed(2)},
        *({"task": "d", "data": i} for i in range(ENQUEUE_CHUNK)),  # two script calls
    ]
    jobs = await queue.add_bulk(entries)
    assert [j.existing for j in jobs[:3]] == [False, True, False]
    for job in jobs:
        assert fields_of(job) == fields_of(await queue.get_job(job.id))
    assert (jobs[1].task, jobs[1].data, jobs[1].priority) == ("old", {"v": "original"}, 5)


# -- foreign data under a key the queue writes ------------------------------------------------

async def test_add_refuses_a_foreign_job_key_and_writes_nothing(queue: Queue,
                                                                client: redis.asyncio.Redis) -> None:
    keys = queue.storage.keys
    await client.set(keys.job("taken"), "not a job")
    with pytest.raises(WrongKeyType, match="'taken' was not added") as info:
        await queue.add("t", job_id="taken")
    err = info.value
    assert (err.job_id, err.key, err.found, err.expected) == ("taken", keys.job("taken"), "string",
                                                              "hash")
    assert await client.get(keys.job("taken")) == b"not a job"
    assert [k async for k in client.scan_iter(match=keys.prefix + "*")] == [keys.job("taken").encode()]
    assert (await queue.add("t", job_id="free")).state is State.WAITING  # the queue still works


async def test_add_bulk_stores_the_rest_and_names_the_foreign_ones(
        queue: Queue, client: redis.asyncio.Redis) -> None:
    keys = queue.storage.keys
    # one foreign key in the first script call, one in the third, and a repeated one
    n = 2 * ENQUEUE_CHUNK + 50
    foreign = {"j3": "string", f"j{ENQUEUE_CHUNK * 2 + 7}": "list"}
    await client.set(keys.job("j3"), "x")
    await client.rpush(keys.job(f"j{ENQUEUE_CHUNK * 2 + 7}"), "y")
    await queue.add("t", {"first": 1}, job_id="j5")
    entries = [{"task": "t", "data": i, "job_id": f"j{i}"} for i in range(n)] + [
        {"task": "t", "job_id": "j3"}]
    with pytest.raises(BulkAddError) as info:
        await queue.add_bulk(entries)
    err = info.value
    assert set(err.errors) == set(foreign)
    assert {job_id: e.found for job_id, e in err.errors.items()
            if isinstance(e, WrongKeyType)} == foreign
    assert f"3 of {n + 1} jobs not added, the other {n - 2} were stored" in str(err)
    assert "'j3'" in str(err) and "holds a string" in str(err)
    assert [j is None for j in err.jobs] == [f"j{i}" in foreign for i in range(n)] + [True]
    stored = [j for j in err.jobs if j is not None]
    assert len(stored) == n - 2
    (j5,) = [j for j in stored if j.id == "j5"]
    assert j5.existing and j5.data == {"first": 1}
    for job in stored[:3]:
        assert fields_of(job) == fields_of(await queue.get_job(job.id))
    assert (await queue.counts())["waiting"] == n - 2
    assert await client.get(keys.job("j3")) == b"x"  # foreign data is left alone
    assert await client.type(keys.job(f"j{ENQUEUE_CHUNK * 2 + 7}")) == b"list"
    # every stored job has its index entry and its event; the refused ones have neither
    assert set(await queue.job_ids("waiting")) == {f"j{i}" for i in range(n)} - set(foreign)
    stream: Any = await client.xrange(keys.events)
    enqueued = {f[b"job"].decode() for _, f in stream}
    assert enqueued == {f"j{i}" for i in range(n)} - set(foreign)
    # a second call is safe: what was stored comes back as existing
    with pytest.raises(BulkAddError) as again:
        await queue.add_bulk(entries)
    assert all(j.existing for j in again.value.jobs if j is not None)


def test_a_chunk_refused_whole_fails_only_its_jobs() -> None:
    # e.g. out of memory between two script calls of one add_bulk: the first call's jobs
    # are stored, so they are returned; the refused ones carry the server's error
    specs = [build_spec("t", job_id=f"j{i}", max_payload_bytes=1024) for i in range(ENQUEUE_CHUNK + 1)]
    oom = redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    keys = QueueKeys("q")
    calls = enqueue_many(keys, specs, 1000)
    results = enqueue_replies(calls, [[1, *[[1, b"waiting"]] * ENQUEUE_CHUNK], oom])
    assert all(isinstance(r, Enqueued) for r in results[:ENQUEUE_CHUNK]) and results[-1] is oom
    with pytest.raises(redis.exceptions.ResponseError):  # nothing stored: the error as it is
        enqueue_replies(calls, [oom, oom])


async def test_a_foreign_queue_key_refuses_the_whole_call(queue: Queue,
                                                          client: redis.asyncio.Redis) -> None:
    keys = queue.storage.keys
    await client.set(keys.waiting, "x")
    with pytest.raises(WrongKeyType, match="holds a string, not a zset") as info:
        await queue.add("t", job_id="a", delay=30)  # would not even touch `waiting`
    assert info.value.key == keys.waiting and info.value.job_id is None
    with pytest.raises(WrongKeyType):
        await queue.add_bulk([{"task": "t"} for _ in range(ENQUEUE_CHUNK + 1)])
    assert [k async for k in client.scan_iter(match=keys.prefix + "*")] == [keys.waiting.encode()]
    await client.delete(keys.waiting)


async def test_delay_schedules_the_job(queue: Queue, client: redis.asyncio.Redis) -> None:
    before = await server_ms(client)
    job = await queue.add("t", delay=30)
    assert job.state is State.SCHEDULED
    got = await queue.get_job(job.id)
    assert got.state is State.SCHEDULED and got.scheduled_for is not None
    due = got.scheduled_for.timestamp() * 1000
    assert before + 30_000 <= due <= await server_ms(client) + 30_000
    assert await queue.job_ids("scheduled") == [job.id]
    assert await queue.job_ids("waiting") == []
    counts = await queue.counts()
    assert (counts["scheduled"], counts["waiting"]) == (1, 0)


async def test_zero_delay_is_waiting(queue: Queue) -> None:
    assert (await queue.add("t", delay=0)).state is State.WAITING


async def test_run_at(queue: Queue) -> None:
    when = datetime.now(UTC) + timedelta(hours=2)
    job = await queue.add("t", run_at=when)
    assert job.state is State.SCHEDULED
    got = await queue.get_job(job.id)
    assert got.scheduled_for is not None
    assert abs((got.scheduled_for - when).total_seconds()) < 0.002
    # another time zone means the same instant
    tz = datetime.now(UTC).astimezone(timezone(timedelta(hours=-7)))
    other = await queue.add("t", run_at=tz + timedelta(hours=2))
    assert (await queue.get_job(other.id)).state is State.SCHEDULED
    # a time already past runs now
    past = await queue.add("t", run_at=datetime.now(UTC) - timedelta(days=3))
    assert past.state is State.WAITING
    assert await queue.job_ids("waiting") == [past.id]


async def test_delayed_job_runs_after_its_time(queue: Queue) -> None:
    async def handler(job: Job) -> str:
        return "ran"

    job = await queue.add("t", delay=0.2)
    assert job.state is State.SCHEDULED
    await burst(queue, {"t": handler})
    got = await queue.get_job(job.id)
    assert got.state is State.COMPLETED and got.result == "ran"
    assert got.started_at is not None and got.created_at is not None
    assert (got.started_at - got.created_at).total_seconds() >= 0.19


async def test_priority_higher_first_fifo_within(queue: Queue) -> None:
    plan = [("a", 0), ("b", 5), ("c", -3), ("d", 5), ("e", 0), ("f", 1000), ("g", -1000),
            ("h", 5), ("i", -3)]
    for job_id, priority in plan:
        await queue.add("t", job_id=job_id, priority=priority)
    assert await queue.job_ids("waiting") == ["f", "b", "d", "h", "a", "e", "c", "i", "g"]
    assert await queue.job_ids("waiting", 0, 1) == ["f", "b"]


async def test_worker_claims_in_priority_order(queue: Queue) -> None:
    order: list[str] = []

    async def handler(job: Job) -> None:
        order.append(job.id)

    for job_id, priority in [("low", -1), ("mid1", 0), ("high", 9), ("mid2", 0)]:
        await queue.add("t", job_id=job_id, priority=priority)
    await burst(queue, {"t": handler}, concurrency=1)
    assert order == ["high", "mid1", "mid2", "low"]


# -- one job per id ---------------------------------------------------------------------------

async def _to_state(queue: Queue, state: State) -> Job:
    """A job with id 'dup' in ``state``, moved there through the storage transitions."""
    s: Storage = queue.storage
    job = await queue.add("t", {"v": "original"}, job_id="dup",
                          delay=60 if state is State.SCHEDULED else None, max_attempts=1)
    if state in (State.ACTIVE, State.COMPLETED, State.FAILED):
        claim = await s.claim(1, 60_000, "tester")
        token = int(claim.jobs[0][b"token"])
        if state is State.COMPLETED:
            await s.complete("dup", token, b'"done"')
        elif state is State.FAILED:
            await s.fail("dup", token, b'{"type":"X","message":"m","traceback":""}')
    elif state is State.CANCELLED:
        await queue.cancel("dup")
    got = await queue.get_job(job.id)
    assert got.state is state
    return got


@pytest.mark.parametrize("state", list(State))
async def test_add_existing_id_returns_existing(queue: Queue, client: redis.asyncio.Redis,
                                                state: State) -> None:
    await _to_state(queue, state)
    keys = queue.storage.keys
    before_hash = await client.hgetall(keys.job("dup"))
    before_counts = await queue.counts()
    before_events = await client.xlen(keys.events)
    again = await queue.add("t", {"v": "second"}, job_id="dup", priority=9, delay=5)
    assert again.existing is True
    assert again.id == "dup" and again.state is state
    assert await client.hgetall(keys.job("dup")) == before_hash
    assert await queue.counts() == before_counts
    assert await client.xlen(keys.events) == before_events
    # the existing job as stored, not the one asked for
    assert (again.task, again.data, again.max_attempts) == ("t", {"v": "original"}, 1)
    assert fields_of(again) == fields_of(await queue.get_job("dup"))


async def test_add_same_id_in_other_queue_is_independent(queue: Queue, queue_name: str) -> None:
    await queue.add("t", job_id="same")
    async with Queue(queue_name + "-b", REDIS_URL) as other:
        try:
            job = await other.add("t", job_id="same")
            assert not job.existing
        finally:
            await other.obliterate(force=True)


async def test_100_concurrent_producers_one_job(queue: Queue, client: redis.asyncio.Redis) -> None:
    producers = [Queue(queue.name, REDIS_URL) for _ in range(5)]
    try:
        jobs = await asyncio.gather(*(
            producers[i % 5].add("t", {"producer": i}, job_id="shared") for i in range(100)))
    finally:
        for p in producers:
            await p.close()
    created = [j for j in jobs if not j.existing]
    assert len(created) == 1
    assert sum(j.existing for j in jobs) == 99
    assert {j.id for j in jobs} == {"shared"}
    keys = queue.storage.keys
    assert await client.zrange(keys.waiting, 0, -1) == [b"shared"]
    assert (await queue.counts())["waiting"] == 1
    stored = await queue.get_job("shared")
    assert stored.data == created[0].data  # the winner's payload, nobody else's
    assert [k async for k in client.scan_iter(match=keys.prefix + "job:*")] == [
        keys.job("shared").encode()]
    assert await event_names(client, queue, "shared") == ["enqueue"]


# -- add_bulk ---------------------------------------------------------------------------------

async def test_add_bulk_in_order_with_options(queue: Queue) -> None:
    jobs = await queue.add_bulk([
        {"task": "a", "data": 1},
        {"task": "b", "data": {"x": 2}, "job_id": "bulk-b", "priority": 3},
        {"task": "c", "delay": 60, "max_attempts": 7, "backoff": Backoff.fixed(2), "timeout": 9},
        {"task": "d"},
    ])
    assert [j.state for j in jobs] == [State.WAITING, State.WAITING, State.SCHEDULED, State.WAITING]
    assert jobs[1].id == "bulk-b" and not any(j.existing for j in jobs)
    assert await queue.job_ids("waiting") == ["bulk-b", jobs[0].id, jobs[3].id]
    c = await queue.get_job(jobs[2].id)
    assert (c.task, c.data, c.max_attempts, c.backoff, c.timeout) == ("c", None, 7, Backoff.fixed(2), 9)
    assert (await queue.get_job(jobs[0].id)).data == 1


async def test_add_bulk_dedups_within_and_across(queue: Queue) -> None:
    await queue.add("t", {"first": True}, job_id="x1")
    jobs = await queue.add_bulk([
        {"task": "t", "job_id": "x1", "data": 1},
        {"task": "t", "job_id": "x2", "data": 2},
        {"task": "t", "job_id": "x2", "data": 3},
        {"task": "t", "job_id": "x3", "data": 4},
    ])
    assert [j.existing for j in jobs] == [True, False, True, False]
    assert [j.id for j in jobs] == ["x1", "x2", "x2", "x3"]
    again = await queue.add_bulk([{"task": "t", "job_id": i} for i in ("x3", "x2", "x4")])
    assert [j.existing for j in again] == [True, True, False]
    assert sorted(await queue.job_ids("waiting")) == ["x1", "x2", "x3", "x4"]
    assert (await queue.get_job("x1")).data == {"first": True}
    assert (await queue.get_job("x2")).data == 2


async def test_add_bulk_empty_and_generator(queue: Queue) -> None:
    assert await queue.add_bulk([]) == []
    jobs = await queue.add_bulk({"task": "t", "data": i} for i in range(250))
    assert len(jobs) == 250
    assert (await queue.counts())["waiting"] == 250
    ids = await queue.job_ids("waiting")
    assert ids == [j.id for j in jobs]  # FIFO in batch order


@pytest.mark.parametrize("bad", [
    {"task": "t", "data": float("nan")},
    {"task": "t", "job_id": "has space"},
    {"task": "t", "priority": 5000},
    {"task": "t", "colour": "red"},
    {"data": 1},
    {"task": "bad name"},
    "not a dict",
])
async def test_add_bulk_one_bad_entry_writes_nothing(queue: Queue, client: redis.asyncio.Redis,
                                                     bad: Any) -> None:
    entries = [{"task": "t", "job_id": "ok1"}, bad, {"task": "t", "job_id": "ok2"}]
    with pytest.raises(InvalidInput):
        await queue.add_bulk(entries)
    assert [k async for k in client.scan_iter(match=queue.storage.keys.prefix + "*")] == []


async def test_add_bulk_unknown_option_is_named(queue: Queue) -> None:
    with pytest.raises(InvalidInput, match="colour"):
        await queue.add_bulk([{"task": "t", "colour": "red"}])


async def test_add_bulk_limit(queue: Queue, client: redis.asyncio.Redis) -> None:
    with pytest.raises(InvalidInput, match="10000"):
        await queue.add_bulk([{"task": "t"}] * 10_001)
    assert [k async for k in client.scan_iter(match=queue.storage.keys.prefix + "*")] == []
    jobs = await queue.add_bulk([{"task": "t"}] * 10_000)
    assert len(jobs) == 10_000 and (await queue.counts())["waiting"] == 10_000


# -- reads ------------------------------------------------------------------------------------

async def test_get_job_and_not_found(queue: Queue) -> None:
    job = await queue.add("t", {"k": "v"}, priority=-4, max_attempts=2, timeout=1.5)
    got = await queue.get_job(job.id)
    assert got is not None
    assert (got.id, got.queue, got.task, got.data) == (job.id, queue.name, "t", {"k": "v"})
    assert (got.priority, got.max_attempts, got.timeout, got.attempt) == (-4, 2, 1.5, 1)
    assert got.result is None and got.error is None and not got.finished
    assert await queue.get_job("missing") is None


async def test_a_deleted_job_raises_not_found_on_refresh_and_wait(queue: Queue) -> None:
    """get_job answers None for a missing id; a job object whose job is gone raises."""
    job = await queue.add("t", keep_failed=0)
    assert await queue.cancel(job.id) is True  # keep_failed=0: deleted as it is cancelled
    assert await queue.get_job(job.id) is None
    for call in (job.refresh(), job.wait(timeout=1)):
        with pytest.raises(JobNotFound) as info:
            await call
        assert isinstance(info.value, KeyError)
        assert job.id in str(info.value) and queue.name in str(info.value)


async def test_counts(queue: Queue) -> None:
    empty = await queue.counts()
    assert empty == {"waiting": 0, "scheduled": 0, "active": 0, "completed": 0, "failed": 0,
                     "cancelled": 0, "paused": 0}
    await queue.add("t")
    await queue.add("t")
    await queue.add("t", delay=100)
    c = await queue.add("t")
    await queue.cancel(c.id)
    await queue.storage.claim(1, 60_000, "tester")
    await queue.pause()
    assert await queue.counts() == {"waiting": 1, "scheduled": 1, "active": 1, "completed": 0,
                                    "failed": 0, "cancelled": 1, "paused": 1}


# -- waiting for a result ---------------------------------------------------------------------

async def test_wait_returns_result(queue: Queue, start_worker: Any) -> None:
    async def handler(job: Job) -> dict[str, Any]:
        return {"echo": job.data}

    job = await queue.add("t", [1, "two"])
    start_worker({"t": handler})
    assert await job.wait(timeout=10) == {"echo": [1, "two"]}
    assert job.state is State.COMPLETED and job.finished


async def test_wait_raises_job_failed(queue: Queue) -> None:
    async def handler(job: Job) -> None:
        raise UnrecoverableError("card declined")

    job = await queue.add("t", max_attempts=5)
    waiter = asyncio.ensure_future(job.wait(timeout=10))
    await burst(queue, {"t": handler})
    with pytest.raises(JobFailed, match="card declined") as info:
        await waiter
    assert info.value.job.state is State.FAILED
    assert info.value.job.error is not None and info.value.job.error.type == "UnrecoverableError"


async def test_wait_raises_job_failed_when_cancelled(queue: Queue) -> None:
    job = await queue.add("t")
    waiter = asyncio.ensure_future(job.wait(timeout=10))
    await asyncio.sleep(0)
    await queue.cancel(job.id, by="alice", reason="not needed")
    with pytest.raises(JobFailed, match="cancelled by alice: not needed"):
        await waiter


async def test_wait_timeout(queue: Queue) -> None:
    job = await queue.add("t")
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await job.wait(timeout=0.3)
    assert 0.25 <= asyncio.get_running_loop().time() - started < 3
    assert (await queue.get_job(job.id)).state is State.WAITING


async def test_wait_on_finished_job_returns_at_once(queue: Queue) -> None:
    async def handler(job: Job) -> int:
        return 7

    job = await queue.add("t")
    await burst(queue, {"t": handler})
    assert await asyncio.wait_for(job.wait(timeout=0), 2) == 7


# -- events -----------------------------------------------------------------------------------

async def test_queue_events_in_order(queue: Queue) -> None:
    async def handler(job: Job) -> str:
        return "ok"

    job = await queue.add("t")
    await burst(queue, {"t": handler})
    seen = []
    async with QueueEvents(queue.name, REDIS_URL, since="0") as events:
        async for event in events:
            seen.append(event)
            if event.name == "complete":
                break
    assert [(e.name, e.job_id, e.state) for e in seen] == [
        ("enqueue", job.id, "waiting"), ("claim", job.id, "active"), ("complete", job.id, "completed")]
    assert seen[1].fields["token"] == "1"
    ids = [tuple(int(p) for p in e.id.split("-")) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(abs((e.timestamp - datetime.now(UTC)).total_seconds()) < 60 for e in seen)


async def test_queue_events_default_starts_when_the_async_with_is_entered(queue: Queue) -> None:
    await queue.add("t", job_id="before")
    async with QueueEvents(queue.name, REDIS_URL) as events:
        # appended after entering, before the first read: not missed
        await queue.add("t", job_id="after")
        first = await asyncio.wait_for(anext(aiter(events)), 10)
    assert (first.name, first.job_id) == ("enqueue", "after")


async def test_queue_events_default_follows_only_new(queue: Queue) -> None:
    await queue.add("t", job_id="before")
    events = QueueEvents(queue.name, REDIS_URL)
    received: list[tuple[str, str]] = []

    async def follow() -> None:
        async for event in events:
            received.append((event.name, event.job_id))
            if len(received) == 2:
                break

    follower = asyncio.ensure_future(follow())
    try:
        await eventually(lambda: events.cursor != "$")
        await queue.add("t", job_id="after")
        await queue.cancel("after", by="me")
        await asyncio.wait_for(asyncio.shield(follower), 10)
        assert received == [("enqueue", "after"), ("cancel", "after")]
    finally:
        # Closing the pool also ends a read still blocked on the server: with redis-py
        # 8.1, cancelling a task blocked in XREAD BLOCK 0 sometimes never completes.
        await events.close()
        follower.cancel()
        with contextlib.suppress(BaseException):
            await follower
