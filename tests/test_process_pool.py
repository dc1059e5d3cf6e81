"""The process pool (issue 10, item 4): ``Task(fn, executor="process")`` runs a sync
handler in a spawned child process. Results, errors, progress and logs come back; the
timeout ends the child; a child that dies fails only its own attempt and is replaced;
cancel and shutdown reach the handler as ``job.cancelled``; nothing outlives the worker.

The handlers live in tests/process_handlers.py: a child imports them by name."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shunter import Backoff, Decision, InvalidInput, Job, Queue, State, Task, Worker

from . import process_handlers as h
from . import process_handlers_slow as slow
from .conftest import REDIS_URL, eventually
from .worker_support import events, settled

ROOT = Path(__file__).resolve().parent.parent


def process(fn: Any, **options: Any) -> Task:
    return Task(fn, executor="process", **options)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def handler_pid(queue: Queue, job_id: str) -> int:
    """The pid a handler reported as its first progress (it is running once this returns)."""

    async def check() -> int | None:
        progress = (await queue.get_job(job_id)).progress
        return progress.get("pid") if isinstance(progress, dict) else None

    return int(await eventually(check, 20, message=f"job {job_id} running in its process"))


# -- what comes back ------------------------------------------------------------------------------

@pytest.mark.redis
async def test_a_result_comes_back_from_another_process(queue: Queue, start_worker: Any) -> None:
    running = start_worker({"square": process(h.square), "snapshot": process(h.snapshot)},
                           processes=2)
    job = await queue.add("square", {"n": 12})
    result = await job.wait(timeout=20)
    assert result["square"] == 144
    assert result["pid"] != os.getpid() and result["pid"] in running.worker.processes.pids
    seen = await (await queue.add("snapshot", {"k": [1, 2]}, max_attempts=4)).wait(timeout=20)
    snap = await queue.get_job(seen["id"])
    assert seen == {"id": snap.id, "queue": queue.name, "task": "snapshot", "attempt": 1,
                    "max_attempts": 4, "data": {"k": [1, 2]}, "token": snap.token, "cancelled": False}
    assert running.worker.processes.started == 1  # one warm child served both jobs


@pytest.mark.redis
async def test_an_exception_comes_back_with_its_traceback_from_the_child(queue: Queue,
                                                                       start_worker: Any) -> None:
    start_worker({"fail": process(h.fail)}, processes=1)
    job = await queue.add("fail", {"x": 1}, max_attempts=2, backoff=Backoff.fixed(0))
    done = await settled(queue, job.id, timeout=20)
    assert done.state is State.FAILED and done.attempts_made == 2  # retried as in a thread
    assert done.error is not None and done.error.type == "ValueError"
    assert done.error.message == "bad input {'x': 1} on attempt 2"
    assert 'process_handlers.py", line' in done.error.traceback and "in fail" in done.error.traceback
    assert "processes.py" not in done.error.traceback  # the pool's own frames say nothing
    assert [e["event"] for e in await events(queue.storage, job.id, None)].count("retry") == 1


@pytest.mark.redis
async def test_retry_decisions_are_made_as_for_threads(queue: Queue, start_worker: Any) -> None:
    def no_value_errors(exc: BaseException, job: Job) -> Decision | None:
        return Decision.FAIL if isinstance(exc, ValueError) else None

    start_worker({"give_up": process(h.give_up), "defer": process(h.defer_once),
                  "classified": process(h.fail, classify=no_value_errors)}, processes=2)
    gave_up = await queue.add("give_up", max_attempts=3)
    deferred = await queue.add("defer", max_attempts=3)
    classified = await queue.add("classified", max_attempts=3)
    done = await settled(queue, gave_up.id, timeout=20)
    assert done.state is State.FAILED and done.attempts_made == 1
    assert done.error is not None and done.error.type == "UnrecoverableError"
    assert await deferred.wait(timeout=20) == "deferred 1 time(s)"  # RetryAfter crossed over
    again = await queue.get_job(deferred.id)
    assert (again.deferrals, again.attempts_made) == (1, 1)
    done = await settled(queue, classified.id, timeout=20)
    assert done.state is State.FAILED and done.attempts_made == 1


@pytest.mark.redis
async def test_errors_that_cannot_cross_become_clear_ones(queue: Queue, start_worker: Any) -> None:
    start_worker({"unpicklable": process(h.raise_unpicklable), "exits": process(h.calls_sys_exit),
                  "a_set": process(h.returns_a_set)}, processes=1)
    unpicklable = await queue.add("unpicklable", max_attempts=1)
    exits = await queue.add("exits", max_attempts=1)
    a_set = await queue.add("a_set", max_attempts=3)
    done = await settled(queue, unpicklable.id, timeout=20)
    assert done.error is not None and done.error.type == "UnpicklableError"
    assert done.error.message.startswith("tests.process_handlers.Unpicklable: code 7: custom constructor")
    assert "in raise_unpicklable" in done.error.traceback
    done = await settled(queue, exits.id, timeout=20)
    assert done.error is not None and done.error.type == "HandlerExit"  # as from a thread
    assert "SystemExit(5)" in done.error.message
    done = await settled(queue, a_set.id, timeout=20)
    assert done.state is State.FAILED and done.attempts_made == 1  # the same result would come again
    assert done.error is not None and "not JSON-serializable" in done.error.message


@pytest.mark.redis
async def test_progress_and_logs_are_written_through_the_job(queue: Queue, start_worker: Any) -> None:
    start_worker({"report": process(h.report), "threads": process(h.from_threads)}, processes=1,
                 max_payload_bytes=1024)
    job = await queue.add("report")
    assert await job.wait(timeout=20) == "reported"
    done = await queue.get_job(job.id)
    assert done.progress["step"] == 2 and done.progress["pid"] != os.getpid()
    # the last write was refused by the worker and raised PayloadTooLarge in the child
    assert await done.logs() == ["step 0", "step 1", "step 2", "refused: PayloadTooLarge"]
    assert len(await events(queue.storage, job.id, "progress")) == 3
    threaded = await queue.add("threads")
    assert await threaded.wait(timeout=20) == 4
    assert sorted(await threaded.logs()) == [f"thread {i}" for i in range(4)]


# -- ending a child -------------------------------------------------------------------------------

@pytest.mark.redis
async def test_the_timeout_ends_the_child_and_the_next_job_runs(queue: Queue,
                                                                start_worker: Any) -> None:
    running = start_worker({"spin": process(h.spin, timeout=0.5), "square": process(h.square)},
                           processes=1)
    warm = (await (await queue.add("square", {"n": 1})).wait(timeout=20))["pid"]
    job = await queue.add("spin", max_attempts=1)
    pid = await handler_pid(queue, job.id)
    done = await settled(queue, job.id, timeout=20)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "JobTimeout"
    assert "timeout of 0.5s" in done.error.message and f"pid {pid}" in done.error.message
    assert pid == warm and not alive(pid)
    after = await (await queue.add("square", {"n": 3})).wait(timeout=20)
    assert after["square"] == 9 and after["pid"] != pid
    assert running.worker.processes.lost == 1


@pytest.mark.redis
async def test_the_timeout_runs_from_when_the_handler_starts(queue: Queue, start_worker: Any) -> None:
    """A new child imports the handler's module (here: 1 s) before it starts; a timeout of
    0.3 s does not count that time."""
    start_worker({"quick": process(slow.quick, timeout=0.3)}, processes=1)
    assert await (await queue.add("quick", max_attempts=1)).wait(timeout=20) == "quick"


@pytest.mark.redis
async def test_a_child_that_exits_fails_its_attempt_and_is_replaced(queue: Queue,
                                                                    start_worker: Any) -> None:
    running = start_worker({"exit": process(h.exit_3), "square": process(h.square)}, processes=1)
    job = await queue.add("exit", max_attempts=1)
    done = await settled(queue, job.id, timeout=20)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "ProcessCrashed" and "exited with code 3" in done.error.message
    assert (await (await queue.add("square", {"n": 2})).wait(timeout=20))["square"] == 4
    assert running.worker.processes.started == 2 and running.worker.processes.lost == 1


@pytest.mark.redis
async def test_a_killed_child_fails_its_attempt_and_the_next_attempt_runs(queue: Queue,
                                                                          start_worker: Any) -> None:
    start_worker({"crash_first": process(h.crash_first)}, processes=1)
    job = await queue.add("crash_first", max_attempts=2, backoff=Backoff.fixed(0))
    second_pid = await job.wait(timeout=20)
    done = await queue.get_job(job.id)
    assert done.attempts_made == 2 and second_pid != os.getpid()
    assert done.error is not None and done.error.type == "ProcessCrashed"  # the first attempt's
    assert "killed by signal 9, SIGKILL" in done.error.message


@pytest.mark.redis
async def test_a_child_killed_from_outside_leaves_other_jobs_alone(queue: Queue,
                                                                   start_worker: Any) -> None:
    start_worker({"sleepy": process(h.sleepy), "polite": process(h.polite)}, processes=2)
    victim = await queue.add("polite", max_attempts=1)
    bystander = await queue.add("sleepy", {"seconds": 1.0})
    pid = await handler_pid(queue, victim.id)
    other = await handler_pid(queue, bystander.id)
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    done = await settled(queue, victim.id, timeout=20)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "ProcessCrashed"
    assert f"(pid {pid}) was killed by signal 9, SIGKILL" in done.error.message
    assert await bystander.wait(timeout=20) == other  # finished in its own, untouched process


# -- interrupts -----------------------------------------------------------------------------------

@pytest.mark.redis
async def test_cancel_reaches_the_handler_as_job_cancelled(queue: Queue, start_worker: Any) -> None:
    running = start_worker({"polite": process(h.polite), "square": process(h.square)},
                           processes=1, lease=0.9)
    job = await queue.add("polite")
    pid = await handler_pid(queue, job.id)
    await queue.cancel(job.id, by="ops")
    done = await settled(queue, job.id, timeout=10)
    assert done.state is State.CANCELLED and done.cancelled_by == "ops" and done.result is None
    # it stopped by itself: its process was not ended, and serves the next job
    assert (await (await queue.add("square", {"n": 5})).wait(timeout=20))["pid"] == pid
    assert running.worker.processes.lost == 0


@pytest.mark.redis
async def test_a_handler_that_ignores_cancel_is_ended_after_the_grace(queue: Queue,
                                                                     start_worker: Any) -> None:
    running = start_worker({"spin": process(h.spin), "square": process(h.square)},
                           processes=1, lease=0.9, cancel_grace=0.3)
    job = await queue.add("spin")
    pid = await handler_pid(queue, job.id)
    await queue.cancel(job.id)
    done = await settled(queue, job.id, timeout=10)
    assert done.state is State.CANCELLED
    await eventually(lambda: not alive(pid), 5, message="the stubborn child ended")
    assert running.worker.counters["abandoned"] == 0  # ended, not abandoned
    assert (await (await queue.add("square", {"n": 5})).wait(timeout=20))["square"] == 25


@pytest.mark.redis
async def test_a_job_waiting_for_a_process_keeps_its_lease(queue: Queue, start_worker: Any) -> None:
    """One process, busy for 2 s; the next job's timeout (0.2 s) plus lease (0.5 s) is far
    shorter than its wait, yet it is not rescued: it runs once, when the process is free."""
    start_worker({"sleepy": process(h.sleepy), "square": process(h.square, timeout=0.2)},
                 processes=1, lease=0.5, cancel_grace=0)
    busy = await queue.add("sleepy", {"seconds": 2.0})
    await handler_pid(queue, busy.id)
    waiting = await queue.add("square", {"n": 4})
    assert (await waiting.wait(timeout=20))["square"] == 16
    done = await queue.get_job(waiting.id)
    assert (done.attempts_made, done.stalls) == (1, 0)
    assert await events(queue.storage, waiting.id, "rescue") == []


# -- shutdown --------------------------------------------------------------------------------------

@pytest.mark.redis
async def test_shutdown_leaves_no_child_processes(queue: Queue, start_worker: Any) -> None:
    running = start_worker({"sleepy": process(h.sleepy)}, processes=2)
    jobs = [await queue.add("sleepy", {"seconds": 0.5}) for _ in range(2)]
    pids = {await handler_pid(queue, job.id) for job in jobs}
    assert len(pids) == 2
    for job in jobs:
        await job.wait(timeout=20)
    await running.stop()
    assert not any(alive(pid) for pid in pids)
    assert not {p.pid for p in multiprocessing.active_children()} & pids


@pytest.mark.redis
async def test_shutdown_hands_back_a_running_process_job(queue: Queue, start_worker: Any) -> None:
    running = start_worker({"polite": process(h.polite)}, processes=1, shutdown_timeout=0.1)
    job = await queue.add("polite")
    pid = await handler_pid(queue, job.id)
    await running.stop()
    done = await queue.get_job(job.id)
    # it saw job.cancelled and returned: unfinished work, handed back without using an attempt
    assert done.state is State.WAITING and done.attempts_made == 0
    assert not alive(pid)


@pytest.mark.redis
async def test_children_exit_when_their_worker_is_killed(queue: Queue) -> None:
    script = ("import asyncio, sys\n"
              "from shunter import Task, Worker\n"
              "from tests import process_handlers as h\n"
              "worker = Worker(sys.argv[1], {'sleepy': Task(h.sleepy, executor='process')}, sys.argv[2])\n"
              "asyncio.run(worker.run())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    worker = subprocess.Popen([sys.executable, "-c", script, queue.name, REDIS_URL], env=env, cwd=ROOT,
                              stderr=subprocess.DEVNULL)
    try:
        job = await queue.add("sleepy", {"seconds": 60})
        pid = await handler_pid(queue, job.id)
    finally:
        worker.kill()
        await asyncio.to_thread(worker.wait, 10)
    # its socket closed with the worker: the child exits mid-handler instead of lingering
    await eventually(lambda: not alive(pid), 10, message=f"orphaned child {pid} exited")


# -- bad input ------------------------------------------------------------------------------------

async def _async_handler(job: Job) -> None:
    pass


def _make_nested() -> Any:
    def nested(job: Job) -> None:
        pass
    return nested


class _Holder:
    def method(self, job: Job) -> None:
        pass


@pytest.mark.parametrize(("fn", "executor", "says"), [
    (_async_handler, "process", "is async"),
    (_async_handler, "thread", "is async"),
    (lambda job: None, "process", "no lambda, closure or nested function"),
    (_make_nested(), "process", "no lambda, closure or nested function"),
    (functools.partial(h.square), "process", "a function defined at module level"),
    (_Holder().method, "process", "a function defined at module level"),
    (len, "process", "a function defined at module level"),
    (h.square, "fork", "must be 'auto', 'thread' or 'process'"),
    (h.square, None, "must be 'auto', 'thread' or 'process'"),
], ids=["async-process", "async-thread", "lambda", "nested", "partial", "method", "builtin",
        "unknown", "None"])
def test_task_rejects_what_a_process_cannot_run(fn: Any, executor: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        Task(fn, executor=executor)


def test_task_rejects_a_name_that_does_not_lead_back() -> None:
    def square(job: Job) -> None:
        pass

    square.__qualname__ = "square"
    square.__module__ = h.__name__  # looks like h.square, is not
    with pytest.raises(InvalidInput, match="does not lead back"):
        Task(square, executor="process")


@pytest.mark.parametrize("processes", [0, -1, 1025, 2.0, True, "2"], ids=str)
def test_worker_rejects_bad_processes(queue_name: str, processes: Any) -> None:
    with pytest.raises(InvalidInput, match="processes must be an int from 1 to 1,024"):
        Worker(queue_name, {"t": h.square}, REDIS_URL, processes=processes)


def test_process_options_that_are_fine(queue_name: str) -> None:
    assert Task(h.square, executor="process").executor == "process"
    assert Task(h.square, executor="thread").executor == "thread"
    worker = Worker(queue_name, {"t": process(h.square)}, REDIS_URL)
    assert worker.processes.size == (os.cpu_count() or 1)
    assert worker.processes.pids == []  # started lazily, by the first process job
    assert Worker(queue_name, {"t": h.square}, REDIS_URL, processes=1024).processes.size == 1024


@pytest.mark.redis
async def test_thread_executor_runs_in_the_worker(queue: Queue, start_worker: Any) -> None:
    running = start_worker({"square": Task(h.square, executor="thread")}, processes=1)
    result = await (await queue.add("square", {"n": 6})).wait(timeout=10)
    assert result == {"square": 36, "pid": os.getpid()}
    assert running.worker.processes.started == 0
