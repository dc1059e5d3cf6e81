"""The blocking producer ``shunter.sync.Queue`` and its jobs ``shunter.sync.Job``: the same
behaviour and validation as the asyncio Queue, from plain threads, with no event loop.
Workers run in a background thread with their own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from shunter import (
    Backoff,
    BulkAddError,
    InvalidInput,
    Job,
    JobFailed,
    JobNotFound,
    JobNotInState,
    PayloadTooLarge,
    Queue,
    Retention,
    State,
    UnrecoverableError,
    Worker,
    WrongKeyType,
)
from shunter import sync as shunter_sync
from shunter.job import JobSnapshot

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis


async def _obliterate(name: str) -> None:
    async with Queue(name, REDIS_URL) as q:
        await q.obliterate(force=True)


@pytest.fixture
def rclient() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def sq(queue_name: str) -> Iterator[shunter_sync.Queue]:
    q = shunter_sync.Queue(queue_name, REDIS_URL)
    yield q
    q.close()
    asyncio.run(_obliterate(queue_name))


def keyspace(client: redis.Redis, q: shunter_sync.Queue) -> list[bytes]:
    return sorted(client.scan_iter(match=q.keys.prefix + "*"))


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class ThreadWorker:
    """A Worker running in its own thread and event loop, as next to a sync web app."""

    def __init__(self, queue: str, tasks: dict[str, Any], **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = Worker(queue, tasks, REDIS_URL, lease=2, **options)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.worker.run(handle_signals=False))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.worker.close(), self.loop).result(10)
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def thread_worker(queue_name: str) -> Iterator[Callable[..., ThreadWorker]]:
    started: list[ThreadWorker] = []

    def start(tasks: dict[str, Any], **options: Any) -> ThreadWorker:
        started.append(ThreadWorker(queue_name, tasks, **options))
        return started[-1]

    yield start
    for running in started:
        with contextlib.suppress(Exception):
            running.stop()


# -- add --------------------------------------------------------------------------------------

def test_add_and_get_job(sq: shunter_sync.Queue) -> None:
    job = sq.add("send", {"to": "x"})
    assert not job.existing and job.state is State.WAITING and job.task == "send"
    got = sq.get_job(job.id)
    assert (got.task, got.data, got.state, got.max_attempts) == ("send", {"to": "x"}, State.WAITING, 3)
    assert got.created_at is not None


def test_add_with_options(sq: shunter_sync.Queue, rclient: redis.Redis) -> None:
    job = sq.add("t", [1], job_id="sync-1", delay=60, priority=-5, max_attempts=4,
                 backoff=Backoff.exponential(2, jitter=0), timeout=3,
                 keep_completed=Retention(count=2, age=10), keep_failed=7)
    assert job.id == "sync-1" and job.state is State.SCHEDULED
    got = sq.get_job("sync-1")
    assert (got.priority, got.max_attempts, got.timeout) == (-5, 4, 3)
    assert got.backoff == Backoff.exponential(2, jitter=0)
    raw = rclient.hgetall(sq.keys.job("sync-1"))
    assert (raw[b"keep_completed"], raw[b"keep_failed"]) == (b"2:10000", b"7:-1")
    when = datetime.now(UTC) + timedelta(minutes=10)
    at = sq.get_job(sq.add("t", run_at=when).id)
    assert at.state is State.SCHEDULED and at.scheduled_for is not None
    assert abs((at.scheduled_for - when).total_seconds()) < 0.002


def fields_of(job: JobSnapshot | None) -> dict[str, Any]:
    fields = {name: getattr(job, name) for name in JobSnapshot.__slots__
              if not name.startswith("_") and name != "existing"}
    assert len(fields) > 20
    return fields


def test_add_returns_the_job_as_stored(sq: shunter_sync.Queue) -> None:
    jobs = [sq.add("t", {"n": 1}), sq.add("u", [2], job_id="s", delay=60, priority=3, max_attempts=7,
                                           timeout=1.5, backoff=Backoff.fixed(4))]
    jobs += sq.add_bulk([{"task": "v", "data": "x", "max_attempts": 2}, {"task": "w", "job_id": "s"}])
    jobs.append(sq.add("other", job_id="s"))
    assert [j.existing for j in jobs] == [False, False, False, True, True]
    for job in jobs:
        assert job.created_at is not None
        assert fields_of(job) == fields_of(sq.get_job(job.id))
    assert (jobs[-1].task, jobs[-1].data, jobs[-1].max_attempts) == ("u", [2], 7)


def test_foreign_job_keys(sq: shunter_sync.Queue, rclient: redis.Redis) -> None:
    rclient.set(sq.keys.job("taken"), "x")
    with pytest.raises(WrongKeyType, match="'taken' was not added"):
        sq.add("t", job_id="taken")
    with pytest.raises(BulkAddError) as info:
        sq.add_bulk([{"task": "t", "job_id": "a"}, {"task": "t", "job_id": "taken"},
                     {"task": "t", "job_id": "b"}])
    assert list(info.value.errors) == ["taken"]
    assert [j and j.id for j in info.value.jobs] == ["a", None, "b"]
    assert sq.counts()["waiting"] == 2 and rclient.get(sq.keys.job("taken")) == b"x"


def test_priority_order(sq: shunter_sync.Queue, rclient: redis.Redis) -> None:
    for job_id, priority in [("a", 0), ("b", 2), ("c", 0), ("d", -1), ("e", 2)]:
        sq.add("t", job_id=job_id, priority=priority)
    assert [x.decode() for x in rclient.zrange(sq.keys.waiting, 0, -1)] == ["b", "e", "a", "c", "d"]


def test_existing_id(sq: shunter_sync.Queue) -> None:
    first = sq.add("t", {"v": 1}, job_id="dup")
    again = sq.add("t", {"v": 2}, job_id="dup", delay=10)
    assert not first.existing and again.existing
    assert again.state is State.WAITING
    assert sq.get_job("dup").data == {"v": 1}
    sq.cancel("dup")
    assert sq.add("t", job_id="dup").state is State.CANCELLED
    assert sq.counts()["cancelled"] == 1 and sq.counts()["waiting"] == 0


def test_sync_and_async_producers_share_ids(sq: shunter_sync.Queue, queue_name: str) -> None:
    async def add_async() -> Job:
        async with Queue(queue_name, REDIS_URL) as q:
            return await q.add("t", {"from": "async"}, job_id="shared")

    assert not sq.add("t", {"from": "sync"}, job_id="shared").existing
    assert asyncio.run(add_async()).existing
    assert sq.get_job("shared").data == {"from": "sync"}


# -- add_bulk ---------------------------------------------------------------------------------

def test_add_bulk(sq: shunter_sync.Queue) -> None:
    sq.add("t", job_id="old")
    jobs = sq.add_bulk([{"task": "a", "data": 1}, {"task": "b", "job_id": "old"},
                        {"task": "c", "job_id": "n1", "delay": 30}, {"task": "d", "job_id": "n1"}])
    assert [j.existing for j in jobs] == [False, True, False, True]
    assert [j.state for j in jobs] == [State.WAITING, State.WAITING, State.SCHEDULED, State.SCHEDULED]
    assert sq.get_job(jobs[0].id).data == 1
    assert sq.add_bulk([]) == []
    counts = sq.counts()
    assert (counts["waiting"], counts["scheduled"]) == (2, 1)


def test_add_bulk_bad_entry_writes_nothing(sq: shunter_sync.Queue, rclient: redis.Redis) -> None:
    for bad in ([{"task": "t"}, {"task": "t", "data": math.inf}],
                [{"task": "t"}, {"task": "t", "when": 5}],
                [{"task": "t"}] * 10_001):
        with pytest.raises(InvalidInput):
            sq.add_bulk(bad)
    assert keyspace(rclient, sq) == []


# -- validation (same rules as the asyncio Queue) -----------------------------------------------

@pytest.mark.parametrize("args,options,error", [
    (("t", math.nan), {}, InvalidInput),
    (("t", {1: 2}), {}, InvalidInput),
    (("t", datetime.now(UTC)), {}, InvalidInput),
    (("t", 2**64), {}, InvalidInput),
    (("t", "x" * 600_000), {}, PayloadTooLarge),
    (("t",), {"job_id": "a:b"}, InvalidInput),
    (("t",), {"job_id": "\x1b[31m"}, InvalidInput),
    (("t",), {"job_id": 7}, InvalidInput),
    (("bad task",), {}, InvalidInput),
    (("t",), {"delay": -1}, InvalidInput),
    (("t",), {"delay": 1, "run_at": datetime.now(UTC)}, InvalidInput),
    (("t",), {"run_at": datetime.now() + timedelta(hours=1)}, InvalidInput),  # naive
    (("t",), {"priority": 1001}, InvalidInput),
    (("t",), {"max_attempts": 0}, InvalidInput),
    (("t",), {"timeout": math.nan}, InvalidInput),
    (("t",), {"backoff": lambda a, e: 1}, InvalidInput),
    (("t",), {"keep_completed": -1}, InvalidInput),
    (("t",), {"attempts": 3}, TypeError),  # one name for the attempt limit: max_attempts
], ids=["nan", "int-key", "datetime", "bigint", "too-large", "colon-id", "ansi-id", "int-id",
        "task", "delay", "delay+run_at", "naive", "priority", "max_attempts", "timeout", "backoff",
        "keep", "attempts"])
def test_validation(sq: shunter_sync.Queue, rclient: redis.Redis, args: tuple[Any, ...],
                    options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        sq.add(*args, **options)
    assert isinstance(info.value, ValueError) or error is TypeError
    assert keyspace(rclient, sq) == []


def test_small_payload_cap(queue_name: str, rclient: redis.Redis) -> None:
    with shunter_sync.Queue(queue_name, REDIS_URL, max_payload_bytes=1024) as q:
        q.add("t", "x" * 1022)
        with pytest.raises(PayloadTooLarge):
            q.add("t", "x" * 1023)
        assert q.counts()["waiting"] == 1
    asyncio.run(_obliterate(queue_name))


def test_bad_ids_on_reads(sq: shunter_sync.Queue) -> None:
    for bad in ("", "a b", "{x}", "*"):
        with pytest.raises(InvalidInput):
            sq.get_job(bad)
        with pytest.raises(InvalidInput):
            sq.cancel(bad)


# -- reads and cancel ---------------------------------------------------------------------------

def test_get_job_not_found(sq: shunter_sync.Queue) -> None:
    assert sq.get_job("nope") is None
    gone = sq.add("t", keep_failed=0)
    assert gone.cancel() is True  # keep_failed=0: deleted as it is cancelled
    assert sq.get_job(gone.id) is None
    with pytest.raises(JobNotFound, match=gone.id):
        gone.refresh()
    with pytest.raises(JobNotFound, match=gone.id):
        gone.wait(timeout=1)


def test_counts_and_cancel(sq: shunter_sync.Queue, queue_name: str) -> None:
    assert sq.counts() == {"waiting": 0, "scheduled": 0, "active": 0, "completed": 0,
                           "failed": 0, "cancelled": 0, "paused": 0}
    w = sq.add("t")
    s = sq.add("t", delay=60)
    assert sq.cancel(w.id, by="django-admin", reason="duplicate") is True
    assert sq.cancel(s.id) is True
    got = sq.get_job(w.id)
    assert got.state is State.CANCELLED and got.cancelled_at is not None
    assert (got.cancelled_by, got.cancel_reason) == ("django-admin", "duplicate")
    with pytest.raises(JobNotInState):
        sq.cancel(w.id)
    with pytest.raises(JobNotFound):
        sq.cancel("never")
    active = sq.add("t")

    async def claim() -> None:
        async with Queue(queue_name, REDIS_URL) as q:
            await q.storage.claim(1, 60_000, "tester")

    asyncio.run(claim())
    assert sq.cancel(active.id) is False
    assert active.refresh().cancel_requested
    counts = sq.counts()
    assert (counts["cancelled"], counts["active"], counts["waiting"], counts["scheduled"]) == (2, 1, 0, 0)


# -- waiting for results with a worker in another thread -----------------------------------------

def test_wait_with_thread_worker(sq: shunter_sync.Queue, thread_worker: Any) -> None:
    def double(job: Job) -> int:
        return int(job.data) * 2

    async def refuse(job: Job) -> None:
        raise UnrecoverableError("refused")

    thread_worker({"double": double, "refuse": refuse})
    job = sq.add("double", 21)
    assert sq.wait(job.id, timeout=10) == 42
    bad = sq.add("refuse")
    with pytest.raises(JobFailed, match="refused") as info:
        sq.wait(bad.id, timeout=10)
    assert info.value.job.state is State.FAILED
    assert sq.get_job(job.id).state is State.COMPLETED


def test_wait_cancelled_and_timeout(sq: shunter_sync.Queue) -> None:
    job = sq.add("t")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        sq.wait(job.id, timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 3
    sq.cancel(job.id, by="ops", reason="stop")
    with pytest.raises(JobFailed, match="cancelled by ops: stop"):
        sq.wait(job.id, timeout=5)
    with pytest.raises(JobNotFound):
        sq.wait("missing", timeout=1)


def test_burst_worker_in_thread(sq: shunter_sync.Queue, queue_name: str) -> None:
    def upper(job: Job) -> str:
        return str(job.data).upper()

    ids = [j.id for j in sq.add_bulk([{"task": "t", "data": w} for w in ("a", "b", "c")])]
    thread = threading.Thread(target=lambda: asyncio.run(
        Worker(queue_name, {"t": upper}, REDIS_URL, lease=2).run(burst=True, handle_signals=False)))
    thread.start()
    results = [sq.wait(i, timeout=10) for i in ids]
    thread.join(30)
    assert results == ["A", "B", "C"] and not thread.is_alive()
    assert sq.counts()["completed"] == 3


# -- shunter.sync.Job: blocking methods ---------------------------------------------------------

def test_jobs_are_blocking(sq: shunter_sync.Queue) -> None:
    job = sq.add("t")
    assert isinstance(job, shunter_sync.Job) and not isinstance(job, Job)
    assert isinstance(sq.get_job(job.id), shunter_sync.Job)
    assert all(isinstance(j, shunter_sync.Job) for j in sq.add_bulk([{"task": "t"}]))
    for method in ("refresh", "wait", "logs", "cancel", "replay"):
        assert not asyncio.iscoroutinefunction(getattr(job, method))
    assert repr(job) == f"<Job {sq.name}/{job.id} t waiting>"


def test_job_refresh_wait_and_logs(sq: shunter_sync.Queue, thread_worker: Any) -> None:
    def double(job: Job) -> int:
        job.log_sync(f"doubling {job.data}")
        job.update_progress_sync({"percent": 100})
        return int(job.data) * 2

    async def refuse(job: Job) -> None:
        await job.log("looking")
        raise UnrecoverableError("refused")

    job = sq.add("double", 21)
    bad = sq.add("refuse")
    thread_worker({"double": double, "refuse": refuse})
    wait_until(lambda: job.refresh().finished)
    assert job.refresh() is job  # re-read in place
    assert (job.state, job.result, job.progress) == (State.COMPLETED, 42, {"percent": 100})
    assert job.attempts_made == 1
    assert job.finished_at is not None and job.worker is not None
    assert job.wait(timeout=10) == 42
    assert job.logs() == ["doubling 21"] and job.logs(1) == []
    with pytest.raises(JobFailed, match="UnrecoverableError: refused") as info:
        bad.wait(timeout=10)
    assert info.value.job is bad and bad.state is State.FAILED
    assert bad.error is not None and bad.error.message == "refused"
    assert bad.logs() == ["looking"]


def test_job_cancel_and_replay(sq: shunter_sync.Queue, thread_worker: Any) -> None:
    runs: list[str] = []

    def flaky(job: Job) -> str:
        runs.append(job.id)
        if len(runs) == 1:
            raise UnrecoverableError("first run fails")
        return f"run {len(runs)}"

    later = sq.add("flaky", delay=60)
    assert later.cancel(by="ops", reason="not needed") is True
    assert later.state is State.SCHEDULED  # a snapshot: the call does not re-read it
    assert later.refresh().state is State.CANCELLED
    assert (later.cancelled_by, later.cancel_reason) == ("ops", "not needed")
    with pytest.raises(JobNotInState):
        later.cancel()
    with pytest.raises(JobFailed, match="cancelled by ops: not needed"):
        later.wait(timeout=1)

    job = sq.add("flaky", max_attempts=5)
    with pytest.raises(JobNotInState):
        job.replay()  # only failed and cancelled jobs are replayed
    thread_worker({"flaky": flaky})
    with pytest.raises(JobFailed, match="first run fails"):
        job.wait(timeout=10)
    job.replay()
    assert job.refresh().state in (State.WAITING, State.ACTIVE, State.COMPLETED)
    assert job.wait(timeout=10) == "run 2"
    assert job.attempts_made == 1  # the replay started again from attempt 1

    later.replay()  # a cancelled job too
    assert later.wait(timeout=10) == "run 3"
    assert later.cancelled_by is None
    assert runs == [job.id, job.id, later.id]


def test_pause_resume_counts_job_ids_settings(sq: shunter_sync.Queue, queue_name: str) -> None:
    def burst() -> None:
        asyncio.run(Worker(queue_name, {"t": lambda job: "done"}, REDIS_URL, lease=2)
                    .run(burst=True, handle_signals=False))

    sq.pause()
    assert sq.counts()["paused"] == 1
    jobs = sq.add_bulk([{"task": "t", "job_id": f"j{n}"} for n in range(3)])
    burst()  # returns at once: a paused queue has nothing to claim
    assert sq.job_ids("waiting") == ["j0", "j1", "j2"] and sq.job_ids(State.COMPLETED) == []
    sq.resume()
    assert sq.counts()["paused"] == 0
    burst()
    assert [j.refresh().result for j in jobs] == ["done"] * 3
    assert sorted(sq.job_ids("completed")) == ["j0", "j1", "j2"] and sq.job_ids("waiting") == []
    assert sq.job_ids("completed", 0, 0) == [sq.job_ids("completed")[0]]
    counts = sq.counts()
    assert (counts["waiting"], counts["completed"], counts["paused"]) == (0, 3, 0)
    with pytest.raises(InvalidInput, match="unknown state"):
        sq.job_ids("done")
    assert sq.settings() == {"max_events": None, "max_payload_bytes": None, "concurrency": None,
        "rate": None, "group_concurrency": None, "group_rate": None}


# -- threads ------------------------------------------------------------------------------------

def test_threads_share_one_queue(sq: shunter_sync.Queue, rclient: redis.Redis) -> None:
    barrier = threading.Barrier(20)

    def add(i: int) -> Job:
        barrier.wait(10)
        return sq.add("t", {"thread": i}, job_id="one")

    with ThreadPoolExecutor(20) as pool:
        jobs = list(pool.map(add, range(20)))
    assert sum(not j.existing for j in jobs) == 1
    assert sum(j.existing for j in jobs) == 19
    assert rclient.zrange(sq.keys.waiting, 0, -1) == [b"one"]
    assert list(rclient.scan_iter(match=sq.keys.prefix + "job:*")) == [sq.keys.job("one").encode()]
    events = [f for _, f in rclient.xrange(sq.keys.events) if f[b"event"] == b"enqueue"]
    assert len(events) == 1


def test_threads_with_own_queues(queue_name: str, sq: shunter_sync.Queue) -> None:
    def work(i: int) -> list[bool]:
        with shunter_sync.Queue(queue_name, REDIS_URL) as q:
            return [q.add("t", job_id=f"id-{n}").existing for n in range(10)] + [
                q.add("t", data=i).existing]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(work, range(20)))
    created_shared = sum(not e for r in results for e in r[:10])
    assert created_shared == 10  # each of the 10 shared ids created exactly once
    assert all(r[10] is False for r in results)  # ids of their own are always new
    assert sq.counts()["waiting"] == 30


def test_passed_client_is_not_closed(queue_name: str, rclient: redis.Redis) -> None:
    q = shunter_sync.Queue(queue_name, rclient)
    q.add("t", job_id="x")
    q.close()
    assert rclient.ping()
    assert rclient.exists(q.keys.job("x")) == 1
    asyncio.run(_obliterate(queue_name))


# -- connections --------------------------------------------------------------------------------

def _named(name: str) -> str:
    """REDIS_URL with a client name, so this test's connections can be told apart."""
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}client_name={name}"


def _connections(rclient: redis.Redis, name: str) -> int:
    return sum(1 for c in rclient.client_list() if c.get("name") == name)


def test_close_closes_every_connection(queue_name: str, rclient: redis.Redis) -> None:
    name = f"sq-{uuid.uuid4().hex[:12]}"
    q = shunter_sync.Queue(queue_name, _named(name))
    job = q.add("t", {"n": 1})
    with ThreadPoolExecutor(8) as pool:  # threads at once: the blocking pool grows
        list(pool.map(lambda i: [q.add("t", i) for _ in range(20)], range(8)))
    q.add_bulk([{"task": "t"}] * 300)
    # the jobs' methods use the queue's connections
    assert job.refresh().data == {"n": 1} and job.logs() == []
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.05)
    assert _connections(rclient, name) >= 1
    q.close()
    wait_until(lambda: _connections(rclient, name) == 0)
    q.close()  # twice is fine

    # a client passed in stays open; what the queue opened itself does not
    user = redis.Redis.from_url(_named(name))
    with shunter_sync.Queue(queue_name, user) as q:
        q.add("t", job_id="mine").refresh()
    wait_until(lambda: _connections(rclient, name) == 1)
    assert user.ping()
    user.close()
    wait_until(lambda: _connections(rclient, name) == 0)
    asyncio.run(_obliterate(queue_name))



def test_pause_resume_and_read_a_group(sq: shunter_sync.Queue) -> None:
    sq.add("t", 1, group="tenant:1")
    sq.add("t", 2, group="tenant:1")
    sq.pause_group("tenant:1")
    info = sq.group("tenant:1")
    assert (info.waiting, info.paused, info.state) == (2, True, "paused")
    sq.resume_group("tenant:1")
    assert sq.group("tenant:1").state == "ready"
    with pytest.raises(InvalidInput):
        sq.pause_group("has space")
