"""Behaviour of the Worker: running handlers, results, progress and logs, failures,
concurrency, graceful shutdown, burst mode, the task registry, options and startup checks.

Retries and error classification are in test_worker_retries.py; timeouts and
cancellation in test_worker_interrupts.py; leases and fencing in test_leases.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis.asyncio

from shunter import Backoff, InvalidInput, Job, Queue, ShunterError, State, Task, Worker
from shunter.events import Event, progress_of
from shunter.outcome import MAX_ERROR_MESSAGE, MAX_TRACEBACK

from .conftest import REDIS_URL, eventually
from .worker_support import events, settled

pytestmark = pytest.mark.redis

NO_WAIT = Backoff.fixed(0)


# -- running handlers -----------------------------------------------------------------------

async def test_async_and_sync_handlers_store_their_results(queue: Queue, start_worker: Any) -> None:
    threads: dict[str, str] = {}

    async def double(job: Job) -> dict[str, int]:
        threads["async"] = threading.current_thread().name
        return {"doubled": job.data["n"] * 2}

    def shout(job: Job) -> str:
        threads["sync"] = threading.current_thread().name
        return str(job.data).upper()

    a = await queue.add("double", {"n": 21})
    b = await queue.add("shout", "hello")
    start_worker({"double": double, "shout": shout})
    assert await a.wait(timeout=5) == {"doubled": 42}
    assert await b.wait(timeout=5) == "HELLO"
    done = await queue.get_job(b.id)
    assert done.state is State.COMPLETED and done.result == "HELLO"
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at >= done.started_at
    assert threads["async"] == threading.main_thread().name
    assert threads["sync"].startswith("shunter-sync")  # sync code never runs on the loop
    counts = await queue.counts()
    assert (counts["completed"], counts["active"], counts["waiting"]) == (2, 0, 0)


async def test_progress_and_logs_from_an_async_handler(queue: Queue, start_worker: Any) -> None:
    seen: list[Any] = []

    async def work(job: Job) -> str:
        for value in ({"stage": 1, "percent": 10}, [1, "two", None], 99.5):
            await job.update_progress(value)
            seen.append((await job.refresh()).progress)
        await job.log("starting")
        await job.log("x" * 20_000)  # capped per line
        return "ok"

    job = await queue.add("work")
    start_worker({"work": work})
    assert await job.wait(timeout=5) == "ok"
    assert seen == [{"stage": 1, "percent": 10}, [1, "two", None], 99.5]
    assert (await queue.get_job(job.id)).progress == 99.5
    published = [progress_of(Event("", e["event"], e["job"], e["state"], e))
                 for e in await events(queue.storage, job.id, "progress")]
    assert published == [{"stage": 1, "percent": 10}, [1, "two", None], 99.5]
    lines = await job.logs()
    assert lines[0] == "starting"
    assert len(lines) == 2 and len(lines[1]) < 20_000 and lines[1].endswith("[truncated]")


async def test_progress_and_logs_from_a_sync_handler(queue: Queue, start_worker: Any) -> None:
    def work(job: Job) -> int:
        job.update_progress_sync({"done": 1})
        job.log_sync("line one")
        job.update_progress_sync({"done": 2})
        job.log_sync("line two")
        return 7

    job = await queue.add("work")
    start_worker({"work": work})
    assert await job.wait(timeout=5) == 7
    stored = await queue.get_job(job.id)
    assert stored.progress == {"done": 2}
    assert await job.logs() == ["line one", "line two"]
    progress = await events(queue.storage, job.id, "progress")
    assert [e["progress"] for e in progress] == ['{"done":1}', '{"done":2}']


async def test_progress_outside_a_worker_is_refused(queue: Queue) -> None:
    job = await queue.add("work")
    with pytest.raises(ShunterError, match="worker running the job"):
        await (await queue.get_job(job.id)).update_progress(1)


# -- failures ---------------------------------------------------------------------------------

async def test_always_failing_job_fails_after_exactly_n_attempts(queue: Queue,
                                                                  start_worker: Any) -> None:
    calls: list[int] = []

    async def broken(job: Job) -> None:
        calls.append(job.attempt)
        raise ValueError(f"boom on attempt {job.attempt}")

    job = await queue.add("broken", max_attempts=4, backoff=NO_WAIT)
    start_worker({"broken": broken})
    done = await settled(queue, job.id)
    assert done.state is State.FAILED
    assert calls == [1, 2, 3, 4]
    assert done.attempts_made == 4
    assert done.error is not None
    assert done.error.type == "ValueError"
    assert done.error.message == "boom on attempt 4"
    assert "in broken" in done.error.traceback and "ValueError: boom" in done.error.traceback
    assert len(await events(queue.storage, job.id, "retry")) == 3
    assert len(await events(queue.storage, job.id, "fail")) == 1
    assert await queue.job_ids(State.FAILED) == [job.id]


async def test_error_message_and_traceback_are_capped(queue: Queue, start_worker: Any) -> None:
    def huge(job: Job) -> None:
        raise RuntimeError("m" * 100_000)

    job = await queue.add("huge", max_attempts=1)
    start_worker({"huge": huge})
    error = (await settled(queue, job.id)).error
    assert error is not None and error.type == "RuntimeError"
    assert len(error.message) <= MAX_ERROR_MESSAGE and error.message.endswith("[truncated]")
    assert error.traceback.startswith("…[truncated]")
    assert len(error.traceback) <= MAX_TRACEBACK + len("…[truncated]\n")


async def test_unserializable_result_fails_the_job_cleanly(queue: Queue, start_worker: Any) -> None:
    calls: list[int] = []

    async def bad(job: Job) -> object:
        calls.append(job.attempt)
        return {"when": object()}

    job = await queue.add("bad", max_attempts=3, backoff=NO_WAIT)
    start_worker({"bad": bad})
    done = await settled(queue, job.id)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "InvalidInput" and "not JSON-serializable" in done.error.message
    # running it again would give the same result: failed at once, attempts left unused
    assert calls == [1] and done.attempts_made == 1


async def test_handler_calling_sys_exit_does_not_stop_the_worker(queue: Queue,
                                                                 start_worker: Any) -> None:
    async def leave(job: Job) -> None:
        raise SystemExit(3)

    async def fine(job: Job) -> str:
        return "still here"

    bad = await queue.add("leave", max_attempts=1)
    running = start_worker({"leave": leave, "fine": fine})
    failed = await settled(queue, bad.id)
    assert failed.state is State.FAILED and failed.error is not None
    assert "SystemExit" in failed.error.message
    good = await queue.add("fine")
    assert await good.wait(timeout=5) == "still here"
    assert not running.task.done()


# -- the task registry ------------------------------------------------------------------------

async def test_handlers_are_found_by_their_registered_names(queue: Queue, start_worker: Any) -> None:
    async def one(job: Job) -> str:
        return "one"

    def two(job: Job) -> str:
        return "two"

    a = await queue.add("emails.send")
    b = await queue.add("reports_build-v2")
    c = await queue.add("os.system", "echo pwned")  # not registered: never imported by name
    start_worker({"emails.send": one, "reports_build-v2": Task(two)})
    assert await a.wait(timeout=5) == "one"
    assert await b.wait(timeout=5) == "two"
    unknown = await settled(queue, c.id)
    assert unknown.state is State.FAILED and unknown.error is not None
    assert unknown.error.type == "UnregisteredTask" and "os.system" in unknown.error.message


@pytest.mark.parametrize("options", [
    {"concurrency": 0}, {"concurrency": -1}, {"concurrency": True}, {"concurrency": "3"},
    {"lease": -1}, {"lease": 0}, {"job_timeout": 0}, {"shutdown_timeout": -1},
    {"cancel_grace": -0.5}, {"max_stalls": -1}, {"batch": 0}, {"max_deferrals": -1},
])
def test_worker_rejects_bad_options(queue_name: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        Worker(queue_name, {"t": lambda job: None}, REDIS_URL, **options)


@pytest.mark.parametrize("tasks", [
    {}, [], None, {"": print}, {"has space": print}, {"1starts_with_digit": print},
    {"a{b}": print}, {"x" * 300: print}, {"fine": "not callable"}, {"fine": None},
])
def test_worker_rejects_bad_task_registries(queue_name: str, tasks: Any) -> None:
    with pytest.raises(InvalidInput):
        Worker(queue_name, tasks, REDIS_URL)


@pytest.mark.parametrize("name", ["", "a b", "{x}", "q:1", "x" * 200])
def test_worker_rejects_bad_queue_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        Worker(name, {"t": print}, REDIS_URL)


async def test_startup_check_reports_the_server(queue: Queue, start_worker: Any,
                                                client: redis.asyncio.Redis) -> None:
    running = start_worker({"t": print})
    report = await eventually(lambda: running.worker.server, 5, message="server report")
    info = await client.info("server")
    assert report.flavour in ("redis", "valkey")
    assert report.version == str(info.get("valkey_version", info["redis_version"]))
    persistence = await client.info("persistence")
    assert report.aof == bool(int(persistence["aof_enabled"]))
    config = await client.config_get("save")
    save = config.get("save", config.get(b"save"))
    assert report.rdb == bool(save.strip())
    no_persistence = not report.aof and report.rdb is False
    assert any("no persistence" in w for w in report.warnings) == no_persistence


# -- concurrency, burst, shutdown ----------------------------------------------------------

async def test_concurrency_limit_is_respected(queue: Queue, start_worker: Any) -> None:
    now = peak = 0

    async def work(job: Job) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.1)
        now -= 1

    jobs = await queue.add_bulk([{"task": "work"} for _ in range(10)])
    running = start_worker({"work": work}, concurrency=3)
    for job in jobs:
        await job.wait(timeout=10)
    assert peak == 3
    await eventually(lambda: running.worker.counters["completed"] == 10, 2)


async def test_sync_handlers_share_the_concurrency_limit(queue: Queue, start_worker: Any) -> None:
    lock = threading.Lock()
    now = peak = 0

    def work(job: Job) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.1)
        with lock:
            now -= 1

    jobs = await queue.add_bulk([{"task": "work"} for _ in range(8)])
    start_worker({"work": work}, concurrency=2)
    for job in jobs:
        await job.wait(timeout=10)
    assert peak == 2


async def test_burst_mode_returns_when_the_queue_is_empty(queue: Queue) -> None:
    async def work(job: Job) -> int:
        return int(job.data)

    worker = Worker(queue.name, {"work": work}, REDIS_URL, lease=2)
    started = time.monotonic()
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 5)
    assert time.monotonic() - started < 2  # an empty queue: back at once, no block_timeout

    jobs = await queue.add_bulk([{"task": "work", "data": i} for i in range(5)])
    later = await queue.add("work", 99, delay=0.3)  # scheduled work keeps a burst going
    worker = Worker(queue.name, {"work": work}, REDIS_URL, lease=2)
    await asyncio.wait_for(worker.run(burst=True, handle_signals=False), 10)
    assert [(await queue.get_job(j.id)).result for j in jobs] == [0, 1, 2, 3, 4]
    assert (await queue.get_job(later.id)).result == 99
    assert worker.counters["completed"] == 6 and worker.running == 0  # run() has returned


async def test_close_lets_short_jobs_finish_and_hands_long_ones_back(queue: Queue,
                                                                    start_worker: Any) -> None:
    started: set[str] = set()

    async def short(job: Job) -> str:
        started.add(job.id)
        await asyncio.sleep(0.3)
        return "short done"

    async def long_async(job: Job) -> str:
        started.add(job.id)
        if job.token == 1:
            await asyncio.sleep(30)
        return f"long done by token {job.token}"

    def long_sync(job: Job) -> str:
        started.add(job.id)
        while job.token == 1 and not job.cancelled:  # a well-behaved sync handler
            time.sleep(0.01)
        return f"sync done by token {job.token}"

    tasks = {"short": short, "long_async": long_async, "long_sync": long_sync}
    s = await queue.add("short", max_attempts=2)
    la = await queue.add("long_async", max_attempts=2)
    ls = await queue.add("long_sync", max_attempts=2)
    first = start_worker(tasks, concurrency=4, shutdown_timeout=0.8, cancel_grace=1)
    await eventually(lambda: len(started) == 3, 5, message="all three started")
    await first.stop(timeout=10)

    assert (await queue.get_job(s.id)).result == "short done"
    for job_id in (la.id, ls.id):
        handed_back = await queue.get_job(job_id)
        assert handed_back.state is State.WAITING, handed_back
        assert handed_back.attempts_made == 0 and handed_back.stalls == 0
        assert handed_back.error is None
        assert [e["event"] for e in await events(queue.storage, job_id)][-1] == "release"
    assert first.worker.counters["released"] == 2 and first.worker.counters["completed"] == 1

    second = start_worker(tasks)
    assert await la.wait(timeout=5) == "long done by token 2"
    assert await ls.wait(timeout=5) == "sync done by token 2"
    await eventually(lambda: second.worker.counters["completed"] == 2, 2)
    assert (await queue.get_job(la.id)).attempts_made == 1  # the completing one; the hand-back used none


async def test_close_waits_for_jobs_that_finish_within_shutdown_timeout(
        queue: Queue, start_worker: Any) -> None:
    started = threading.Event()

    def slowish(job: Job) -> str:
        started.set()
        time.sleep(0.5)  # ignores job.cancelled, but is done well within shutdown_timeout
        return "finished"

    job = await queue.add("slowish")
    running = start_worker({"slowish": slowish}, shutdown_timeout=5)
    await eventually(started.is_set, 5)
    t0 = time.monotonic()
    await running.stop()
    assert time.monotonic() - t0 >= 0.3  # close() really waited for the job
    assert (await queue.get_job(job.id)).result == "finished"
    assert (await queue.counts())["waiting"] == 0


async def test_sync_job_finishing_in_the_grace_period_keeps_its_result(
        queue: Queue, start_worker: Any) -> None:
    started = threading.Event()

    def busy(job: Job) -> str:
        started.set()
        time.sleep(0.5)  # never looks at job.cancelled: it really finished its work
        return "finished"

    job = await queue.add("busy")
    running = start_worker({"busy": busy}, shutdown_timeout=0.05, cancel_grace=3)
    await eventually(started.is_set, 5)
    await running.stop()
    done = await queue.get_job(job.id)
    assert (done.state, done.result) == (State.COMPLETED, "finished")
    assert running.worker.counters["released"] == 0
