"""The shortest end-to-end path: enqueue, run, read the result."""

import pytest

from shunter import Job, Queue, Worker

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis


async def test_enqueue_and_process(queue: Queue) -> None:
    async def send(job: Job) -> dict[str, int]:
        return {"doubled": job.data["n"] * 2}

    job = await queue.add("send", {"n": 21})
    await Worker(queue.name, {"send": send}, REDIS_URL, lease=2).run(burst=True, handle_signals=False)
    assert await job.wait(timeout=5) == {"doubled": 42}
    assert (await queue.counts())["completed"] == 1
