"""The process pool: a CPU-bound sync handler in child processes, with
``Task(fn, executor="process")``.

Counting primes in pure Python holds the GIL: in a thread it would slow the worker's event
loop (and every other job) down; in a child process it uses another core. The handler
reports progress and log lines (written by the worker, fenced, as from a thread), its
result comes back, a runaway job is ended at its timeout, and the worker's event loop
stays responsive meanwhile.

The handler must be a module-level function (the child imports it by name), and a script
that starts a worker must do so under ``if __name__ == "__main__":`` (a spawned child
imports the main module too).

    .venv/bin/python examples/process_pool.py      # uses $SHUNTER_REDIS_URL or the embedded server
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

from shunter import JobFailed, ProcessJob, Queue, Task, Worker

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


def count_primes(job: ProcessJob) -> dict[str, int]:
    """Counts the primes below ``limit`` in chunks, reporting progress after each chunk.
    Runs in a child process, where ``job`` is a ProcessJob: the job's fields,
    ``update_progress_sync``, ``log_sync`` and ``cancelled``."""
    limit, chunks = job.data["limit"], 4
    found = 0
    for chunk in range(chunks):
        if job.cancelled:  # cancel, lost lease or shutdown
            break
        low, high = limit * chunk // chunks, limit * (chunk + 1) // chunks
        found += sum(1 for n in range(max(low, 2), high) if all(n % d for d in range(2, int(n**0.5) + 1)))
        job.update_progress_sync({"percent": 100 * (chunk + 1) // chunks, "primes": found})
    job.log_sync(f"{found} primes below {limit}")
    return {"limit": limit, "primes": found, "pid": os.getpid()}


def runaway(job: ProcessJob) -> None:
    """Never returns, never looks at job.cancelled: only ending its process stops it."""
    while True:
        sum(range(10_000))


async def main() -> None:
    name = f"process-pool-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    async with Queue(name, REDIS_URL) as queue:
        worker = Worker(name, {"count_primes": Task(count_primes, executor="process"),
                               "runaway": Task(runaway, executor="process", timeout=1.0)},
                        REDIS_URL, processes=2)
        running = asyncio.create_task(worker.run(handle_signals=False))

        started = time.monotonic()
        jobs = [await queue.add("count_primes", {"limit": limit}) for limit in (100_000, 120_000)]
        stuck = await queue.add("runaway", max_attempts=1)
        for job in jobs:
            result = await job.wait(timeout=30)
            print(f"primes below {result['limit']}: {result['primes']} "
                  f"(in pid {result['pid']}; the worker is pid {os.getpid()})")
            print(f"  progress {job.progress}, log {await job.logs()}")
        try:
            await stuck.wait(timeout=30)
        except JobFailed as exc:
            print(f"runaway: {exc.job.error.type if exc.job.error else '?'}: "
                  f"{exc.job.error.message if exc.job.error else ''}")
        print(f"took {time.monotonic() - started:.1f}s; the event loop's worst lag meanwhile: "
              f"{worker.loop_lag * 1000:.0f} ms")

        await worker.close()
        await running
        print(f"summary: completed={worker.counters['completed']} failed={worker.counters['failed']} "
              f"processes started={worker.processes.started} ended={worker.processes.lost}")
        await queue.obliterate()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
