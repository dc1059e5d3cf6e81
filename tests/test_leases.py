"""Leases and fencing: a blocked event loop keeps its lease, a lost lease can never commit,
dead workers' jobs are rescued, SIGTERM hands work back cleanly, and max_stalls ends
jobs whose workers keep dying."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from shunter import Job, JobNotInState, LeaseLost, Queue, State
from shunter.storage import Storage

from .conftest import REDIS_URL, eventually
from .worker_support import ThreadWorker, events, settled

pytestmark = pytest.mark.redis

SRC = str(Path(__file__).resolve().parents[1] / "src")


async def expire_and_rescue(storage: Storage, client: redis.asyncio.Redis, job_id: str,
                            max_stalls: int = 5) -> None:
    """Make the job's lease run out now and rescue it, as if its worker had frozen. A renewal
    can slip in between the two calls; then try again."""

    async def attempt() -> bool:
        await client.zadd(storage.keys.active, {job_id: 0}, xx=True)
        return await storage.rescue(max_stalls=max_stalls, lock_ms=0) == 1

    await eventually(attempt, 5, message="lease expired and rescued")


# -- a blocked loop keeps its lease -------------------------------------------------------------

async def test_blocking_the_loop_for_three_leases_keeps_the_lease(queue: Queue,
                                                                 start_worker: Any) -> None:
    claimed = asyncio.Event()
    go = asyncio.Event()

    async def blocker(job: Job) -> str:
        claimed.set()
        await go.wait()
        time.sleep(3.0)  # CPU-bound or blocking code on the loop: 3x the lease
        return "survived"

    def elsewhere(job: Job) -> str:
        return "ran twice"

    job = await queue.add("blocker", max_attempts=3)
    a = start_worker({"blocker": blocker}, lease=1.0)
    await eventually(claimed.is_set, 5)
    # A second worker, on its own loop, rescues expired leases every 0.1 s.
    b = ThreadWorker(queue.name, {"blocker": elsewhere}, lease=0.2)
    try:
        await eventually(lambda: b.worker.server is not None, 5, message="worker b started")
        go.set()
        assert await job.wait(timeout=10) == "survived"
    finally:
        await b.stop()
    done = await queue.get_job(job.id)
    claims = await events(queue.storage, job.id, "claim")
    assert [c["token"] for c in claims] == ["1"]
    assert done.stalls == 0 and done.attempts_made == 1
    assert await events(queue.storage, job.id, "rescue") == []
    assert b.worker.counters["completed"] == 0
    assert a.worker.loop_lag >= 2.0
    assert a.worker.counters["lease_lost"] == 0


# -- fencing ------------------------------------------------------------------------------------

async def test_fenced_writes_with_a_stale_token_are_refused(storage: Storage,
                                                           client: redis.asyncio.Redis,
                                                           queue: Queue) -> None:
    job = await queue.add("t")
    first = await storage.claim(1, 60_000, "worker-a")
    assert first.jobs[0][b"token"] == b"1"
    await expire_and_rescue(storage, client, job.id)
    second = await storage.claim(1, 60_000, "worker-b")
    assert second.jobs[0][b"token"] == b"2"

    stale = [
        storage.complete(job.id, 1, b'"stale"'),
        storage.retry(job.id, 1, 0, b"{}"),
        storage.fail(job.id, 1, b"{}"),
        storage.release(job.id, 1),
        storage.abort(job.id, 1),
        storage.progress(job.id, 1, b"50"),
        storage.log(job.id, 1, "stale line", 100),
    ]
    for write in stale:
        with pytest.raises(LeaseLost):
            await write
    assert await storage.renew(60_000, [(job.id, 1), (job.id, 2)]) == [-3, 1]
    now = await queue.get_job(job.id)
    assert (now.state, now.result, now.progress, now.worker) == (State.ACTIVE, None, None, "worker-b")
    assert now.stalls == 1 and now.attempts_made == 0 and await now.logs() == []

    await storage.complete(job.id, 2, b'"fresh"')
    with pytest.raises(LeaseLost):  # still the wrong token, after the job finished too
        await storage.complete(job.id, 1, b'"stale"')
    with pytest.raises(JobNotInState):  # the right token, but the job is no longer active
        await storage.complete(job.id, 2, b'"again"')
    assert (await queue.get_job(job.id)).result == "fresh"


async def test_late_completion_after_takeover_is_rejected(queue: Queue, start_worker: Any,
                                                         client: redis.asyncio.Redis) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_a(job: Job) -> str:
        started.set()
        await release.wait()
        return "from A"

    async def quick_b(job: Job) -> str:
        return f"from B with token {job.token}"

    job = await queue.add("t")
    # A's lease is long so its keeper does not notice the takeover first: A's own commit
    # is what the fencing token must refuse.
    a = start_worker({"t": slow_a}, lease=30, concurrency=1)
    await eventually(started.is_set, 5)
    await expire_and_rescue(queue.storage, client, job.id)
    b = start_worker({"t": quick_b})
    assert await job.wait(timeout=5) == "from B with token 2"
    release.set()
    await eventually(lambda: a.worker.counters["lease_lost"] >= 1, 5, message="A refused")
    await b.stop()
    await a.stop()
    done = await queue.get_job(job.id)
    assert (done.state, done.result) == (State.COMPLETED, "from B with token 2")
    assert a.worker.counters["completed"] == 0
    assert len(await events(queue.storage, job.id, "complete")) == 1


async def test_late_outcome_of_a_rescued_job_is_rejected(queue: Queue, start_worker: Any,
                                                        client: redis.asyncio.Redis) -> None:
    """A's attempt ends (here with an error, so a retry) after its job was rescued back to
    waiting but before anyone claimed it again: same token, other state."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(job: Job) -> str:
        if job.token == 1:
            started.set()
            await release.wait()
            raise ValueError("too late to matter")
        return f"token {job.token}"

    job = await queue.add("t", max_attempts=3)
    a = start_worker({"t": handler}, lease=30, concurrency=1)
    await eventually(started.is_set, 5)
    await expire_and_rescue(queue.storage, client, job.id)
    release.set()
    assert await job.wait(timeout=5) == "token 2"  # A claims it again once its slot is free
    await a.stop()
    done = await queue.get_job(job.id)
    assert (done.attempts_made, done.stalls, done.error) == (1, 1, None)  # no retry recorded
    assert a.worker.counters["retried"] == 0
    assert a.worker.counters["lease_lost"] == 1
    assert [e["event"] for e in await events(queue.storage, job.id)] == [
        "enqueue", "claim", "rescue", "claim", "complete"]


async def test_lease_keeper_notices_the_loss_and_stops_the_handler(
        queue: Queue, start_worker: Any, client: redis.asyncio.Redis) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()

    async def handler(job: Job) -> str:
        if job.token == 1:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                interrupted.set()
                raise
        return f"token {job.token}"

    job = await queue.add("t")
    a = start_worker({"t": handler}, lease=0.9, concurrency=1)
    await eventually(started.is_set, 5)
    lost = time.monotonic()
    await expire_and_rescue(queue.storage, client, job.id)
    # A's next renewal (every lease/3) is refused: the keeper cancels the handler.
    await eventually(interrupted.is_set, 2, message="A's handler cancelled")
    assert time.monotonic() - lost < 0.3 + 0.5
    assert await job.wait(timeout=5) == "token 2"
    await a.stop()
    assert a.worker.counters["lease_lost"] == 1
    assert a.worker.counters["completed"] == 1 and a.worker.counters["released"] == 0
    names = [e["event"] for e in await events(queue.storage, job.id)]
    assert names == ["enqueue", "claim", "rescue", "claim", "complete"]


# -- worker processes that die or are told to stop ---------------------------------------------

WORKER_SCRIPT = textwrap.dedent("""
    import asyncio, pathlib, sys
    from shunter import Worker

    queue, url, marker, sleep, shutdown_timeout = sys.argv[1:6]

    async def slow(job):
        pathlib.Path(marker).write_text(f"{job.id} {job.token}")
        await asyncio.sleep(float(sleep))
        return "finished in the subprocess"

    asyncio.run(Worker(queue, {"slow": slow}, url, lease=1.0, cancel_grace=1.0,
                       shutdown_timeout=float(shutdown_timeout)).run())
""")


@pytest.fixture
def worker_process(tmp_path: Path, queue_name: str) -> Iterator[Any]:
    """``worker_process(sleep, shutdown_timeout)`` starts a Worker in a child process whose
    handler writes a marker file, then sleeps; returns ``(process, marker path)``."""
    procs: list[subprocess.Popen[bytes]] = []
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)

    def start(sleep: float, shutdown_timeout: float = 30) -> tuple[subprocess.Popen[bytes], Path]:
        marker = tmp_path / f"marker-{len(procs)}"
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen(
            [sys.executable, str(script), queue_name, REDIS_URL, str(marker), str(sleep),
             str(shutdown_timeout)], env=env, stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"stderr-{len(procs)}").open("wb"))
        procs.append(proc)
        return proc, marker

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


async def test_kill_9_mid_job_is_rescued_and_completed(queue: Queue, start_worker: Any,
                                                       worker_process: Any) -> None:
    job = await queue.add("slow", max_attempts=3)
    proc, marker = worker_process(sleep=60)
    await eventually(marker.exists, 15, message="job started in the child")
    assert (await queue.get_job(job.id)).state is State.ACTIVE
    os.kill(proc.pid, signal.SIGKILL)
    assert await asyncio.to_thread(proc.wait, 5) == -signal.SIGKILL
    killed = time.monotonic()

    async def rescued(job: Job) -> str:
        return f"rescued, token {job.token}"

    lease = 1.0
    start_worker({"slow": rescued}, lease=lease)
    assert await job.wait(timeout=10) == "rescued, token 2"
    # the lease runs out, the next stall check (every lease/2) rescues it, the claim is at once
    assert time.monotonic() - killed < lease + lease / 2 + 1.0
    done = await queue.get_job(job.id)
    assert done.stalls == 1 and done.attempts_made == 1
    assert [e["event"] for e in await events(queue.storage, job.id)] == [
        "enqueue", "claim", "rescue", "claim", "complete"]


async def test_sigterm_lets_the_job_in_flight_finish(queue: Queue, worker_process: Any) -> None:
    job = await queue.add("slow")
    proc, marker = worker_process(sleep=1.0, shutdown_timeout=10)
    await eventually(marker.exists, 15, message="job started in the child")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    done = await queue.get_job(job.id)
    assert (done.state, done.result) == (State.COMPLETED, "finished in the subprocess")
    assert done.attempts_made == 1 and done.stalls == 0


async def test_sigterm_hands_back_a_long_job_without_using_an_attempt(
        queue: Queue, start_worker: Any, worker_process: Any) -> None:
    job = await queue.add("slow", max_attempts=1)
    proc, marker = worker_process(sleep=60, shutdown_timeout=0.2)
    await eventually(marker.exists, 15, message="job started in the child")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    back = await queue.get_job(job.id)
    assert (back.state, back.attempts_made, back.stalls) == (State.WAITING, 0, 0)
    assert [e["event"] for e in await events(queue.storage, job.id)][-1] == "release"

    async def finish(job: Job) -> str:
        return f"done, token {job.token}"

    start_worker({"slow": finish})
    assert await job.wait(timeout=5) == "done, token 2"  # max_attempts=1 was still unused


# -- max_stalls ---------------------------------------------------------------------------------

async def test_job_whose_workers_keep_dying_fails_after_max_stalls(storage: Storage,
                                                                  queue: Queue) -> None:
    job = await queue.add("poison", max_attempts=5)
    for stall in (1, 2, 3):
        claim = await storage.claim(1, 1, f"doomed-{stall}")  # a 1 ms lease, never renewed
        assert [c[b"id"] for c in claim.jobs] == [job.id.encode()]
        await eventually(lambda: storage.rescue(max_stalls=2, lock_ms=0), 5)
        now = await queue.get_job(job.id)
        assert now.stalls == stall
        assert now.state is (State.WAITING if stall <= 2 else State.FAILED)
    assert now.error is not None and now.error.type == "Stalled"
    assert "max_stalls=2" in now.error.message
    assert now.attempts_made == 1  # the stalled attempt counts
    assert await queue.job_ids(State.FAILED) == [job.id]
    rescues = await events(storage, job.id, "rescue")
    assert [(e["state"], e["stalls"]) for e in rescues] == [
        ("waiting", "1"), ("waiting", "2"), ("failed", "3")]


async def test_worker_rescue_honours_max_stalls(storage: Storage, queue: Queue,
                                               start_worker: Any) -> None:
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    job = await queue.add("t")
    await storage.claim(1, 1, "a-worker-that-died")
    start_worker({"t": handler}, lease=0.5, max_stalls=0)
    done = await settled(queue, job.id, timeout=5)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "Stalled" and done.stalls == 1
    assert ran == []
