"""Spreading a batch of jobs across a window: ``queue.add_spread``.

A post by a group of 12 members: each member "likes" it at a time spread linearly across
a window (here 0.5–3.5 s after the post, standing in for 5–30 minutes), with ±10 % of a
slot of jitter, in one pipelined call. The batch id makes a re-delivered post event
harmless: the same jobs come back and nothing is added.

    .venv/bin/python examples/spread.py
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from shunter import Job, Queue, Worker

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")
MEMBERS = 12
START, END = 0.5, 3.5  # seconds after the post


async def main() -> None:
    name = f"example-spread-{uuid.uuid4().hex[:6]}"
    print(f"queue: {name}")
    started: dict[int, float] = {}

    async def like(job: Job) -> None:
        started[job.data["member"]] = time.monotonic()

    async with Queue(name, REDIS_URL) as queue:
        entries = [{"task": "like", "data": {"post": "post-1", "member": m}} for m in range(MEMBERS)]
        posted = time.monotonic()
        jobs = await queue.add_spread(entries, start=START, end=END, jitter=0.1,
                                      batch_id="post-1.likes")
        again = await queue.add_spread(entries, start=START, end=END, jitter=0.1,
                                       batch_id="post-1.likes")
        print(f"scheduled {len(jobs)} likes; the re-delivered event added "
              f"{sum(not j.existing for j in again)} more")

        worker = Worker(name, {"like": like}, REDIS_URL, concurrency=4)
        await worker.run(burst=True, handle_signals=False)  # returns when nothing is left

        slot = (END - START) / MEMBERS
        for member in range(MEMBERS):
            linear = START + (member + 0.5) * slot
            print(f"member {member:2}: planned {linear:4.2f}s, "
                  f"started {started[member] - posted:4.2f}s after the post")
        in_order = [started[m] for m in range(MEMBERS)] == sorted(started.values())
        print(f"summary: liked={len(started)} in_order={in_order}")
        await queue.obliterate(force=True)


if __name__ == "__main__":
    asyncio.run(main())
