"""Events: follow a queue's transitions live with QueueEvents, and resume from a cursor.

Every transition appends one entry to the queue's capped event stream, in the same Lua
script that makes the change, so the stream order is the order of the transitions and the
timestamps are the server's.

    .venv/bin/python examples/events.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import Counter

from shunter import Backoff, Event, Job, JobFailed, Queue, QueueEvents, Worker
from shunter.events import progress_of

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")

BROKEN = True  # the import handler fails until we "deploy a fix"


async def report(job: Job) -> str:
    for percent in (50, 100):
        await job.update_progress({"percent": percent})
    return "report ready"


async def import_rows(job: Job) -> int:
    if BROKEN:
        raise RuntimeError("bad row 17")
    return 42


def show(event: Event) -> str:
    extra = dict(event.fields)
    if event.name == "progress":
        extra["progress"] = str(progress_of(event))
    job = event.job_id[:8] if event.job_id else "-"
    return (f"  {event.timestamp:%H:%M:%S.%f}"[:-3] +
            f"  {event.name:9} job={job:8} state={event.state or '-':9} {extra or ''}")


async def follow(queue_name: str, seen: list[Event]) -> None:
    # since="0": everything the stream holds (this queue is new). The default, "$", means
    # "events from the moment iteration starts".
    async with QueueEvents(queue_name, REDIS_URL, since="0") as events:
        async for event in events:
            seen.append(event)
            print(show(event))


async def main() -> None:
    global BROKEN
    name = f"events-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    seen: list[Event] = []
    follower = asyncio.create_task(follow(name, seen))
    async with Queue(name, REDIS_URL) as queue:
        worker = Worker(name, {"report": report, "import_rows": import_rows}, REDIS_URL,
                        concurrency=2)
        running = asyncio.create_task(worker.run(handle_signals=False))

        print("a job that reports progress:")
        await (await queue.add("report")).wait(timeout=5)

        print("a job that fails twice, then a fix, then a dead-letter replay:")
        failed = await queue.add("import_rows", max_attempts=2, backoff=Backoff.fixed(0.1))
        with contextlib.suppress(JobFailed):
            await failed.wait(timeout=5)
        await asyncio.sleep(0.05)
        BROKEN = False
        await queue.replay(failed.id)
        await failed.wait(timeout=5)

        print("pause, a job cancelled while waiting, resume:")
        await queue.pause()
        doomed = await queue.add("report")
        await queue.cancel(doomed.id, by="ops", reason="not needed")
        await queue.resume()

        print("a scheduled job, then two more drained before they ran:")
        await (await queue.add("report", delay=0.3)).wait(timeout=5)
        for _ in range(2):
            await queue.add("report", delay=60)
        await queue.drain()

        await worker.close()
        await running
        await asyncio.sleep(0.1)  # let the follower print the last events
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

        # A listener that restarts resumes after the last event id it processed.
        cursor = next(e.id for e in seen if e.name == "replay")
        resumed: list[Event] = []
        async with QueueEvents(name, REDIS_URL, since=cursor) as events:
            async for event in events:
                resumed.append(event)
                if event.id == seen[-1].id:
                    break
        print(f"resumed after the replay event ({cursor}): {len(resumed)} later events")

        tally = Counter(e.name for e in seen)
        print("summary: " + ", ".join(f"{n}={c}" for n, c in sorted(tally.items())))
        await queue.obliterate()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
