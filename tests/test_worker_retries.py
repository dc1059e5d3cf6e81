"""Retries: backoff (job > task > worker default, fixed / exponential / schedule / callable),
UnrecoverableError, error classifiers, and RetryAfter deferrals with their cap."""

from __future__ import annotations

from typing import Any

import pytest

from shunter import Backoff, Decision, Job, Queue, RetryAfter, State, Task, UnrecoverableError
from shunter.storage import Storage

from .conftest import eventually
from .worker_support import counter, events, ms, settled

pytestmark = pytest.mark.redis

#: How late a retried job may be claimed after its due time (the worker sleeps until the
#: next due time, then claims; the margin covers the round trips on a busy machine).
LATE_MS = 250


async def retry_delays(storage: Storage, job_id: str) -> list[int]:
    """``delay_ms`` of each retry, after checking that the job was not claimed again
    before that delay passed (nor much later)."""
    history = await events(storage, job_id)
    delays = []
    for i, event in enumerate(history):
        if event["event"] != "retry":
            continue
        delay = int(event["delay_ms"])
        delays.append(delay)
        claim = next((e for e in history[i + 1:] if e["event"] == "claim"), None)
        if claim is not None:
            gap = int(claim["ms"]) - int(event["ms"])
            assert delay <= gap <= delay + LATE_MS, (delay, gap)
    return delays


def failing(times: int, exc: type[BaseException] = ValueError) -> tuple[dict[str, int], Any]:
    """A handler that raises ``exc`` on its first ``times`` calls per job, then returns."""
    calls, bump = counter()

    async def handler(job: Job) -> str:
        if bump(job.id) <= times:
            raise exc(f"failure {calls[job.id]}")
        return "ok"

    return calls, handler


# -- backoff ----------------------------------------------------------------------------------

async def test_fixed_backoff_spaces_the_attempts(queue: Queue, start_worker: Any) -> None:
    calls, handler = failing(99)
    job = await queue.add("t", max_attempts=3, backoff=Backoff.fixed(0.3))
    start_worker({"t": handler})
    done = await settled(queue, job.id)
    assert done.state is State.FAILED and done.attempts_made == 3 and calls[job.id] == 3
    assert await retry_delays(queue.storage, job.id) == [300, 300]


async def test_exponential_backoff_grows_and_is_jittered(queue: Queue, start_worker: Any) -> None:
    calls, handler = failing(3)
    job = await queue.add("t", max_attempts=4, backoff=Backoff.exponential(0.1, factor=2, jitter=0.5))
    start_worker({"t": handler})
    assert await job.wait(timeout=10) == "ok"
    first, second, third = await retry_delays(queue.storage, job.id)
    assert 50 <= first <= 150 and 100 <= second <= 300 and 200 <= third <= 600
    assert (await queue.get_job(job.id)).attempts_made == 4 and calls[job.id] == 4


async def test_jitter_spreads_retries_and_scheduled_for_matches_the_delay(
        queue: Queue, start_worker: Any) -> None:
    _, handler = failing(99)
    jobs = await queue.add_bulk([{"task": "t", "max_attempts": 2,
                                  "backoff": Backoff.exponential(10, jitter=0.5)}
                                 for _ in range(8)])
    start_worker({"t": handler})

    async def all_scheduled() -> bool:
        return (await queue.counts())["scheduled"] == len(jobs)

    await eventually(all_scheduled, 5, message="every job waiting for its retry")
    delays = []
    for job in jobs:
        stored = await queue.get_job(job.id)
        (retry,) = await events(queue.storage, job.id, "retry")
        delay = int(retry["delay_ms"])
        assert 5000 <= delay <= 15000
        # the event's id is stamped by XADD a moment after the script read TIME (and a
        # stream id never goes back), so the two clocks may differ by a millisecond or two
        assert abs(ms(stored.scheduled_for) - int(retry["ms"]) - delay) <= 5
        assert stored.attempts_made == 1 and stored.state is State.SCHEDULED
        delays.append(delay)
    assert len(set(delays)) > 1  # not all retrying at the same moment


async def test_schedule_backoff_repeats_its_last_entry(queue: Queue, start_worker: Any) -> None:
    calls, handler = failing(3)
    job = await queue.add("t", max_attempts=5, backoff=Backoff.schedule([0.1, 0.3]))
    start_worker({"t": handler})
    assert await job.wait(timeout=10) == "ok"
    assert await retry_delays(queue.storage, job.id) == [100, 300, 300]
    assert calls[job.id] == 4


async def test_task_callable_backoff_sees_attempt_and_exception(queue: Queue,
                                                                start_worker: Any) -> None:
    seen: list[tuple[int, str]] = []

    def backoff(attempt: int, exc: BaseException) -> float:
        seen.append((attempt, type(exc).__name__))
        return 0.1 * attempt + (0.05 if isinstance(exc, KeyError) else 0.0)

    calls, bump = counter()

    async def handler(job: Job) -> str:
        n = bump(job.id)
        if n == 1:
            raise KeyError("first")
        if n == 2:
            raise ValueError("second")
        return "ok"

    job = await queue.add("t", max_attempts=3)
    start_worker({"t": Task(handler, backoff=backoff)})
    assert await job.wait(timeout=10) == "ok"
    assert seen == [(1, "KeyError"), (2, "ValueError")] and calls[job.id] == 3
    assert await retry_delays(queue.storage, job.id) == [150, 200]


async def test_backoff_precedence_job_then_task_then_worker(queue: Queue,
                                                            start_worker: Any) -> None:
    _, plain = failing(1)
    _, tasked = failing(1)
    _, broken_backoff = failing(1)

    def raises(attempt: int, exc: BaseException) -> float:
        raise RuntimeError("a broken backoff falls back to the worker default")

    by_worker = await queue.add("plain", max_attempts=2)
    by_task = await queue.add("tasked", max_attempts=2)
    by_job = await queue.add("tasked", max_attempts=2, backoff=Backoff.fixed(0.25))
    fallback = await queue.add("broken", max_attempts=2)
    start_worker({"plain": plain, "tasked": Task(tasked, backoff=Backoff.fixed(0.15)),
                  "broken": Task(broken_backoff, backoff=raises)},
                 default_backoff=Backoff.fixed(0.05))
    for job in (by_worker, by_task, by_job, fallback):
        assert await job.wait(timeout=10) == "ok"
    assert await retry_delays(queue.storage, by_worker.id) == [50]
    assert await retry_delays(queue.storage, by_task.id) == [150]
    assert await retry_delays(queue.storage, by_job.id) == [250]
    assert await retry_delays(queue.storage, fallback.id) == [50]


# -- deciding the outcome ---------------------------------------------------------------------

async def test_unrecoverable_error_fails_at_once(queue: Queue, start_worker: Any) -> None:
    class Refused(UnrecoverableError):
        pass

    calls, handler = failing(99, Refused)
    job = await queue.add("t", max_attempts=5, backoff=Backoff.fixed(0))
    start_worker({"t": handler})
    done = await settled(queue, job.id)
    assert done.state is State.FAILED and done.attempts_made == 1 and calls[job.id] == 1
    assert done.error is not None and done.error.type.endswith("Refused")
    assert await events(queue.storage, job.id, "retry") == []


async def test_worker_classifier_maps_errors(queue: Queue, start_worker: Any) -> None:
    def classify(exc: BaseException, job: Job) -> Decision | RetryAfter | None:
        if isinstance(exc, PermissionError):
            return Decision.FAIL
        if isinstance(exc, ConnectionError):
            return RetryAfter(0.1)
        if isinstance(exc, LookupError):
            raise RuntimeError("a broken classifier means: use the default rule")
        return None

    _, forbidden = failing(99, PermissionError)
    calls, flaky = failing(2, ConnectionError)
    _, lookup = failing(99, KeyError)
    _, plain = failing(99, ValueError)
    fail_now = await queue.add("forbidden", max_attempts=5)
    deferred = await queue.add("flaky", max_attempts=1)
    broken = await queue.add("lookup", max_attempts=2, backoff=Backoff.fixed(0))
    default = await queue.add("plain", max_attempts=2, backoff=Backoff.fixed(0))
    start_worker({"forbidden": forbidden, "flaky": flaky, "lookup": lookup, "plain": plain},
                 classify=classify)

    done = await settled(queue, fail_now.id)
    assert (done.state, done.attempts_made) == (State.FAILED, 1)
    assert await deferred.wait(timeout=5) == "ok"
    done = await queue.get_job(deferred.id)
    assert (done.attempts_made, done.deferrals, calls[deferred.id]) == (1, 2, 3)
    assert await retry_delays(queue.storage, deferred.id) == [100, 100]
    for job in (broken, default):
        done = await settled(queue, job.id)
        assert (done.state, done.attempts_made) == (State.FAILED, 2)


async def test_task_classifier_is_asked_before_the_worker_one(queue: Queue,
                                                              start_worker: Any) -> None:
    asked: list[str] = []

    def worker_classify(exc: BaseException, job: Job) -> Decision:
        asked.append(f"worker:{job.task}")
        return Decision.FAIL

    def task_classify(exc: BaseException, job: Job) -> Decision | None:
        asked.append(f"task:{job.task}")
        return Decision.RETRY if isinstance(exc, PermissionError) else None

    calls, handler = failing(99, PermissionError)
    _, other = failing(99, ValueError)
    retried = await queue.add("t", max_attempts=3, backoff=Backoff.fixed(0))
    fell_through = await queue.add("other", max_attempts=3, backoff=Backoff.fixed(0))
    start_worker({"t": Task(handler, classify=task_classify),
                  "other": Task(other, classify=task_classify)}, classify=worker_classify)
    done = await settled(queue, retried.id)
    assert (done.state, done.attempts_made, calls[retried.id]) == (State.FAILED, 3, 3)
    done = await settled(queue, fell_through.id)
    assert (done.state, done.attempts_made) == (State.FAILED, 1)  # task said None: worker FAIL
    assert asked.count("task:t") == 3 and "worker:t" not in asked
    assert asked.count("task:other") == 1 and asked.count("worker:other") == 1


async def test_retry_after_defers_without_using_an_attempt(queue: Queue, start_worker: Any) -> None:
    calls, bump = counter()

    async def handler(job: Job) -> str:
        if bump(job.id) <= 2:
            raise RetryAfter(0.2, "rate limited")
        return f"ok after {job.deferrals} deferrals"

    job = await queue.add("t", max_attempts=1)
    start_worker({"t": handler})
    assert await job.wait(timeout=5) == "ok after 2 deferrals"
    done = await queue.get_job(job.id)
    assert (done.attempts_made, done.deferrals, calls[job.id]) == (1, 2, 3)
    assert await retry_delays(queue.storage, job.id) == [200, 200]


async def test_retry_after_past_max_deferrals_counts_as_a_failed_attempt(
        queue: Queue, start_worker: Any) -> None:
    calls, bump = counter()
    seen: list[tuple[int, int]] = []

    async def handler(job: Job) -> None:
        bump(job.id)
        seen.append((job.attempts_made, job.deferrals))
        raise RetryAfter(0.05)

    job = await queue.add("t", max_attempts=2, backoff=Backoff.fixed(0.1))
    start_worker({"t": handler}, max_deferrals=2)
    done = await settled(queue, job.id)
    assert done.state is State.FAILED and done.error is not None
    assert done.error.type == "RetryAfter"
    assert (done.attempts_made, done.deferrals) == (2, 2)
    # two deferrals, then the cap turns each RetryAfter into an ordinary failed attempt
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 2)] and calls[job.id] == 4
    assert await retry_delays(queue.storage, job.id) == [50, 50, 100]
