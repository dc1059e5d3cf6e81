"""A task registry, one worker for two weighted queues, per-worker resources and middleware.

- Tasks are declared once with ``shunter.Tasks``; producers enqueue through the task
  object (``await send.add(...)``), so a misspelt task fails at import time.
- ``Worker(tasks=tasks)`` serves every queue of the registry, here weighted 3:1: one
  concurrency limit, lease thread and pool for both.
- ``lifespan`` opens what every job shares (here a fake connection pool) before the first
  claim and closes it after the last job; handlers see it as ``job.context``.
- A middleware times every attempt, whatever its task.

    .venv/bin/python examples/task_registry.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import shunter
from shunter import Job

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")
PREFIX = f"example-registry-{uuid.uuid4().hex[:6]}"

tasks = shunter.Tasks(redis=REDIS_URL)


@tasks.task("emails.send", queue=f"{PREFIX}-emails", timeout=10, max_attempts=3)
async def send(job: Job) -> str:
    pool = job.context["pool"]
    pool["queries"] += 1
    await asyncio.sleep(0.002)
    return f"sent to {job.data['to']}"


@tasks.task("reports.build", queue=f"{PREFIX}-reports", timeout=30)
def build_report(job: Job) -> int:  # sync: runs in the worker's threads
    job.context["pool"]["queries"] += 1
    return sum(range(job.data["rows"]))


@contextlib.asynccontextmanager
async def lifespan(worker: shunter.Worker) -> AsyncIterator[dict[str, Any]]:
    pool = {"queries": 0, "open": True}  # e.g. an asyncpg pool or an httpx.AsyncClient
    print(f"lifespan: opened the pool for {worker.queues}")
    yield {"pool": pool}
    pool["open"] = False
    print(f"lifespan: closed the pool after {pool['queries']} queries")


timings: Counter[str] = Counter()


async def timed(job: Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    try:
        return await call_next()
    finally:
        timings[job.task] += 1
        _ = time.perf_counter() - started  # a real app would log or export it


async def main() -> None:
    print(f"queue: {PREFIX}-emails")
    jobs = [await send.add({"to": f"user{i}@example.com"}) for i in range(12)]
    jobs += [await build_report.add({"rows": 1000 * i}) for i in range(1, 5)]
    print(f"enqueued {len(jobs)} jobs through the task objects (queues {tasks.queues})")

    # Worker(tasks=tasks) alone would serve both queues in strict order; weights instead:
    weights = {send.queue: 3, build_report.queue: 1}
    worker = shunter.Worker(weights, tasks, REDIS_URL, concurrency=4, lifespan=lifespan,
                            middleware=[timed])
    await worker.run(burst=True, handle_signals=False)

    first = await jobs[0].refresh()
    print(f"first email: {first.result}; report of 4000 rows: {(await jobs[-1].refresh()).result}")
    print(f"timed by the middleware: {dict(sorted(timings.items()))}")
    print(f"summary: completed={worker.counters['completed']} failed={worker.counters['failed']}")
    for name in tasks.queues:
        async with shunter.Queue(name, REDIS_URL) as queue:
            await queue.obliterate(force=True)
    await tasks.close()


if __name__ == "__main__":
    asyncio.run(main())
