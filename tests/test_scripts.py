"""Keyspace-level tests of each Lua script, apart from the behaviour tests.

After each script call these look at the raw keys of the queue (SCAN of
``shunter:{<queue>}:*``), index scores and job hash fields, so a script that writes a
stray key, forgets to clean one up or stores the wrong number is caught here even when
the Python behaviour above it looks right.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio

from shunter.errors import ErrorCode, JobNotInState, LeaseLost, ShunterError, WrongKeyType
from shunter.options import Retention
from shunter.producer import build_spec
from shunter.storage import Enqueued, JobSpec, Storage
from shunter.storage.scripts import CLAIM_FIELDS

from .conftest import eventually

pytestmark = pytest.mark.redis

LEASE = 60_000
BAND = 1 << 40  # waiting score = (1000 - priority) * BAND + sequence
ERR = b'{"type": "Boom", "message": "boom", "traceback": ""}'


def spec(job_id: str, **options: Any) -> JobSpec:
    return build_spec("task", {"id": job_id}, job_id=job_id, max_payload_bytes=1 << 16, **options)


async def enqueue(storage: Storage, spec: JobSpec) -> tuple[bool, str | None]:
    """``(created, state)`` of one enqueue."""
    result = await storage.enqueue(spec)
    return result.created, result.state


async def now_ms(client: redis.asyncio.Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def keyspace(client: redis.asyncio.Redis, storage: Storage) -> set[str]:
    """Every key of the queue, without the ``shunter:{queue}:`` prefix."""
    prefix = storage.keys.prefix
    pattern = "".join("\\" + c if c in "\\*?[]{}" else c for c in prefix) + "*"
    found = {k.decode() async for k in client.scan_iter(match=pattern, count=1000)}
    assert all(k.startswith(prefix) for k in found)
    return {k[len(prefix):] for k in found}


async def dump(client: redis.asyncio.Redis, storage: Storage) -> dict[str, Any]:
    """The type and content of every key of the queue."""
    out: dict[str, Any] = {}
    for name in sorted(await keyspace(client, storage)):
        key = storage.keys.prefix + name
        kind = (await client.type(key)).decode()
        if kind == "hash":
            out[name] = await client.hgetall(key)
        elif kind == "zset":
            out[name] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[name] = await client.lrange(key, 0, -1)
        elif kind == "stream":
            out[name] = await client.xrange(key)
        else:
            out[name] = (kind, await client.dump(key))
    return out


async def fields(client: redis.asyncio.Redis, storage: Storage, job_id: str) -> dict[str, str]:
    raw = await client.hgetall(storage.keys.job(job_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def zmembers(client: redis.asyncio.Redis, key: str) -> list[str]:
    return [m.decode() for m in await client.zrange(key, 0, -1)]


async def events(client: redis.asyncio.Redis, storage: Storage) -> list[tuple[str, str, str]]:
    return [(f[b"event"].decode(), f[b"job"].decode(), f[b"state"].decode())
            for _, f in await client.xrange(storage.keys.events)]


async def claim_one(storage: Storage, lease_ms: int = LEASE) -> tuple[str, int]:
    jobs = (await storage.claim(1, lease_ms, "w")).jobs
    assert len(jobs) == 1
    return jobs[0][b"id"].decode(), int(jobs[0][b"token"])


async def expire(client: redis.asyncio.Redis, storage: Storage, job_id: str) -> None:
    deadline = await client.zscore(storage.keys.active, job_id)
    assert deadline is not None

    async def passed() -> bool:
        return await now_ms(client) > deadline

    await eventually(passed, message="lease expired")


# -- enqueue ---------------------------------------------------------------------------

async def test_enqueue_writes_the_job_hash_index_and_marker(storage: Storage,
                                                           client: redis.asyncio.Redis) -> None:
    assert await keyspace(client, storage) == set()
    t0 = await now_ms(client)
    assert await enqueue(storage, spec("a", priority=3, max_attempts=5)) == (True, "waiting")
    t1 = await now_ms(client)
    assert await keyspace(client, storage) == {"job:a", "waiting", "meta", "events", "marker"}
    f = await fields(client, storage, "a")
    assert set(f) == {"task", "data", "priority", "max_attempts", "keep_completed", "keep_failed",
                      "id", "created_at", "token", "attempts_made", "stalls", "deferrals", "state"}
    assert (f["task"], orjson.loads(f["data"]), f["priority"], f["max_attempts"]) == (
        "task", {"id": "a"}, "3", "5")
    assert (f["id"], f["state"], f["token"], f["attempts_made"], f["stalls"], f["deferrals"]) == (
        "a", "waiting", "0", "0", "0", "0")
    assert (f["keep_completed"], f["keep_failed"]) == ("1000:86400000", "10000:604800000")
    assert t0 <= int(f["created_at"]) <= t1
    assert await client.zscore(storage.keys.waiting, "a") == (1000 - 3) * BAND + 1
    assert await client.hget(storage.keys.meta, "seq") == b"1"
    assert await client.zrange(storage.keys.marker, 0, -1, withscores=True) == [(b"0", 0.0)]
    assert await events(client, storage) == [("enqueue", "a", "waiting")]


async def test_waiting_order_is_priority_then_fifo(storage: Storage,
                                                   client: redis.asyncio.Redis) -> None:
    for job_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", -3), ("e", 5), ("f", 1000),
                             ("g", -1000)]:
        await storage.enqueue(spec(job_id, priority=priority))
    assert await zmembers(client, storage.keys.waiting) == ["f", "b", "e", "a", "c", "d", "g"]
    scores = dict(await client.zrange(storage.keys.waiting, 0, -1, withscores=True))
    assert scores[b"f"] == 0 * BAND + 6 and scores[b"g"] == 2000 * BAND + 7  # exact in a double
    claimed = await storage.claim(7, LEASE, "w")
    assert [j[b"id"] for j in claimed.jobs] == [b"f", b"b", b"e", b"a", b"c", b"d", b"g"]


async def test_enqueue_scheduled_scores_by_due_time(storage: Storage,
                                                    client: redis.asyncio.Redis) -> None:
    assert await enqueue(storage, spec("later", delay=60)) == (True, "scheduled")
    assert await keyspace(client, storage) == {"job:later", "scheduled", "events", "marker"}
    f = await fields(client, storage, "later")
    assert f["state"] == "scheduled"
    assert int(f["scheduled_for"]) == int(f["created_at"]) + 60_000
    assert await client.zscore(storage.keys.scheduled, "later") == int(f["scheduled_for"])

    run_at = datetime.fromtimestamp((await now_ms(client) + 30_000) / 1000, UTC)
    await storage.enqueue(spec("at", run_at=run_at))
    assert await client.zscore(storage.keys.scheduled, "at") == int(run_at.timestamp() * 1000)
    # The marker wakes an idle worker only when the new job is the earliest one.
    await client.delete(storage.keys.marker)
    await storage.enqueue(spec("latest", delay=120))
    assert not await client.exists(storage.keys.marker)
    await storage.enqueue(spec("soonest", delay=10))
    assert await client.exists(storage.keys.marker)
    assert await zmembers(client, storage.keys.scheduled) == ["soonest", "at", "later", "latest"]


@pytest.mark.parametrize("delay", [None, 60])
async def test_enqueue_existing_id_changes_nothing(storage: Storage, client: redis.asyncio.Redis,
                                                   delay: float | None) -> None:
    state = "waiting" if delay is None else "scheduled"
    assert await enqueue(storage, spec("x", delay=delay)) == (True, state)
    before = await dump(client, storage)
    again = build_spec("other", {"new": 1}, job_id="x", priority=9, max_payload_bytes=1 << 16)
    assert await enqueue(storage, again) == (False, state)
    assert await enqueue(storage, spec("x")) == (False, state)
    assert await dump(client, storage) == before


async def test_enqueue_replies_what_it_stored(storage: Storage, client: redis.asyncio.Redis) -> None:
    t0 = await now_ms(client)
    new = await storage.enqueue(spec("a"))
    later = await storage.enqueue(spec("b", delay=60))
    f = await fields(client, storage, "a")
    assert (new.created, new.now_ms, new.due_ms, new.fields) == (True, int(f["created_at"]), None, None)
    assert t0 <= new.now_ms <= await now_ms(client)
    assert later.due_ms == int((await fields(client, storage, "b"))["scheduled_for"])
    again = await storage.enqueue(spec("a", priority=5))
    assert (again.created, again.state) == (False, "waiting")
    assert again.fields == await client.hgetall(storage.keys.job("a"))  # the whole hash


@pytest.mark.parametrize("foreign", ["string", "list", "zset"])
async def test_enqueue_skips_a_job_whose_key_is_not_a_hash(storage: Storage,
                                                           client: redis.asyncio.Redis,
                                                           foreign: str) -> None:
    bad = storage.keys.job("b")
    if foreign == "string":
        await client.set(bad, "x")
    elif foreign == "list":
        await client.rpush(bad, "x")
    else:
        await client.zadd(bad, {"x": 1})
    before = await dump(client, storage)
    # alone: refused, nothing written (not even the event or the marker)
    with pytest.raises(WrongKeyType, match="holds a " + foreign):
        await storage.enqueue(spec("b"))
    assert await dump(client, storage) == before
    # in a batch: that job is refused, the others are stored whole
    results = await storage.enqueue_many([spec("a"), spec("b"), spec("c", delay=60)])
    assert isinstance(results[0], Enqueued) and isinstance(results[2], Enqueued)
    assert isinstance(results[1], WrongKeyType)
    assert (results[1].job_id, results[1].found) == ("b", foreign)
    after = await dump(client, storage)
    assert after["job:b"] == before["job:b"]
    assert await keyspace(client, storage) == {"job:a", "job:b", "job:c", "waiting", "scheduled",
                                               "meta", "events", "marker"}
    assert await zmembers(client, storage.keys.waiting) == ["a"]
    assert await zmembers(client, storage.keys.scheduled) == ["c"]
    assert await events(client, storage) == [("enqueue", "a", "waiting"), ("enqueue", "c", "scheduled")]


@pytest.mark.parametrize("key", ["waiting", "scheduled", "meta", "events", "marker"])
async def test_enqueue_writes_nothing_when_a_queue_key_is_foreign(storage: Storage,
                                                                  client: redis.asyncio.Redis,
                                                                  key: str) -> None:
    await client.sadd(getattr(storage.keys, key), "x")  # a set: no queue key is one
    before = await dump(client, storage)
    with pytest.raises(WrongKeyType, match=f"key {storage.keys.prefix}{key} holds a set"):
        await storage.enqueue(spec("a"))
    with pytest.raises(WrongKeyType):
        await storage.enqueue_many([spec("b"), spec("c", delay=60)])
    assert await dump(client, storage) == before


# -- claim -----------------------------------------------------------------------------

async def test_claim_batch(storage: Storage, client: redis.asyncio.Redis) -> None:
    for i in range(5):
        await storage.enqueue(spec(f"j{i}"))
    t0 = await now_ms(client)
    res = await storage.claim(3, LEASE, "worker-7")
    t1 = await now_ms(client)
    assert [j[b"id"] for j in res.jobs] == [b"j0", b"j1", b"j2"]
    assert (res.pending, res.next_due_ms, res.paused) == (2, -1, False)
    for job in res.jobs:
        stored = await client.hgetall(storage.keys.job(job[b"id"].decode()))
        # the reply carries exactly the CLAIM_FIELDS the job has, as stored after the claim
        assert job == {k: v for k, v in stored.items() if k in CLAIM_FIELDS}
        assert set(job) == set(CLAIM_FIELDS) & set(stored)
        assert (job[b"state"], job[b"token"], stored[b"worker"]) == (b"active", b"1", b"worker-7")
        started = int(job[b"started_at"])
        assert t0 <= started <= t1
        assert await client.zscore(storage.keys.active, job[b"id"]) == started + LEASE
    assert await zmembers(client, storage.keys.waiting) == ["j3", "j4"]
    assert await keyspace(client, storage) == {
        *(f"job:j{i}" for i in range(5)), "waiting", "active", "meta", "events", "marker"}
    claims = [e for e in await client.xrange(storage.keys.events) if e[1][b"event"] == b"claim"]
    assert [(e[1][b"job"], e[1][b"token"]) for e in claims] == [(b"j0", b"1"), (b"j1", b"1"),
                                                                (b"j2", b"1")]
    rest = await storage.claim(10, LEASE, "w")
    assert len(rest.jobs) == 2 and rest.pending == 0
    assert "waiting" not in await keyspace(client, storage)


async def test_token_increments_per_claim(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    for expected in (1, 2, 3):
        job_id, token = await claim_one(storage)
        assert token == expected
        await storage.release(job_id, token)
    assert (await fields(client, storage, "a"))["token"] == "3"


async def test_paused_queue_claims_nothing(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    await storage.pause()
    assert await client.hget(storage.keys.meta, "paused") == b"1"
    before = await dump(client, storage)
    res = await storage.claim(5, LEASE, "w")
    assert (res.jobs, res.paused, res.pending) == ([], True, 1)
    assert await dump(client, storage) == before
    await client.delete(storage.keys.marker)
    await storage.resume()
    assert not await client.hexists(storage.keys.meta, "paused")
    assert await client.exists(storage.keys.marker)
    assert [e[0] for e in await events(client, storage)] == ["enqueue", "pause", "resume"]
    res = await storage.claim(5, LEASE, "w")
    assert (len(res.jobs), res.paused) == (1, False)


async def test_claim_reports_next_due_and_promotes_due_jobs(storage: Storage,
                                                            client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("later", delay=60))
    res = await storage.claim(5, LEASE, "w")
    assert res.jobs == [] and res.pending == 1
    assert 59_000 <= res.next_due_ms <= 60_000
    await storage.enqueue(spec("soon", delay=0.001))
    due = await client.zscore(storage.keys.scheduled, "soon")

    async def is_due() -> bool:
        return await now_ms(client) >= due

    await eventually(is_due, message="job due")
    res = await storage.claim(5, LEASE, "w")
    assert [j[b"id"] for j in res.jobs] == [b"soon"]
    assert res.jobs[0][b"state"] == b"active" and b"scheduled_for" not in res.jobs[0]
    assert await zmembers(client, storage.keys.scheduled) == ["later"]
    assert await events(client, storage) == [
        ("enqueue", "later", "scheduled"), ("enqueue", "soon", "scheduled"),
        ("promote", "soon", "waiting"), ("claim", "soon", "active")]


async def test_promote_early_moves_jobs_that_are_not_due_yet(storage: Storage,
                                                             client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("hour", delay=3600))
    await storage.enqueue(spec("day", delay=86400))
    assert await storage.promote() == 0  # not due
    assert await storage.promote(1, early=True) == 1  # the limit holds; earliest first
    assert await zmembers(client, storage.keys.waiting) == ["hour"]
    assert await storage.promote(early=True) == 1
    assert await zmembers(client, storage.keys.scheduled) == []
    assert b"scheduled_for" not in await client.hgetall(storage.keys.job("day"))
    assert [e for e in await events(client, storage) if e[0] == "promote"] == [
        ("promote", "hour", "waiting"), ("promote", "day", "waiting")]


async def test_claim_fails_a_job_whose_hash_disagrees_with_the_index(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("bad"))
    await storage.enqueue(spec("good"))
    await client.hset(storage.keys.job("bad"), "state", "completed")
    res = await storage.claim(5, LEASE, "w")
    assert [j[b"id"] for j in res.jobs] == [b"good"]
    f = await fields(client, storage, "bad")
    assert f["state"] == "failed" and "finished_at" in f
    error = orjson.loads(f["error"])
    assert error["type"] == "CorruptJob" and "completed" in error["message"]
    assert await client.zscore(storage.keys.failed, "bad") == int(f["finished_at"])
    assert ("fail", "bad", "failed") in await events(client, storage)


async def test_claim_drops_a_dangling_id(storage: Storage, client: redis.asyncio.Redis) -> None:
    await client.zadd(storage.keys.waiting, {"ghost": 1})
    res = await storage.claim(5, LEASE, "w")
    assert res.jobs == [] and res.pending == 0
    assert await keyspace(client, storage) == set()  # no hash, no index entry, no event


# -- renew, progress, log ----------------------------------------------------------------

async def test_renew_extends_the_lease(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    await storage.enqueue(spec("b"))
    a, ta = await claim_one(storage, lease_ms=1000)
    b, tb = await claim_one(storage, lease_ms=1000)
    old = await client.zscore(storage.keys.active, a)
    t0 = await now_ms(client)
    assert await storage.renew(LEASE, [(a, ta), (b, tb)]) == [1, 1]
    t1 = await now_ms(client)
    new = await client.zscore(storage.keys.active, a)
    assert t0 + LEASE <= new <= t1 + LEASE and new > old
    await storage.cancel(b, "u", "r")
    codes = await storage.renew(LEASE, [(a, ta + 1), (b, tb), ("nope", 1)])
    assert codes == [ErrorCode.TOKEN_MISMATCH, 2, ErrorCode.JOB_NOT_FOUND]
    assert await client.zscore(storage.keys.active, a) == new  # wrong token: untouched
    assert await client.xlen(storage.keys.events) == 5  # 2 enqueue, 2 claim, 1 cancel
    assert "job:nope" not in await keyspace(client, storage)


async def test_progress_and_log_are_fenced(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    a, token = await claim_one(storage)
    await storage.progress(a, token, b'{"pct": 10}')
    assert (await fields(client, storage, "a"))["progress"] == '{"pct": 10}'
    last = (await client.xrevrange(storage.keys.events, count=1))[0][1]
    assert last[b"event"] == b"progress" and last[b"progress"] == b'{"pct": 10}'
    for i in range(5):
        kept = await storage.log(a, token, f"line {i}", 3)
        assert kept == min(i + 1, 3)
    assert await client.lrange(storage.keys.logs(a), 0, -1) == [b"line 2", b"line 3", b"line 4"]
    before = await dump(client, storage)
    with pytest.raises(LeaseLost):
        await storage.log(a, token + 1, "intruder", 3)
    with pytest.raises(LeaseLost):
        await storage.progress(a, token + 1, b"99")
    assert await dump(client, storage) == before
    assert "logs:a" in await keyspace(client, storage)


# -- complete, fail, retention -------------------------------------------------------------

async def test_complete_stores_result(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    a, token = await claim_one(storage)
    await storage.complete(a, token, b'{"ok": true}')
    f = await fields(client, storage, "a")
    assert (f["state"], f["result"]) == ("completed", '{"ok": true}')
    assert await client.zscore(storage.keys.completed, "a") == int(f["finished_at"])
    assert await keyspace(client, storage) == {"job:a", "completed", "meta", "events", "marker"}


@pytest.mark.parametrize("outcome", ["complete", "fail"])
async def test_retention_count_zero_deletes_at_once(storage: Storage, client: redis.asyncio.Redis,
                                                    outcome: str) -> None:
    await storage.enqueue(spec("a", keep_completed=0, keep_failed=0))
    a, token = await claim_one(storage)
    await storage.log(a, token, "hello", 10)
    if outcome == "complete":
        await storage.complete(a, token, b"1")
    else:
        await storage.fail(a, token, ERR)
    assert await keyspace(client, storage) == {"meta", "events", "marker"}
    state = "completed" if outcome == "complete" else "failed"
    assert (await events(client, storage))[-1] == (outcome, "a", state)


async def test_retention_count_trims_oldest(storage: Storage, client: redis.asyncio.Redis) -> None:
    for job_id in ("a", "b", "c"):  # same-ms finishes tie-break by id, so ids follow order
        await storage.enqueue(spec(job_id, keep_completed=2))
        _, token = await claim_one(storage)
        await storage.log(job_id, token, "x", 10)
        await storage.complete(job_id, token, b"1")
    assert await zmembers(client, storage.keys.completed) == ["b", "c"]
    keys = await keyspace(client, storage)
    assert {"job:b", "job:c", "logs:b", "logs:c"} <= keys
    assert not {"job:a", "logs:a"} & keys


async def test_retention_age_trims_old_ones(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("old"))
    _, token = await claim_one(storage)
    await storage.complete("old", token, b"1")
    # Backdate the finish by an hour instead of waiting for it.
    await client.zadd(storage.keys.completed, {"old": await now_ms(client) - 3_600_000})
    await storage.enqueue(spec("new", keep_completed=Retention(count=None, age=60)))
    _, token = await claim_one(storage)
    await storage.complete("new", token, b"1")
    assert await zmembers(client, storage.keys.completed) == ["new"]
    assert "job:old" not in await keyspace(client, storage)


async def test_fail_counts_the_attempt_or_not(storage: Storage, client: redis.asyncio.Redis) -> None:
    for job_id, count in (("a", True), ("b", False)):
        await storage.enqueue(spec(job_id))
        _, token = await claim_one(storage)
        await storage.fail(job_id, token, ERR, count_attempt=count)
        f = await fields(client, storage, job_id)
        assert (f["state"], f["error"], f["attempts_made"]) == ("failed", ERR.decode(),
                                                              "1" if count else "0")
        assert await client.zscore(storage.keys.failed, job_id) == int(f["finished_at"])
    assert "active" not in await keyspace(client, storage)


# -- retry ---------------------------------------------------------------------------------

async def test_retry_without_delay_goes_back_to_waiting(storage: Storage,
                                                        client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a", priority=7))
    _, token = await claim_one(storage)
    await storage.retry("a", token, 0, ERR)
    f = await fields(client, storage, "a")
    assert (f["state"], f["attempts_made"], f["deferrals"], f["error"]) == (
        "waiting", "1", "0", ERR.decode())
    assert "scheduled_for" not in f
    assert await client.zscore(storage.keys.waiting, "a") == (1000 - 7) * BAND + 2  # new sequence
    assert "active" not in await keyspace(client, storage)
    last = (await client.xrevrange(storage.keys.events, count=1))[0][1]
    assert (last[b"event"], last[b"state"], last[b"delay_ms"]) == (b"retry", b"waiting", b"0")


async def test_retry_with_delay_is_scheduled(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    _, token = await claim_one(storage)
    t0 = await now_ms(client)
    await storage.retry("a", token, 5000, ERR, count_attempt=False)
    t1 = await now_ms(client)
    f = await fields(client, storage, "a")
    assert (f["state"], f["attempts_made"], f["deferrals"]) == ("scheduled", "0", "1")
    assert t0 + 5000 <= int(f["scheduled_for"]) <= t1 + 5000
    assert await client.zscore(storage.keys.scheduled, "a") == int(f["scheduled_for"])
    assert not {"active", "waiting"} & await keyspace(client, storage)


# -- cancel, abort, release, rescue, replay --------------------------------------------------

@pytest.mark.parametrize("delay", [None, 60])
async def test_cancel_before_running(storage: Storage, client: redis.asyncio.Redis,
                                     delay: float | None) -> None:
    await storage.enqueue(spec("a", delay=delay))
    assert await storage.cancel("a", "alice", "not needed") is True
    f = await fields(client, storage, "a")
    assert (f["state"], f["cancelled_by"], f["cancel_reason"]) == ("cancelled", "alice", "not needed")
    assert f["cancelled_at"] == f["finished_at"]
    assert await client.zscore(storage.keys.cancelled, "a") == int(f["finished_at"])
    assert not {"waiting", "scheduled"} & await keyspace(client, storage)
    with pytest.raises(JobNotInState):
        await storage.cancel("a", "alice", "again")


async def test_cancel_active_then_abort(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    _, token = await claim_one(storage)
    score = await client.zscore(storage.keys.active, "a")
    assert await storage.cancel("a", "bob", "stop") is False
    f = await fields(client, storage, "a")
    assert (f["state"], f["cancel_requested"], f["cancelled_by"]) == ("active", "1", "bob")
    assert await client.zscore(storage.keys.active, "a") == score
    await storage.abort("a", token)
    f = await fields(client, storage, "a")
    assert f["state"] == "cancelled" and f["cancelled_at"] == f["finished_at"]
    assert await zmembers(client, storage.keys.cancelled) == ["a"]
    assert "active" not in await keyspace(client, storage)


async def test_release_keeps_attempts_and_priority(storage: Storage,
                                                   client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a", priority=-2))
    _, token = await claim_one(storage)
    await storage.release("a", token)
    f = await fields(client, storage, "a")
    assert (f["state"], f["attempts_made"], f["token"]) == ("waiting", "0", "1")
    # back at the place it was claimed from (the first sequence number), not behind the line
    assert await client.zscore(storage.keys.waiting, "a") == 1002 * BAND + 1
    assert "active" not in await keyspace(client, storage)


async def test_rescue_counts_stalls_then_fails(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    await claim_one(storage, lease_ms=1)
    await expire(client, storage, "a")
    assert await storage.rescue(max_stalls=1) == 1
    f = await fields(client, storage, "a")
    assert (f["state"], f["stalls"], f["attempts_made"]) == ("waiting", "1", "0")
    assert await zmembers(client, storage.keys.waiting) == ["a"]
    await claim_one(storage, lease_ms=1)
    await expire(client, storage, "a")
    assert await storage.rescue(max_stalls=1) == 1
    f = await fields(client, storage, "a")
    assert (f["state"], f["stalls"], f["attempts_made"]) == ("failed", "2", "1")
    assert orjson.loads(f["error"])["type"] == "Stalled"
    assert await zmembers(client, storage.keys.failed) == ["a"]
    assert not {"active", "waiting"} & await keyspace(client, storage)
    assert [e[2] for e in await events(client, storage) if e[0] == "rescue"] == ["waiting", "failed"]


async def test_rescue_of_a_cancel_requested_job_cancels_it(storage: Storage,
                                                           client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    await claim_one(storage, lease_ms=1)
    await storage.cancel("a", "u", "r")
    await expire(client, storage, "a")
    assert await storage.rescue(max_stalls=5) == 1
    f = await fields(client, storage, "a")
    assert (f["state"], f["stalls"]) == ("cancelled", "1")
    assert await zmembers(client, storage.keys.cancelled) == ["a"]


async def test_rescue_lock_limits_how_often_it_runs(storage: Storage,
                                                    client: redis.asyncio.Redis) -> None:
    for job_id in ("a", "b"):
        await storage.enqueue(spec(job_id))
    await claim_one(storage, lease_ms=1)
    await expire(client, storage, "a")
    assert await storage.rescue(max_stalls=5, lock_ms=60_000) == 1
    assert "rescue-lock" in await keyspace(client, storage)
    assert 0 < await client.pttl(storage.keys.rescue_lock) <= 60_000
    again, _ = await claim_one(storage, lease_ms=1)
    assert again == "a"  # a rescued job goes back to the head of the line
    await expire(client, storage, "a")
    assert await storage.rescue(max_stalls=5, lock_ms=60_000) == 0  # another holds the lock
    assert await zmembers(client, storage.keys.active) == ["a"]
    assert await storage.rescue(max_stalls=5, lock_ms=0) == 1  # lock_ms 0 skips the lock


async def test_replay_resets_counters(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    _, token = await claim_one(storage)
    await storage.retry("a", token, 0, ERR, count_attempt=False)
    _, token = await claim_one(storage)
    await storage.retry("a", token, 0, ERR)
    _, token = await claim_one(storage)
    await storage.cancel("a", "u", "r")  # flagged while active; fail is final regardless
    await storage.fail("a", token, ERR)
    f = await fields(client, storage, "a")
    assert (f["attempts_made"], f["deferrals"], f["cancel_requested"]) == ("2", "1", "1")
    await storage.replay("a")
    f = await fields(client, storage, "a")
    assert (f["state"], f["attempts_made"], f["stalls"], f["deferrals"]) == ("waiting", "0", "0", "0")
    assert not {"cancel_requested", "cancelled_by", "cancel_reason", "finished_at"} & set(f)
    assert f["token"] == "3"  # tokens never go back: old attempts stay fenced out
    assert await zmembers(client, storage.keys.waiting) == ["a"]
    assert "failed" not in await keyspace(client, storage)


# -- queue operations ----------------------------------------------------------------------

async def test_drain_removes_waiting_and_scheduled_only(storage: Storage,
                                                        client: redis.asyncio.Redis) -> None:
    for job_id in ("run", "done", "w1", "w2"):
        await storage.enqueue(spec(job_id))
    await storage.enqueue(spec("s1", delay=60))
    await claim_one(storage)
    _, token = await claim_one(storage)
    await storage.complete("done", token, b"1")
    assert await storage.drain(limit=2) == 3
    assert await keyspace(client, storage) == {"job:run", "job:done", "active", "completed", "meta",
                                               "events", "marker"}
    drains = [f for _, f in await client.xrange(storage.keys.events) if f[b"event"] == b"drain"]
    assert [f[b"count"] for f in drains] == [b"2", b"1"]
    assert await storage.drain() == 0


async def test_obliterate_refuses_active_jobs_unless_forced(storage: Storage,
                                                            client: redis.asyncio.Redis) -> None:
    for job_id in ("a", "b", "c", "d"):
        await storage.enqueue(spec(job_id))
    await storage.enqueue(spec("s", delay=60))
    _, token = await claim_one(storage)
    await storage.log("a", token, "line", 10)
    _, token = await claim_one(storage)
    await storage.fail("b", token, ERR)
    assert await storage.rescue(max_stalls=5, lock_ms=60_000) == 0  # only takes the lock
    await claim_one(storage)
    await storage.pause()
    before = await dump(client, storage)
    with pytest.raises(ShunterError, match="active jobs"):
        await storage.obliterate()
    assert await dump(client, storage) == before
    assert await storage.obliterate(force=True, limit=2) == 5
    assert await keyspace(client, storage) == set()


async def test_obliterate_idle_queue(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    _, token = await claim_one(storage)
    await storage.complete("a", token, b"1")
    await storage.enqueue(spec("b"))
    assert await storage.obliterate() == 2
    assert await keyspace(client, storage) == set()


# -- a cancel requested while the attempt ran wins over retry and hand-back ---------------

@pytest.mark.parametrize("verb", ["retry", "release"])
async def test_cancel_requested_during_the_attempt_ends_it_cancelled(
        storage: Storage, client: redis.asyncio.Redis, verb: str) -> None:
    await storage.enqueue(spec("a"))
    _, token = await claim_one(storage)
    assert await storage.cancel("a", "ops", "stop it") is False  # active: flagged only
    if verb == "retry":
        await storage.retry("a", token, 0, b'{"type":"E","message":"m","traceback":""}')
    else:
        await storage.release("a", token)
    f = await fields(client, storage, "a")
    assert (f["state"], f["cancelled_by"], f["cancel_reason"]) == ("cancelled", "ops", "stop it")
    assert await zmembers(client, storage.keys.cancelled) == ["a"]
    assert await zmembers(client, storage.keys.waiting) == []
    assert await zmembers(client, storage.keys.scheduled) == []
    last = (await client.xrevrange(storage.keys.events, count=1))[0][1]
    assert (last[b"event"], last[b"state"]) == (verb.encode(), b"cancelled")


# -- foreign data in the scheduled and active indexes fails that job, not the script ------

async def test_promote_fails_a_scheduled_id_whose_key_is_not_a_hash(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("good", delay=0.001))
    await client.zadd(storage.keys.scheduled, {"bad": 0})
    await client.set(storage.keys.job("bad"), "not a job")
    await eventually(lambda: storage.promote(), message="the good job promoted")
    assert orjson.loads((await fields(client, storage, "bad"))["error"])["type"] == "DecodeError"
    assert await zmembers(client, storage.keys.failed) == ["bad"]
    assert await zmembers(client, storage.keys.waiting) == ["good"]


async def test_rescue_fails_an_active_id_whose_key_is_not_a_hash(
        storage: Storage, client: redis.asyncio.Redis) -> None:
    await client.zadd(storage.keys.active, {"bad": 0})
    await client.rpush(storage.keys.job("bad"), "a list, not a job")
    assert await storage.rescue(max_stalls=1) == 1
    assert (await fields(client, storage, "bad"))["state"] == "failed"
    assert await zmembers(client, storage.keys.failed) == ["bad"]
    assert await zmembers(client, storage.keys.active) == []


# -- every settle records which attempt settled the job -------------------------------------

@pytest.mark.parametrize("verb", ["complete", "retry", "retry-later", "fail", "abort", "release",
                                  "retry-cancelled", "release-cancelled"])
async def test_a_settle_records_the_token_that_settled_it(storage: Storage,
                                                          client: redis.asyncio.Redis,
                                                          verb: str) -> None:
    await storage.enqueue(spec("a"))
    _, first = await claim_one(storage)
    await storage.release("a", first)  # the first attempt settled (handed back) ...
    assert (await fields(client, storage, "a"))["settled_token"] == str(first)
    _, token = await claim_one(storage)  # ... and the second settles with its own token
    if verb.endswith("-cancelled") or verb == "abort":
        await storage.cancel("a", "u", "r")
    settle = {
        "complete": lambda: storage.complete("a", token, b"1"),
        "retry": lambda: storage.retry("a", token, 0, ERR),
        "retry-later": lambda: storage.retry("a", token, 60_000, ERR),
        "fail": lambda: storage.fail("a", token, ERR),
        "abort": lambda: storage.abort("a", token),
        "release": lambda: storage.release("a", token),
        "retry-cancelled": lambda: storage.retry("a", token, 0, ERR),
        "release-cancelled": lambda: storage.release("a", token),
    }
    await settle[verb]()
    assert (await fields(client, storage, "a"))["settled_token"] == str(token) == "2"


async def test_a_rescue_records_no_settled_token(storage: Storage, client: redis.asyncio.Redis) -> None:
    await storage.enqueue(spec("a"))
    await claim_one(storage, lease_ms=1)
    await expire(client, storage, "a")
    assert await storage.rescue(max_stalls=5) == 1
    assert "settled_token" not in await fields(client, storage, "a")
