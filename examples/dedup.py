"""Dedup modes: ``queue.add(..., dedup=Dedup.unique|ttl|throttle|debounce(key))``.

- unique: a user double-clicks "export": one export job; once it finished, the next
  click makes a new one.
- ttl: the same, but the key lapses after a period even if the job is stuck.
- throttle: a "refresh the dashboard" job at most once per period, however often asked,
  finished or not.
- debounce: search-as-you-type: each keystroke replaces the pending job's text and pushes
  its start back, so only the last text is searched.

    .venv/bin/python examples/dedup.py
"""

from __future__ import annotations

import asyncio
import os
import uuid

from shunter import Dedup, Job, Queue, Worker

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


async def main() -> None:
    name = f"example-dedup-{uuid.uuid4().hex[:6]}"
    print(f"queue: {name}")
    ran: list[tuple[str, object]] = []

    async def record(job: Job) -> None:
        ran.append((job.task, job.data))

    tasks = {"export": record, "refresh": record, "search": record}

    async def drain() -> None:
        worker = Worker(name, tasks, REDIS_URL, concurrency=4)
        await worker.run(burst=True, handle_signals=False)  # returns when nothing is left

    async with Queue(name, REDIS_URL) as queue:
        # unique: the second click returns the first job
        first = await queue.add("export", {"user": 42}, dedup=Dedup.unique("export:user:42"))
        click = await queue.add("export", {"user": 42}, dedup=Dedup.unique("export:user:42"))
        print(f"unique: second click deduplicated={click.deduplicated}, same job={click.id == first.id}")
        await drain()
        later = await queue.add("export", {"user": 42}, dedup=Dedup.unique("export:user:42"))
        print(f"unique: after the export finished, a new job={not later.deduplicated}")

        # ttl: unique, and bounded in time
        held = await queue.add("export", {"user": 7}, dedup=Dedup.ttl("export:user:7", 0.3))
        await asyncio.sleep(0.4)  # longer than the period: the key lapsed, the job still waits
        lapsed = await queue.add("export", {"user": 7}, dedup=Dedup.ttl("export:user:7", 0.3))
        print(f"ttl: after 0.4 s a new job={lapsed.id != held.id}")

        # throttle: once per period, even after the job ran
        asks = [await queue.add("refresh", n, dedup=Dedup.throttle("dashboard", 60))
                for n in range(5)]
        await drain()
        after = await queue.add("refresh", 99, dedup=Dedup.throttle("dashboard", 60))
        print(f"throttle: 5 asks made {len({a.id for a in asks})} job; asked again after it "
              f"ran: deduplicated={after.deduplicated}")

        # debounce: the last keystroke wins, 0.2 s after it
        for text in ("s", "sh", "shu", "shun", "shunter"):
            typed = await queue.add("search", text, dedup=Dedup.debounce("search:user:42"),
                                    delay=0.2)
        print(f"debounce: one pending job with data={typed.data!r}, state={typed.state}")
        await drain()

        searched = [data for task, data in ran if task == "search"]
        refreshed = sum(task == "refresh" for task, _ in ran)
        exports = sum(task == "export" for task, _ in ran)
        print(f"summary: exports={exports} refreshes={refreshed} searched={searched}")
        await queue.obliterate(force=True)


if __name__ == "__main__":
    asyncio.run(main())
