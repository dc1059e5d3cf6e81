"""A queue-wide concurrency limit: at most 2 jobs of the queue run at once, across every
worker, whatever each worker's own concurrency (say, a partner API that allows two
connections).

Two workers of concurrency 5 share the queue; ``queue.configure(concurrency=2)`` stores the
limit on the server, and the claim script enforces it: no job over the limit is claimed,
and a job leaving ``active`` wakes the idle workers.

    .venv/bin/python examples/queue_limits.py
"""

from __future__ import annotations

import asyncio
import os
import uuid

from shunter import Job, Queue, Worker

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


async def main() -> None:
    name = f"example-limits-{uuid.uuid4().hex[:6]}"
    print(f"queue: {name}")
    running, most = 0, 0

    async def call_partner(job: Job) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)  # the remote call
        running -= 1
        return f"synced {job.data['account']}"

    async with Queue(name, REDIS_URL) as queue:
        print(f"stored: {await queue.configure(concurrency=2)}")
        await queue.add_bulk([{"task": "sync", "data": {"account": n}} for n in range(20)])
        workers = [Worker(name, {"sync": call_partner}, REDIS_URL, concurrency=5)
                   for _ in range(2)]
        await asyncio.gather(*(w.run(burst=True, handle_signals=False) for w in workers))
        done = sum(w.counters["completed"] for w in workers)
        print(f"each worker ran: {[w.counters['completed'] for w in workers]}")
        print(f"summary: completed={done} most_at_once={most}")
        await queue.obliterate(force=True)


if __name__ == "__main__":
    asyncio.run(main())
