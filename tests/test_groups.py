"""Groups (issue 11, items 1-5 and 8): each group keeps its own line, groups are served by
weighted fair queueing with the jobs without a group as one more group, and the limits
(per group and queue-wide concurrency and rate, pause of one group, RateLimited from a
handler) are enforced in the claim: a job over a limit is never claimed."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio

from shunter import Dedup, InvalidInput, JobNotInState, Queue, Rate, RateLimited, State
from shunter.storage import Storage

from .conftest import eventually

pytestmark = pytest.mark.redis

LEASE = 60_000


async def claim_one(storage: Storage, worker: str = "w") -> dict[bytes, bytes] | None:
    jobs = (await storage.claim(1, LEASE, worker)).jobs
    return jobs[0] if jobs else None


async def data_of(job: dict[bytes, bytes] | None) -> Any:
    return None if job is None else int(job[b"data"])


async def claim_order(storage: Storage, n: int) -> list[tuple[str | None, int]]:
    """Claim one job at a time, n times: (group, data) of each."""
    out = []
    for _ in range(n):
        job = await claim_one(storage)
        assert job is not None
        group = job.get(b"group")
        out.append((None if group is None else group.decode(), int(job[b"data"])))
    return out


async def events_of(client: redis.asyncio.Redis, storage: Storage, verb: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await client.xrange(storage.keys.events)
            if fields[b"event"] == verb.encode()]


# -- lines and fairness ---------------------------------------------------------------------

async def test_a_group_keeps_its_own_line_priority_then_fifo(queue: Queue, storage: Storage) -> None:
    for n in range(3):
        await queue.add("t", n, group="a")
    await queue.add("t", 9, group="a", priority=5)
    job = await queue.add("t", 10, group="a")
    assert job.group == "a" and (await queue.get_job(job.id)).group == "a"  # type: ignore[union-attr]
    counts = await queue.counts()
    assert counts["waiting"] == 5  # the groups' lines count as waiting
    assert [d for _, d in await claim_order(storage, 5)] == [9, 0, 1, 2, 10]
    assert (await queue.counts())["waiting"] == 0


async def test_groups_take_turns_and_a_new_group_is_served_at_once(queue: Queue, storage: Storage) -> None:
    for n in range(50):
        await queue.add("t", n, group="big")
    assert await claim_order(storage, 3) == [("big", 0), ("big", 1), ("big", 2)]
    await queue.add("t", 100, group="small")
    # active groups: big and small; small's first job starts within (2 - 1) dispatches
    order = await claim_order(storage, 2)
    assert ("small", 100) in order
    await queue.add("t", 200, group="third")
    await queue.add("t", 201, group="third")
    order = await claim_order(storage, 4)
    assert [g for g, _ in order].count("third") == 2 and order[0][0] != order[1][0]


async def test_jobs_without_a_group_are_one_more_group(queue: Queue, storage: Storage) -> None:
    for n in range(10):
        await queue.add("t", n)  # before any group: the queue's plain line
    for n in range(10):
        await queue.add("t", 100 + n, group="g")
    order = await claim_order(storage, 10)
    ungrouped = [d for g, d in order if g is None]
    grouped = [d for g, d in order if g == "g"]
    assert len(ungrouped) == 5 and len(grouped) == 5  # neither starves the other
    assert ungrouped == sorted(ungrouped) and grouped == sorted(grouped)


async def test_weights_give_proportional_shares(queue: Queue, storage: Storage) -> None:
    await queue.configure_group("heavy", weight=3)
    for n in range(200):
        await queue.add("t", n, group="heavy")
        await queue.add("t", n, group="light")
    order = await claim_order(storage, 120)
    heavy = sum(1 for g, _ in order if g == "heavy")
    assert heavy == 90  # 3:1 exactly, start-time fair queueing is deterministic


# -- limits -----------------------------------------------------------------------------------

async def test_group_concurrency_holds_jobs_back_without_claiming_them(
        queue: Queue, storage: Storage, client: redis.asyncio.Redis) -> None:
    await queue.configure_groups(concurrency=1)
    for n in range(3):
        await queue.add("t", n, group="user:1")
    await queue.add("t", 10, group="user:2")
    first = await storage.claim(10, LEASE, "w1")
    assert sorted(int(j[b"data"]) for j in first.jobs) == [0, 10]
    again = await storage.claim(10, LEASE, "w2")
    assert again.jobs == [] and again.pending == 2
    claims = await events_of(client, storage, "claim")
    assert len(claims) == 2, "a job over its group's limit is never claimed: no event, no attempt"
    info = await queue.group("user:1")
    assert (info.waiting, info.active, info.state, info.concurrency) == (2, 1, "full", 1)
    job = next(j for j in first.jobs if j[b"data"] == b"0")
    await storage.complete(job[b"id"].decode(), int(job[b"token"]), b"1")
    nxt = await storage.claim(10, LEASE, "w2")
    assert [int(j[b"data"]) for j in nxt.jobs] == [1]
    info = await queue.group("user:1")
    assert (info.completed, info.active, info.waiting) == (1, 1, 1)
    # an override lifts the default for one group, at once
    await queue.configure_group("user:1", concurrency=0)
    assert [int(j[b"data"]) for j in (await storage.claim(10, LEASE, "w3")).jobs] == [2]


async def test_a_stale_attempt_cannot_free_a_slot_twice(queue: Queue, storage: Storage,
                                                         client: redis.asyncio.Redis) -> None:
    await queue.configure_groups(concurrency=1)
    for n in range(2):
        await queue.add("t", n, group="g")
    (job,) = (await storage.claim(5, LEASE, "w")).jobs
    job_id, token = job[b"id"].decode(), int(job[b"token"])
    await storage.complete(job_id, token, b"1")
    with pytest.raises(JobNotInState):
        await storage.complete(job_id, token, b"1")
    with pytest.raises(JobNotInState):
        await storage.fail(job_id, token, b'{"type": "E"}')
    assert await client.scard(storage.keys.group_active("g")) == 0
    (second,) = (await storage.claim(5, LEASE, "w")).jobs
    assert await client.scard(storage.keys.group_active("g")) == 1
    assert (await storage.claim(5, LEASE, "w")).jobs == []
    await storage.complete(second[b"id"].decode(), int(second[b"token"]), b"1")


async def test_rescue_of_a_dead_workers_job_frees_its_group_slot(queue: Queue, storage: Storage,
                                                                 client: redis.asyncio.Redis) -> None:
    await queue.configure_groups(concurrency=1)
    a = await queue.add("t", 1, group="g")
    await queue.add("t", 2, group="g")
    held = await storage.claim(5, 100, "dead-worker")
    assert [j[b"id"].decode() for j in held.jobs] == [a.id]

    async def rescued() -> bool:
        return await storage.rescue(5, lock_ms=0) > 0

    await eventually(rescued, message="lease expired and rescued")
    assert await client.scard(storage.keys.group_active("g")) == 0
    # back at the head of its group's line, and the group can start it again
    again = await storage.claim(5, LEASE, "w2")
    assert [j[b"id"].decode() for j in again.jobs] == [a.id]
    assert int(again.jobs[0][b"stalls"]) == 1


async def test_a_slot_held_by_a_job_deleted_while_it_ran_heals(queue: Queue, storage: Storage,
                                                               client: redis.asyncio.Redis) -> None:
    await queue.configure_groups(concurrency=1)
    a = await queue.add("t", 1, group="g")
    await queue.add("t", 2, group="g")
    assert len((await storage.claim(5, 100, "w")).jobs) == 1
    await client.delete(storage.keys.job(a.id))  # by hand, while it ran

    async def rescued() -> bool:
        return await storage.rescue(5, lock_ms=0) > 0

    await eventually(rescued, message="lease expired and rescued")
    # rescue could not read the group from a deleted hash; the full check finds the stale slot
    await queue.configure_group("g")  # a no-op change, which places the group again
    await storage.configure_group("g", ["weight", "1"])
    assert [int(j[b"data"]) for j in (await storage.claim(5, LEASE, "w2")).jobs] == [2]


async def test_group_rate_limit_spaces_starts_and_says_when(queue: Queue, storage: Storage) -> None:
    await queue.configure_groups(rate=Rate(2, per=0.5, burst=2))  # 2 at once, then one per 250 ms
    for n in range(6):
        await queue.add("t", n, group="g")
    first = await storage.claim(10, LEASE, "w")
    assert len(first.jobs) == 2
    blocked = await storage.claim(10, LEASE, "w")
    assert blocked.jobs == [] and 0 < blocked.next_due_ms <= 250
    info = await queue.group("g")
    assert info.state == "blocked" and info.rate == Rate(2, per=0.5, burst=2)
    started = time.monotonic()

    async def next_start() -> list[dict[bytes, bytes]]:
        return (await storage.claim(10, LEASE, "w")).jobs

    assert len(await eventually(next_start, message="the group's next start")) == 1
    assert time.monotonic() - started >= blocked.next_due_ms / 1000 - 0.05  # not before it said


async def test_queue_wide_rate_limit(queue: Queue, storage: Storage) -> None:
    stored = await queue.configure(rate=Rate(1, per=60))
    assert stored["rate"] == Rate(1, per=60)
    for n in range(3):
        await queue.add("t", n)
    assert len((await storage.claim(10, LEASE, "w")).jobs) == 1
    blocked = await storage.claim(10, LEASE, "w")
    assert blocked.jobs == [] and 59_000 < blocked.next_due_ms <= 60_000
    assert (await queue.configure(rate=0))["rate"] is None
    assert len((await storage.claim(10, LEASE, "w")).jobs) == 2


async def test_pause_and_resume_one_group(queue: Queue, storage: Storage) -> None:
    await queue.add("t", 1, group="a")
    await queue.add("t", 2, group="b")
    await queue.pause_group("a")
    assert [int(j[b"data"]) for j in (await storage.claim(10, LEASE, "w")).jobs] == [2]
    assert (await queue.group("a")).state == "paused"
    await queue.add("t", 3, group="a")  # still joins its line
    assert (await storage.claim(10, LEASE, "w")).jobs == []
    await queue.resume_group("a")
    assert [int(j[b"data"]) for j in (await storage.claim(10, LEASE, "w")).jobs] == [1, 3]


async def test_ratelimited_parks_the_group_without_an_attempt(queue: Queue, storage: Storage) -> None:
    a = await queue.add("t", 1, group="api")
    await queue.add("t", 2, group="api")
    await queue.add("t", 3, group="other")
    jobs = {j[b"id"].decode(): j for j in (await storage.claim(1, LEASE, "w")).jobs}
    if a.id not in jobs:
        jobs = {j[b"id"].decode(): j for j in (await storage.claim(1, LEASE, "w")).jobs}
    job = jobs[a.id]
    await storage.ratelimited(a.id, int(job[b"token"]), 60_000, "group")
    stored = await queue.get_job(a.id)
    assert stored is not None and stored.state is State.WAITING
    assert (stored.attempts_made, stored.throttled) == (0, 1)
    rest = await storage.claim(10, LEASE, "w")
    assert [int(j[b"data"]) for j in rest.jobs] in ([3], [])  # the other group is not parked
    assert (await storage.claim(10, LEASE, "w")).jobs == []
    info = await queue.group("api")
    assert info.state == "blocked" and info.waiting == 2
    # unparked (by hand here): the throttled job is first in its line again
    await queue.storage.configure_group("api", ["until", ""])
    assert [j[b"id"].decode() for j in (await storage.claim(1, LEASE, "w")).jobs] == [a.id]


async def test_groups_listing_and_cleanup(queue: Queue, storage: Storage,
                                          client: redis.asyncio.Redis) -> None:
    for name in ("b", "a", "c"):
        await queue.add("t", 1, group=name)
    names = [g.name for g in await queue.groups()]
    assert names == ["a", "b", "c"]
    assert [g.name for g in await queue.groups(after="a", count=1)] == ["b"]
    waiting = await queue.add("t", 2, group="a")
    assert await queue.cancel(waiting.id) is True
    assert (await queue.group("a")).cancelled == 1 and (await queue.counts())["waiting"] == 3
    assert await queue.drain() == 3
    assert (await queue.counts())["waiting"] == 0
    assert (await storage.claim(10, LEASE, "w")).jobs == []
    await queue.add("t", 3, group="a")
    await queue.obliterate(force=True)
    assert await client.keys(f"shunter:{{{queue.name}}}:*") == []


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("group", ["", "has space", "a{b}", "x*", "é", "a" * 129, 5, b"g"])
async def test_bad_group_names_are_refused(queue: Queue, client: redis.asyncio.Redis, group: Any) -> None:
    with pytest.raises(InvalidInput):
        await queue.add("t", 1, group=group)
    with pytest.raises(InvalidInput):
        await queue.configure_group(group, concurrency=1)
    assert await client.keys(f"shunter:{{{queue.name}}}:*") == []


@pytest.mark.parametrize("make", [
    lambda: Rate(0), lambda: Rate(-1), lambda: Rate(10**7), lambda: Rate(1, per=0),
    lambda: Rate(1, per=-5), lambda: Rate(1, per=float("nan")), lambda: Rate(1, per=10**9),
    lambda: Rate(1, burst=0), lambda: Rate(1.5), lambda: Rate(True),  # type: ignore[arg-type]
])
def test_bad_rates_are_refused(make: Any) -> None:
    with pytest.raises(InvalidInput):
        make()


@pytest.mark.parametrize("options", [
    {"concurrency": -1}, {"concurrency": 10**7}, {"concurrency": 1.5}, {"rate": 5},
    {"rate": "1/s"}, {"weight": 0}, {"weight": -2}, {"weight": 1e9}, {"weight": float("inf")},
])
async def test_bad_group_limits_are_refused_and_nothing_stored(
        queue: Queue, client: redis.asyncio.Redis, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        await queue.configure_group("g", **options)
    if "weight" not in options:
        with pytest.raises(InvalidInput):
            await queue.configure_groups(**options)
        with pytest.raises(InvalidInput):
            await queue.configure(**options)
    assert await client.keys(f"shunter:{{{queue.name}}}:*") == []


async def test_unknown_limit_names_are_refused(queue: Queue) -> None:
    with pytest.raises(TypeError):
        await queue.configure_group("g", concurency=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await queue.configure_groups(burst=3)  # type: ignore[call-arg]


def test_rate_limited_checks_its_arguments() -> None:
    for bad in (0, -1, float("nan"), 10**9, "5"):
        with pytest.raises(InvalidInput):
            RateLimited(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        RateLimited(1, scope="world")
    assert RateLimited(2.5, scope="queue").scope == "queue"


async def test_debounce_moves_a_grouped_holder_between_its_line_and_scheduled(
        queue: Queue, storage: Storage) -> None:
    first = await queue.add("t", 1, group="g", dedup=Dedup.debounce("k"))
    assert (await queue.counts())["waiting"] == 1
    later = await queue.add("t", 2, group="g", dedup=Dedup.debounce("k"), delay=60)
    assert later.id == first.id and later.debounced
    counts = await queue.counts()
    assert (counts["waiting"], counts["scheduled"]) == (0, 1)  # out of the group's line
    assert (await storage.claim(5, LEASE, "w")).jobs == []
    now = await queue.add("t", 3, group="g", dedup=Dedup.debounce("k"))
    assert now.id == first.id and (await queue.counts())["waiting"] == 1
    (job,) = (await storage.claim(5, LEASE, "w")).jobs
    assert (job[b"id"].decode(), job[b"data"], job[b"group"]) == (first.id, b"3", b"g")


async def test_a_group_counts_its_scheduled_jobs(queue: Queue, storage: Storage,
                                                 client: redis.asyncio.Redis) -> None:
    later = await queue.add("t", 1, group="g", delay=60)
    await queue.add("t", 2, group="g", delay=60)
    soon = await queue.add("t", 3, group="g", delay=0.05)
    assert (await queue.group("g")).scheduled == 3
    assert await queue.cancel(later.id)
    assert (await queue.group("g")).scheduled == 2

    async def promoted() -> bool:
        await storage.promote()
        return (await client.hget(storage.keys.job(soon.id), "state")) == b"waiting"

    await eventually(promoted, message="the short delay passed")
    info = await queue.group("g")
    assert (info.scheduled, info.waiting) == (1, 1)
    (job,) = (await storage.claim(5, LEASE, "w")).jobs
    await storage.retry(job[b"id"].decode(), int(job[b"token"]), 60_000, b'{"type": "E"}')
    assert (await queue.group("g")).scheduled == 2  # a retry's backoff is scheduled too
    assert await queue.drain() == 2
    assert (await queue.group("g")).scheduled == 0


async def test_a_full_group_runs_again_after_its_default_limit_is_removed(
        queue: Queue, storage: Storage) -> None:
    # found by the docs review: the group was left in neither the ring nor the wake-ups
    await queue.configure_groups(concurrency=1)
    for n in range(3):
        await queue.add("t", n, group="g")
    (job,) = (await storage.claim(5, LEASE, "w")).jobs
    await queue.configure_groups(concurrency=0)
    await storage.complete(job[b"id"].decode(), int(job[b"token"]), b"1")
    assert sorted(int(j[b"data"]) for j in (await storage.claim(5, LEASE, "w")).jobs) == [1, 2]
