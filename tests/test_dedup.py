"""Dedup modes (issue 11, item 6): ``add(..., dedup=Dedup.unique|ttl|throttle|debounce(key))``.

One key per logical job, held by the job that took it. The behaviour tests drive holders
through every way out of the live states with the storage methods (and a real worker
where the point is the worker's own path); the keyspace tests call the enqueue script and
the ``dedup_release`` helper directly. docs/dedup.md has the table these tests hold.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio

from shunter import Backoff, Dedup, InvalidInput, Job, Queue, State, Tasks
from shunter import sync as shunter_sync
from shunter.storage import Storage
from shunter.storage.scripts import SCRIPTS, build_source, library

from .conftest import REDIS_URL, burst, eventually

pytestmark = pytest.mark.redis

LEASE = 60_000


async def server_ms(client: redis.asyncio.Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def claim(storage: Storage, lease_ms: int = LEASE) -> tuple[str, int]:
    jobs = (await storage.claim(1, lease_ms, "w-1")).jobs
    assert len(jobs) == 1
    return jobs[0][b"id"].decode(), int(jobs[0][b"token"])


async def holder_of(client: redis.asyncio.Redis, storage: Storage, key: str) -> str | None:
    value = await client.get(storage.keys.dedup(key))
    return None if value is None else value.decode()


async def events(client: redis.asyncio.Redis, storage: Storage, name: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _, f in await client.xrange(storage.keys.events) if f[b"event"] == name.encode()]


# -- unique ------------------------------------------------------------------------------------

async def test_unique_returns_the_live_holder_and_changes_nothing(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    first = await queue.add("plan", {"v": 1}, dedup=Dedup.unique("plan:user:42"))
    assert (first.existing, first.deduplicated, first.debounced) == (False, False, False)
    again = await queue.add("plan", {"v": 2}, dedup=Dedup.unique("plan:user:42"), delay=60)
    assert (again.id, again.existing, again.deduplicated, again.debounced) == (
        first.id, True, True, False)
    assert (again.data, again.state) == ({"v": 1}, State.WAITING)  # the holder, as stored
    assert (await queue.counts())["waiting"] == 1
    assert await holder_of(client, storage, "plan:user:42") == first.id
    hit = await events(client, storage, "dedup")
    assert [(e["job"], e["state"], e["mode"], e["key"]) for e in hit] == [
        (first.id, "waiting", "unique", "plan:user:42")]
    other = await queue.add("plan", {"v": 3}, dedup=Dedup.unique("plan:user:43"))
    assert other.id != first.id and not other.deduplicated


@pytest.mark.parametrize("mode", ["unique", "ttl"])
async def test_a_holder_holds_while_scheduled_active_between_retries_and_after_rescue(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis, mode: str) -> None:
    def dedup() -> Dedup:
        return Dedup.unique("k") if mode == "unique" else Dedup.ttl("k", 3600)

    holder = await queue.add("t", 1, dedup=dedup(), delay=0.05)
    assert holder.state is State.SCHEDULED
    assert (await queue.add("t", 2, dedup=dedup())).id == holder.id
    await eventually(lambda: storage.promote(), message="promoted")
    job_id, token = await claim(storage, lease_ms=200)
    assert job_id == holder.id
    assert (await queue.add("t", 3, dedup=dedup())).state is State.ACTIVE
    # lease expiry: rescued back to waiting, still live, still the holder
    await eventually(lambda: storage.rescue(5, lock_ms=0), message="rescued")
    rescued = await queue.add("t", 4, dedup=dedup())
    assert (rescued.id, rescued.state, rescued.deduplicated) == (holder.id, State.WAITING, True)
    # a retry waits scheduled: still the holder
    _, token = await claim(storage)
    await storage.retry(holder.id, token, 60_000, b'{"type": "Boom"}')
    between = await queue.add("t", 5, dedup=dedup())
    assert (between.id, between.state) == (holder.id, State.SCHEDULED)
    assert (await queue.counts())["scheduled"] == 1


async def test_completion_final_failure_and_cancel_release_the_key(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    key = Dedup.unique("k")
    done = await queue.add("t", 1, dedup=key)
    _, token = await claim(storage)
    await storage.complete(done.id, token, b'"ok"')
    assert await holder_of(client, storage, "k") is None  # released eagerly
    failed = await queue.add("t", 2, dedup=key)
    assert failed.id != done.id and not failed.deduplicated
    _, token = await claim(storage)
    await storage.fail(failed.id, token, b'{"type": "Boom"}')
    assert await holder_of(client, storage, "k") is None
    cancelled = await queue.add("t", 3, dedup=key)
    assert cancelled.id not in (done.id, failed.id) and not cancelled.deduplicated
    assert await queue.cancel(cancelled.id) is True
    assert await holder_of(client, storage, "k") is None
    fresh = await queue.add("t", 4, dedup=key)
    assert not fresh.deduplicated and fresh.state is State.WAITING


async def test_a_worker_releases_on_success_and_on_final_failure_not_on_a_retry(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    runs: list[int] = []

    async def flaky(job: Job) -> None:
        runs.append(job.attempt)
        if job.attempt == 1:
            # the attempt before the retry: the key is still held by this job
            assert await holder_of(client, storage, "flaky") == job.id
            raise RuntimeError("first attempt fails")

    async def broken(job: Job) -> None:
        raise RuntimeError("always")

    ok = await queue.add("flaky", dedup=Dedup.unique("flaky"), backoff=Backoff.fixed(0))
    dead = await queue.add("broken", dedup=Dedup.unique("broken"), max_attempts=1)
    await burst(queue, {"flaky": flaky, "broken": broken})
    assert runs == [1, 2]
    assert (await ok.refresh()).state is State.COMPLETED
    assert (await dead.refresh()).state is State.FAILED
    assert await holder_of(client, storage, "flaky") is None
    assert await holder_of(client, storage, "broken") is None
    assert not (await queue.add("flaky", dedup=Dedup.unique("flaky"))).deduplicated
    assert not (await queue.add("broken", dedup=Dedup.unique("broken"))).deduplicated


async def test_a_removed_holder_frees_the_key(queue: Queue, storage: Storage,
                                              client: redis.asyncio.Redis) -> None:
    # drain deletes waiting and scheduled jobs, and their keys with them
    drained = await queue.add("t", 1, dedup=Dedup.unique("a"))
    await queue.add("t", 1, dedup=Dedup.debounce("b"), delay=60)
    assert await queue.drain() == 2
    assert await holder_of(client, storage, "a") is None
    assert await holder_of(client, storage, "b") is None
    after = await queue.add("t", 2, dedup=Dedup.unique("a"))
    assert after.id != drained.id and not after.deduplicated
    # a job hash deleted by hand: the key still names it, and the add-time check frees it
    await client.delete(storage.keys.job(after.id))
    assert await holder_of(client, storage, "a") == after.id
    third = await queue.add("t", 3, dedup=Dedup.unique("a"))
    assert third.id != after.id and not third.deduplicated
    assert await holder_of(client, storage, "a") == third.id
    # a finished holder whose key was left behind (a hand edit) frees it too
    claimed = (await storage.claim(5, LEASE, "w-1")).jobs  # drops the id with no hash
    assert [j[b"id"].decode() for j in claimed] == [third.id]
    token = int(claimed[0][b"token"])
    await storage.complete(third.id, token, b"1")
    await client.set(storage.keys.dedup("a"), third.id)
    assert not (await queue.add("t", 4, dedup=Dedup.unique("a"))).deduplicated
    # an id reused by a job without the key is not the holder
    await client.set(storage.keys.dedup("c"), third.id)
    assert not (await queue.add("t", 5, dedup=Dedup.unique("c"))).deduplicated


async def test_obliterate_deletes_the_keys_of_its_jobs(queue: Queue, storage: Storage,
                                                       client: redis.asyncio.Redis) -> None:
    await queue.add("t", 1, dedup=Dedup.unique("u"))
    await queue.add("t", 1, dedup=Dedup.throttle("th", 3600))
    await queue.obliterate()
    assert await client.keys(storage.keys.prefix.replace("{", "[{]").replace("}", "[}]") + "*") == []


# -- ttl and throttle --------------------------------------------------------------------------

async def test_ttl_lapses_while_the_holder_still_waits(queue: Queue, storage: Storage,
                                                       client: redis.asyncio.Redis) -> None:
    holder = await queue.add("t", 1, dedup=Dedup.ttl("k", 0.2))
    assert 0 < await client.pttl(storage.keys.dedup("k")) <= 200
    assert (await queue.add("t", 2, dedup=Dedup.ttl("k", 0.2))).id == holder.id

    async def lapsed() -> bool:
        return not await client.exists(storage.keys.dedup("k"))

    await eventually(lapsed, message="the ttl key lapsed")
    second = await queue.add("t", 3, dedup=Dedup.ttl("k", 0.2))
    assert second.id != holder.id and not second.deduplicated
    assert (await queue.counts())["waiting"] == 2
    # the first holder finishing later does not free the key the second one holds
    _, token = await claim(storage)
    await storage.complete(holder.id, token, b"1")
    assert await holder_of(client, storage, "k") == second.id


async def test_throttle_is_not_released_by_completion_or_deletion(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    first = await queue.add("ping", 1, dedup=Dedup.throttle("k", 3600))
    await burst(queue, {"ping": lambda job: None})
    assert (await first.refresh()).state is State.COMPLETED
    again = await queue.add("ping", 2, dedup=Dedup.throttle("k", 3600))
    assert (again.id, again.deduplicated, again.state) == (first.id, True, State.COMPLETED)
    await queue.clean(State.COMPLETED)  # the holder is deleted: the period still holds
    gone = await queue.add("ping", 3, dedup=Dedup.throttle("k", 3600))
    assert (gone.id, gone.deduplicated, gone.state, gone.data) == (first.id, True, None, None)
    assert [e["state"] for e in await events(client, storage, "dedup")] == ["completed", ""]
    counts = await queue.counts()
    assert (counts["waiting"], counts["completed"]) == (0, 0)


async def test_throttle_lapses_after_its_period(queue: Queue, storage: Storage,
                                                client: redis.asyncio.Redis) -> None:
    first = await queue.add("t", 1, dedup=Dedup.throttle("k", 0.2))

    async def lapsed() -> bool:
        return not await client.exists(storage.keys.dedup("k"))

    await eventually(lapsed, message="the throttle period ended")
    second = await queue.add("t", 2, dedup=Dedup.throttle("k", 0.2))
    assert second.id != first.id and not second.deduplicated  # the first still waits


# -- debounce ----------------------------------------------------------------------------------

@pytest.mark.parametrize("first_delay", [None, 30.0], ids=["holder-waiting", "holder-scheduled"])
async def test_debounce_keeps_one_job_with_the_last_payload(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis,
        first_delay: float | None) -> None:
    first = await queue.add("t", {"n": 0}, dedup=Dedup.debounce("k"), delay=first_delay)
    assert first.state is (State.WAITING if first_delay is None else State.SCHEDULED)
    for n in range(1, 9):
        await queue.add("t", {"n": n}, dedup=Dedup.debounce("k"), delay=5)
    before = await server_ms(client)
    last = await queue.add("t", {"n": 9}, dedup=Dedup.debounce("k"), delay=2)
    after = await server_ms(client)
    assert (last.id, last.deduplicated, last.debounced) == (first.id, True, True)
    assert (last.state, last.data) == (State.SCHEDULED, {"n": 9})
    assert last.scheduled_for is not None
    due = last.scheduled_for.timestamp() * 1000
    assert before + 2000 <= due <= after + 2000
    counts = await queue.counts()
    assert (counts["waiting"], counts["scheduled"]) == (0, 1)
    assert await client.zscore(storage.keys.scheduled, first.id) == due
    stored = await queue.get_job(first.id)
    assert stored is not None and (stored.data, stored.state) == ({"n": 9}, State.SCHEDULED)
    debounced = await events(client, storage, "debounce")
    assert len(debounced) == 9 and {e["key"] for e in debounced} == {"k"}
    assert debounced[-1]["state"] == "scheduled"


async def test_debounce_without_a_delay_runs_now(queue: Queue, storage: Storage,
                                                 client: redis.asyncio.Redis) -> None:
    ahead = await queue.add("t", "ahead")
    scheduled = await queue.add("t", 1, dedup=Dedup.debounce("k"), delay=60)
    behind = await queue.add("t", "behind")
    now = await queue.add("t", 2, dedup=Dedup.debounce("k"))  # scheduled -> waiting, now
    assert (now.id, now.state, now.data, now.scheduled_for) == (scheduled.id, State.WAITING, 2, None)
    assert await queue.job_ids(State.WAITING) == [ahead.id, behind.id, scheduled.id]
    again = await queue.add("t", 3, dedup=Dedup.debounce("k"))  # waiting stays in its place
    assert (again.id, again.state, again.data) == (scheduled.id, State.WAITING, 3)
    assert await queue.job_ids(State.WAITING) == [ahead.id, behind.id, scheduled.id]
    assert (await queue.counts())["scheduled"] == 0


async def test_debounce_with_an_active_holder_creates_a_job_that_takes_the_key(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    running = await queue.add("t", 1, dedup=Dedup.debounce("k"))
    _, token = await claim(storage)
    follow = await queue.add("t", 2, dedup=Dedup.debounce("k"))
    assert follow.id != running.id and not follow.deduplicated
    assert await holder_of(client, storage, "k") == follow.id
    await storage.complete(running.id, token, b"1")  # does not free the key it lost
    assert await holder_of(client, storage, "k") == follow.id
    merged = await queue.add("t", 3, dedup=Dedup.debounce("k"))
    assert (merged.id, merged.data, merged.debounced) == (follow.id, 3, True)


async def test_debounce_replaces_only_data_and_run_time(queue: Queue) -> None:
    first = await queue.add("t", 1, dedup=Dedup.debounce("k"), priority=5, max_attempts=7)
    later = await queue.add("t", 2, dedup=Dedup.debounce("k"), priority=-5, max_attempts=1,
                            run_at=datetime.now(UTC) + timedelta(seconds=30))
    assert (later.id, later.priority, later.max_attempts, later.data) == (first.id, 5, 7, 2)
    assert later.state is State.SCHEDULED


# -- many adds at once ---------------------------------------------------------------------

MODES = {"unique": Dedup.unique("k"), "ttl": Dedup.ttl("k", 3600),
         "throttle": Dedup.throttle("k", 3600), "debounce": Dedup.debounce("k")}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_a_hundred_concurrent_adds_make_one_job(queue: Queue, mode: str) -> None:
    jobs = await asyncio.gather(*(queue.add("t", n, dedup=MODES[mode]) for n in range(100)))
    assert len({job.id for job in jobs}) == 1
    assert sum(not job.deduplicated for job in jobs) == 1
    counts = await queue.counts()
    assert counts["waiting"] + counts["scheduled"] == 1


async def test_add_bulk_first_entry_wins(queue: Queue, storage: Storage,
                                         client: redis.asyncio.Redis) -> None:
    jobs = await queue.add_bulk([
        {"task": "t", "data": 1, "dedup": Dedup.unique("a")},
        {"task": "t", "data": 2},
        {"task": "t", "data": 3, "dedup": Dedup.unique("a")},
        {"task": "t", "data": 4, "dedup": Dedup.debounce("b")},
        {"task": "t", "data": 5, "dedup": Dedup.debounce("b"), "delay": 30},
    ])
    assert jobs[2].id == jobs[0].id and (jobs[2].deduplicated, jobs[2].data) == (True, 1)
    assert jobs[4].id == jobs[3].id and (jobs[4].debounced, jobs[4].data) == (True, 5)
    assert jobs[4].state is State.SCHEDULED
    counts = await queue.counts()
    assert (counts["waiting"], counts["scheduled"]) == (2, 1)


# -- with job ids, tasks and the sync producer ------------------------------------------------

async def test_job_id_is_checked_before_the_key(queue: Queue) -> None:
    first = await queue.add("t", 1, job_id="one", dedup=Dedup.unique("k"))
    same_id = await queue.add("t", 2, job_id="one", dedup=Dedup.unique("other"))
    assert (same_id.id, same_id.existing, same_id.deduplicated) == ("one", True, False)
    held = await queue.add("t", 3, job_id="two", dedup=Dedup.unique("k"))
    assert (held.id, held.existing, held.deduplicated) == (first.id, True, True)
    assert await queue.get_job("two") is None
    assert not (await queue.add("t", 4, job_id="three", dedup=Dedup.unique("other"))).deduplicated


async def test_task_add_takes_dedup(queue_name: str) -> None:
    tasks = Tasks(queue=queue_name, redis=REDIS_URL)

    @tasks.task("plan")
    def plan(data: Any) -> None:
        """Nothing."""

    try:
        first = await plan.add({"v": 1}, dedup=Dedup.unique("u"))
        again = await plan.add({"v": 2}, dedup=Dedup.unique("u"))
        via_queue = await tasks.queue(queue_name).add(plan, {"v": 3}, dedup=Dedup.unique("u"))
        assert again.id == via_queue.id == first.id and again.deduplicated
    finally:
        await tasks.queue(queue_name).obliterate(force=True)
        await tasks.close()


def test_the_sync_producer_takes_dedup(queue_name: str) -> None:
    with shunter_sync.Queue(queue_name, REDIS_URL) as q:
        try:
            first = q.add("t", 1, dedup=Dedup.unique("k"))
            again = q.add("t", 2, dedup=Dedup.unique("k"))
            assert (again.id, again.existing, again.deduplicated) == (first.id, True, True)
            bulk = q.add_bulk([{"task": "t", "data": n, "dedup": Dedup.debounce("d")} for n in range(3)])
            assert {j.id for j in bulk} == {bulk[0].id} and bulk[2].debounced
            stored = q.get_job(bulk[0].id)
            assert stored is not None and stored.data == 2
            with pytest.raises(InvalidInput):
                q.add("t", 1, dedup="k")  # type: ignore[arg-type]
        finally:
            with redis.Redis.from_url(REDIS_URL) as client:
                client.delete(*client.scan_iter(match=f"shunter:[{{]{queue_name}[}}]:*"))


# -- bad input ---------------------------------------------------------------------------------

BAD_VALUES: list[tuple[str, Any]] = [
    ("empty key", lambda: Dedup.unique("")),
    ("key not a str", lambda: Dedup.unique(42)),
    ("key bytes", lambda: Dedup.unique(b"k")),
    ("key over 256 bytes", lambda: Dedup.unique("x" * 257)),
    ("key over 256 bytes of UTF-8", lambda: Dedup.debounce("é" * 129)),
    ("newline in key", lambda: Dedup.unique("a\nb")),
    ("NUL in key", lambda: Dedup.unique("a\x00b")),
    ("DEL in key", lambda: Dedup.unique("a\x7fb")),
    ("C1 control in key", lambda: Dedup.unique("a\x85b")),
    ("lone surrogate in key", lambda: Dedup.unique("a\ud800b")),
    ("ttl 0", lambda: Dedup.ttl("k", 0)),
    ("ttl negative", lambda: Dedup.ttl("k", -1)),
    ("ttl NaN", lambda: Dedup.ttl("k", math.nan)),
    ("ttl inf", lambda: Dedup.throttle("k", math.inf)),
    ("ttl over a year", lambda: Dedup.ttl("k", 400 * 86400)),
    ("throttle under a ms", lambda: Dedup.throttle("k", 0.0001)),
    ("throttle bool", lambda: Dedup.throttle("k", True)),
    ("throttle str", lambda: Dedup.throttle("k", "5")),
    ("unknown mode", lambda: Dedup("once", "k")),  # type: ignore[arg-type]
    ("unique with seconds", lambda: Dedup("unique", "k", 5)),
    ("ttl without seconds", lambda: Dedup("ttl", "k")),
]


@pytest.mark.parametrize("make", [m for _, m in BAD_VALUES], ids=[n for n, _ in BAD_VALUES])
def test_a_bad_dedup_value_is_refused_when_built(make: Any) -> None:
    with pytest.raises(InvalidInput):
        make()


@pytest.mark.parametrize("dedup", ["plan:user:42", ("unique", "k"), {"key": "k"}, 5],
                         ids=["str", "tuple", "dict", "int"])
async def test_add_refuses_a_dedup_that_is_not_a_dedup_and_stores_nothing(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis, dedup: Any) -> None:
    with pytest.raises(InvalidInput, match="dedup"):
        await queue.add("t", 1, dedup=dedup)
    with pytest.raises(InvalidInput, match="dedup"):
        await queue.add_bulk([{"task": "t"}, {"task": "t", "dedup": dedup}])
    assert await client.exists(storage.keys.events, storage.keys.waiting) == 0


def test_dedup_values_compare_and_encode() -> None:
    assert Dedup.unique("k") == Dedup("unique", "k")
    assert Dedup.ttl("k", 1.5).fields() == ["dedup_key", "k", "dedup_mode", "ttl", "dedup_ms", 1500]
    assert Dedup.debounce("k").fields() == ["dedup_key", "k", "dedup_mode", "debounce"]
    assert Dedup.unique("é" * 128).key == "é" * 128  # 256 bytes: the largest key


# -- the scripts -------------------------------------------------------------------------------

async def test_a_job_without_dedup_followed_by_an_id_named_dedup_key(
        queue: Queue, storage: Storage) -> None:
    # the enqueue script looks for dedup fields right after a job's six fixed pairs: the
    # next job's id there must not be taken for them
    from shunter.producer import build_spec
    specs = [build_spec("t", n, job_id=job_id, max_payload_bytes=1 << 16)
             for n, job_id in enumerate(["a", "dedup_key", "b"])]
    results = await storage.enqueue_many(specs)
    assert [r.created for r in results] == [True, True, True]  # type: ignore[union-attr]


async def test_dedup_release_deletes_the_key_only_for_its_holder(
        client: redis.asyncio.Redis, queue_name: str) -> None:
    prefix = f"shunter:{{{queue_name}}}:"
    source, _ = build_source(
        "-- include: dedup_release\n"
        "local mode, all = ARGV[4], ARGV[5] == '1'\n"
        "if mode == '' then mode = nil end\n"
        "local key = ARGV[3]\n"
        "if key == '' then key = nil end\n"
        "dedup_release(ARGV[1], ARGV[1] .. 'job:' .. ARGV[2], ARGV[2], key, mode, all)\n"
        "return redis.call('EXISTS', ARGV[1] .. 'dedup:k')", library())

    async def release(job_id: str, key: str = "k", mode: str = "", all_: bool = False) -> int:
        return int(await client.eval(source, 0, prefix, job_id, key, mode, "1" if all_ else "0"))

    try:
        await client.set(prefix + "dedup:k", "j1")
        await client.hset(prefix + "job:j1", mapping={"dedup_key": "k", "dedup_mode": "unique"})
        await client.hset(prefix + "job:j2", mapping={"dedup_key": "k", "dedup_mode": "unique"})
        assert await release("j2") == 1  # names another job: kept
        assert await release("j1", mode="throttle") == 1  # a period: kept
        assert await release("j1", mode="throttle", all_=True) == 0
        await client.set(prefix + "dedup:k", "j1")
        assert await release("j1", key="") == 0  # key and mode read from the job
        await client.set(prefix + "dedup:k", "j3")
        await client.set(prefix + "job:j3", "foreign")
        assert await release("j3", key="") == 1  # foreign data has no dedup key
    finally:
        await client.delete(*(prefix + s for s in ("dedup:k", "job:j1", "job:j2", "job:j3")))


def test_enqueue_declares_the_dedup_events() -> None:
    assert {"enqueue", "dedup", "debounce"} == set(SCRIPTS["enqueue"].events)
