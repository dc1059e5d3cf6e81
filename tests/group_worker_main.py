"""A worker process for tests/test_group_workers.py (not a test module itself).

    python -m tests.group_worker_main QUEUE REDIS_URL CONCURRENCY

Runs one Worker whose ``hit`` handler counts itself in and out of Redis counters kept
apart from the queue's keys (``gtest:{QUEUE}:cur:<group>`` and ``...:cur:*`` for all),
appending the count it saw on entry to ``...:seen:<group>`` / ``...:seen:*``: a count is
taken after the job was claimed and given back before it completes, so it never exceeds
the number of jobs the server holds active. SIGTERM stops the worker.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio

from shunter import Job, Worker


def main(argv: list[str]) -> None:
    queue, url, concurrency = argv
    prefix = f"gtest:{{{queue}}}:"
    client = redis.asyncio.Redis.from_url(url)

    async def hit(job: Job) -> str:
        group = job.group or ""
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(f"{prefix}cur:{group}")
            pipe.incr(f"{prefix}cur:*")
            mine, everyone = await pipe.execute()
        await client.rpush(f"{prefix}seen:{group}", mine)
        await client.rpush(f"{prefix}seen:*", everyone)
        await asyncio.sleep(float(job.data.get("ms", 20)) / 1000)
        async with client.pipeline(transaction=False) as pipe:
            pipe.decr(f"{prefix}cur:{group}")
            pipe.decr(f"{prefix}cur:*")
            await pipe.execute()
        return group

    worker = Worker(queue, {"hit": hit}, url, concurrency=int(concurrency), lease=5,
                    block_timeout=1, shutdown_timeout=5)
    asyncio.run(worker.run())


if __name__ == "__main__":
    main(sys.argv[1:])
