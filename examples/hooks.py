"""Hooks: watch every attempt of a worker without touching the handlers — the seam that
metrics and tracing plug into.

A hook sees each job claimed, started and settled (completed, retried, failed, cancelled,
released, or refused by the fence), each lost lease and each abandoned handler. Here one
hook times every attempt and counts the outcomes.

    .venv/bin/python examples/hooks.py
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter

from shunter import Backoff, Job, Queue, Worker
from shunter.worker import Hooks

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


class Timings(Hooks):
    """Counts outcomes and measures how long each attempt ran, from start to settlement."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.started_at: dict[tuple[str, int | None], float] = {}
        self.seconds: list[float] = []

    def started(self, job: Job) -> None:
        self.started_at[(job.id, job.token)] = time.monotonic()

    def settled(self, job: Job, outcome: str) -> None:
        self.outcomes[outcome] += 1
        began = self.started_at.pop((job.id, job.token), None)
        if began is not None:
            self.seconds.append(time.monotonic() - began)


async def resize(job: Job) -> str:
    await asyncio.sleep(0.01 * job.data["n"])
    if job.data["n"] == 3 and job.attempt == 1:
        raise RuntimeError("flaky storage")  # retried once
    return "resized"


async def main() -> None:
    name = f"example-hooks-{uuid.uuid4().hex[:6]}"
    print(f"queue: {name}")
    timings = Timings()
    async with Queue(name, REDIS_URL) as queue:
        jobs = [await queue.add("resize", {"n": n}, backoff=Backoff.fixed(0)) for n in range(6)]
        worker = Worker(name, {"resize": resize}, REDIS_URL, concurrency=4, hooks=[timings])
        await worker.run(burst=True)
        for job in jobs:
            assert await job.wait(timeout=10) == "resized"
        print("outcomes:", dict(timings.outcomes))
        print(f"attempts timed: {len(timings.seconds)}, longest {max(timings.seconds) * 1000:.0f} ms")
        assert timings.outcomes == {"completed": 6, "retried": 1}
        await queue.obliterate()


if __name__ == "__main__":
    asyncio.run(main())
