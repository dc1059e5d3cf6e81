"""A claim whose reply is lost must not orphan its batch (issue 8, item 3).

When the connection drops after the claim script ran on the server, the client sends the
same call again (redis-py's own retry, or the worker's). Without a claim request id the
second call took a second batch, and the first sat in ``active`` with nobody running it
until rescue counted a stall against each job: jobs that never ran could be dead-lettered.
With the id, the re-sent call returns the same batch.

The keyspace tests call the scripts directly; the cut-connection tests put a real TCP
proxy (faults/proxy.py) between a real worker and a redis-server of their own, and
swallow the reply of the claim (or complete-and-claim) script after it ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio

from faults.proxy import Proxy
from faults.redis_server import RedisServer
from shunter import Job, Queue, State, Worker
from shunter.storage import Storage
from shunter.storage.scripts import SCRIPTS

from .conftest import eventually
from .worker_support import events

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


async def test_a_resent_claim_returns_the_same_batch(queue: Queue, storage: Storage) -> None:
    for n in range(5):
        await queue.add("t", {"n": n})
    first = await storage.claim(3, 60_000, "w1", "claim-1")
    again = await storage.claim(3, 60_000, "w1", "claim-1")
    assert [j[b"id"] for j in again.jobs] == [j[b"id"] for j in first.jobs]
    assert [j[b"token"] for j in again.jobs] == [j[b"token"] for j in first.jobs] == [b"1"] * 3
    assert (await queue.counts())["active"] == 3  # nothing more was claimed
    assert len(await events(storage, name="claim")) == 3  # one claim event per job
    fresh = await storage.claim(3, 60_000, "w1", "claim-2")  # a new id claims the rest
    assert len(fresh.jobs) == 2
    assert {j[b"id"] for j in fresh.jobs}.isdisjoint({j[b"id"] for j in first.jobs})


async def test_a_replay_skips_jobs_that_left_active(queue: Queue, storage: Storage) -> None:
    for n in range(2):
        await queue.add("t", {"n": n})
    first = await storage.claim(2, 60_000, "w1", "claim-x")
    done = first.jobs[0]
    await storage.complete(done[b"id"].decode(), int(done[b"token"]), b"1")
    again = await storage.claim(2, 60_000, "w1", "claim-x")
    assert [j[b"id"] for j in again.jobs] == [first.jobs[1][b"id"]]


async def test_claims_without_an_id_are_not_recorded(queue: Queue, storage: Storage,
                                                     client: redis.asyncio.Redis) -> None:
    await queue.add("t")
    await storage.claim(1, 60_000, "w1")
    assert await client.keys(f"{storage.keys.prefix}claim:*") == []


async def test_the_claim_record_lives_one_lease(queue: Queue, storage: Storage,
                                                client: redis.asyncio.Redis) -> None:
    await queue.add("t")
    await storage.claim(1, 5_000, "w1", "claim-ttl")
    ttl = await client.pttl(storage.keys.claim("claim-ttl"))
    assert 0 < ttl <= 5_000


async def test_claim_events_name_the_worker(queue: Queue, storage: Storage) -> None:
    job = await queue.add("t")
    await storage.claim(1, 60_000, "worker-7")
    (claim,) = await events(storage, job.id, "claim")
    assert claim["worker"] == "worker-7" and claim["token"] == "1"


# -- a real cut connection ------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer()
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[Proxy]:
    with Proxy("127.0.0.1", server.port) as p:
        yield p


@pytest.fixture
async def direct(server: RedisServer, queue_name: str) -> AsyncIterator[Queue]:
    q = Queue(queue_name, server.url)
    # Loaded up front: a NOSCRIPT reply (the script did not run) would re-arm the proxy's cut.
    for script in SCRIPTS.values():
        await q.storage.client.script_load(script.source)
    yield q
    await q.obliterate(force=True)
    await q.close()


async def run_through(proxy: Proxy, direct: Queue, jobs: int, arm: bytes,
                      client: Any = None) -> tuple[list[Job], list[str]]:
    """Enqueue ``jobs`` directly, start a worker that talks through the proxy, swallow the
    reply of the next script call whose request contains ``arm``, and drain."""
    ran: list[str] = []

    async def work(job: Job) -> int:
        ran.append(job.id)
        await asyncio.sleep(0.01)
        return 1

    added = [await direct.add("work", {"n": n}) for n in range(jobs)]
    proxy.drop_reply_after(arm)
    worker = Worker(direct.name, {"work": work}, client or proxy.url, lease=2.0, concurrency=4,
                    max_stalls=0, block_timeout=0.2)
    task = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        async def drained() -> bool:
            counts = await direct.counts()
            return counts["completed"] + counts["failed"] == jobs

        await eventually(drained, 30, 0.05, "every job finished")
        assert proxy.dropped == 1, "the proxy swallowed a reply"
    finally:
        await worker.close()
        await asyncio.wait_for(task, 30)
        if client is not None:
            await client.aclose()
    return [await direct.get_job(j.id) for j in added], ran


def assert_each_ran_once(finished: list[Job], ran: list[str]) -> None:
    assert [j.state for j in finished] == [State.COMPLETED] * len(finished)
    assert [j.stalls for j in finished] == [0] * len(finished), "a job stalled: its claim was orphaned"
    assert sorted(ran) == sorted(j.id for j in finished), "each job ran exactly once"


@pytest.mark.parametrize("retries", ["worker", "redis-py"])
async def test_a_claim_cut_after_it_ran_orphans_nothing(proxy: Proxy, direct: Queue,
                                                        retries: str) -> None:
    """The claim ran, its reply was lost: the same batch comes back (the worker re-sends
    the claim id, or redis-py's retry re-sends the same call), so no job stalls."""
    client = None
    if retries == "redis-py":  # a user's client: redis-py retries a dropped connection itself
        client = redis.asyncio.Redis(host="127.0.0.1", port=proxy.port)
    finished, ran = await run_through(proxy, direct, 6, SCRIPTS["claim"].sha.encode(), client)
    assert_each_ran_once(finished, ran)
    claims = await events(direct.storage, name="claim")
    assert len(claims) == 6, "each job was claimed once"


async def test_a_complete_and_claim_cut_after_it_ran_orphans_nothing(proxy: Proxy,
                                                                     direct: Queue) -> None:
    """The batched ack (complete + claim next) ran, its reply was lost: the completions are
    recognised as landed and the claimed batch is fetched again with the same id."""
    finished, ran = await run_through(proxy, direct, 12, SCRIPTS["complete"].sha.encode())
    assert_each_ran_once(finished, ran)
    assert len(await events(direct.storage, name="complete")) == 12


async def test_a_lost_claim_is_replayed_on_its_own_queue(proxy: Proxy, direct: Queue,
                                                         server: RedisServer) -> None:
    """A worker of two queues: the claim whose reply is lost is re-sent, with its id, to the
    queue it was made on. Weighted 1:1000 so the first claim (the one cut) is almost always
    the second queue's; mapped to the wrong queue, its batch would be orphaned and stall."""
    other = Queue(f"{direct.name}-other", server.url)
    ran: list[str] = []

    async def work(job: Job) -> int:
        ran.append(job.id)
        return 1

    try:
        added = [await direct.add("work", {"n": n}) for n in range(6)]
        proxy.drop_reply_after(SCRIPTS["claim"].sha.encode())
        worker = Worker({other.name: 1, direct.name: 1000}, {"work": work}, proxy.url, lease=2.0,
                        concurrency=4, max_stalls=0, block_timeout=0.2)
        task = asyncio.ensure_future(worker.run(handle_signals=False))
        try:
            async def drained() -> bool:
                counts = await direct.counts()
                return counts["completed"] + counts["failed"] == 6

            await eventually(drained, 30, 0.05, "every job finished")
            assert proxy.dropped == 1, "the proxy swallowed a reply"
        finally:
            await worker.close()
            await asyncio.wait_for(task, 30)
        finished = [await direct.get_job(j.id) for j in added]
        assert_each_ran_once([j for j in finished if j is not None], ran)
        assert len(await events(direct.storage, name="claim")) == 6, "each job was claimed once"
    finally:
        await other.obliterate(force=True)
        await other.close()
