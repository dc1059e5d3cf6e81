"""Cancellation: waiting and scheduled jobs at once; active jobs through their worker.

An active job's worker hears about a cancel at its next lease renewal (every lease / 3,
here 0.2 s). Async handlers then get CancelledError; sync handlers see ``job.cancelled``
become True and should return; a handler that ignores both is abandoned after
``cancel_grace`` and the job is cancelled anyway.

    .venv/bin/python examples/cancellation.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

from shunter import Job, JobFailed, JobNotInState, Queue, Worker

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


async def long_async(job: Job) -> str:
    try:
        for step in range(100):
            await job.update_progress({"step": step})
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        print("  async handler: got CancelledError, cleaning up")
        raise
    return "finished"


def long_sync(job: Job) -> str:
    for _ in range(200):
        if job.cancelled:  # set by the worker; sync code cannot be interrupted otherwise
            print("  sync handler: saw job.cancelled, returning early")
            return "stopped early"
        time.sleep(0.02)
    return "finished"


def stubborn_sync(job: Job) -> str:
    time.sleep(1.0)  # never looks at job.cancelled
    return "finished"


async def quick(job: Job) -> str:
    return "done"


async def until_active(job: Job) -> None:
    while (await job.refresh()).state != "active":
        await asyncio.sleep(0.01)


async def cancel_active(queue: Queue, task: str) -> None:
    job = await queue.add(task)
    await until_active(job)
    asked = time.monotonic()
    immediate = await queue.cancel(job.id, by="ada", reason="user pressed stop")
    print(f"{task}: cancel returned {immediate} (active: its worker was asked to stop)")
    with contextlib.suppress(JobFailed):  # wait() raises JobFailed for cancelled jobs
        await job.wait(timeout=10)
    print(f"{task}: {job.state} {time.monotonic() - asked:.2f}s after the request, "
          f"by={job.cancelled_by!r} reason={job.cancel_reason!r}")


async def main() -> None:
    name = f"cancellation-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    async with Queue(name, REDIS_URL) as queue:
        # No worker yet: these jobs are waiting / scheduled, and cancel takes effect at once.
        waiting = await queue.add("quick")
        scheduled = await queue.add("quick", delay=60)
        for job in (waiting, scheduled):
            was = job.state
            print(f"{was} job: cancel returned {await queue.cancel(job.id, by='ops')} "
                  f"-> {(await job.refresh()).state}")

        worker = Worker(name, {"quick": quick, "long_async": long_async, "long_sync": long_sync,
                               "stubborn_sync": stubborn_sync},
                        REDIS_URL, lease=0.6, cancel_grace=0.3, concurrency=4)
        running = asyncio.create_task(worker.run(handle_signals=False))

        await cancel_active(queue, "long_async")
        await cancel_active(queue, "long_sync")
        # This one ignores job.cancelled: after cancel_grace (0.3 s) the worker abandons the
        # thread (it runs on until it returns, its result is discarded) and cancels the job.
        await cancel_active(queue, "stubborn_sync")

        done = await queue.add("quick")
        await done.wait(timeout=5)
        try:
            await queue.cancel(done.id)
        except JobNotInState as exc:
            print(f"finished job: {exc}")

        await worker.close()
        await running
        counts = await queue.counts()
        print(f"summary: cancelled={counts['cancelled']} completed={counts['completed']} "
              f"worker={dict(worker.counters)}")
        await queue.obliterate()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
