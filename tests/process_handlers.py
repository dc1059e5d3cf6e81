"""Handlers for the process pool tests (tests/test_process_pool.py): a child process imports
them by name, so they live at module level in an importable module."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from shunter import PayloadTooLarge, RetryAfter, UnrecoverableError


def square(job: Any) -> dict[str, int]:
    return {"square": job.data["n"] ** 2, "pid": os.getpid()}


def fail(job: Any) -> None:
    raise ValueError(f"bad input {job.data!r} on attempt {job.attempt}")


def give_up(job: Any) -> None:
    raise UnrecoverableError("no point in trying again")


def defer_once(job: Any) -> str:
    if job.deferrals == 0:
        raise RetryAfter(0.05, "come back soon")
    return f"deferred {job.deferrals} time(s)"


class Unpicklable(Exception):
    def __init__(self, code: int, detail: str) -> None:  # unpickling calls it with one arg
        super().__init__(f"code {code}: {detail}")


def raise_unpicklable(job: Any) -> None:
    raise Unpicklable(7, "custom constructor")


def report(job: Any) -> str:
    for step in range(3):
        job.update_progress_sync({"step": step, "pid": os.getpid()})
        job.log_sync(f"step {step}")
    try:
        job.update_progress_sync("x" * 5000)
    except PayloadTooLarge as exc:
        job.log_sync(f"refused: {type(exc).__name__}")
    return "reported"


def from_threads(job: Any) -> int:
    """Writes from several threads of the handler at once."""
    threads = [threading.Thread(target=job.log_sync, args=(f"thread {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(threads)


def spin(job: Any) -> None:
    """CPU-bound and deaf to job.cancelled: only ending its process stops it."""
    job.update_progress_sync({"pid": os.getpid()})
    while True:
        sum(range(1000))


def sleepy(job: Any) -> int:
    job.update_progress_sync({"pid": os.getpid()})
    time.sleep(job.data.get("seconds", 1.0))
    return os.getpid()


def polite(job: Any) -> str:
    """Stops when asked to."""
    job.update_progress_sync({"pid": os.getpid()})
    deadline = time.monotonic() + 20
    while not job.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    return "stopped" if job.cancelled else "ran out"


def exit_3(job: Any) -> None:
    os._exit(3)


def crash_first(job: Any) -> int:
    """Its first attempt's process dies; the next attempt runs in a new one."""
    if job.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def calls_sys_exit(job: Any) -> None:
    raise SystemExit(5)


def returns_a_set(job: Any) -> set[int]:
    return {1, 2}


def snapshot(job: Any) -> dict[str, Any]:
    return {"id": job.id, "queue": job.queue, "task": job.task, "attempt": job.attempt,
            "max_attempts": job.max_attempts, "data": job.data, "token": job.token,
            "cancelled": job.cancelled}


def throttled_once(job: Any) -> dict[str, Any]:
    """Raises RateLimited (seconds and scope from the job's data) the first time it runs,
    told by a Redis key (``job.data["flag"]``, SET NX), not by ``job.throttled``; returns
    the ``job.throttled`` and ``job.group`` it saw the next time (None: the job has no
    such attribute) (tests/test_group_workers.py)."""
    import redis

    from shunter import RateLimited

    with redis.Redis.from_url(os.environ["SHUNTER_TEST_REDIS_URL"]) as client:
        first = client.set(job.data["flag"], 1, nx=True, ex=600)
    if first:
        raise RateLimited(job.data["park"], scope=job.data.get("scope", "group"))
    return {"throttled": getattr(job, "throttled", None), "group": getattr(job, "group", None)}


def nap(job: Any) -> str:
    time.sleep(job.data.get("ms", 0) / 1000)
    return "napped"
