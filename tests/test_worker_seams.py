"""The worker's seams: hooks see every step of an attempt; maintenance runs named duties
and survives a failing one; bad hooks are refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shunter import InvalidInput, Job, Queue, Worker
from shunter.worker import Hooks
from shunter.worker.maintenance import Maintenance

from .conftest import REDIS_URL, eventually
from .worker_support import settled


class Recorder(Hooks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    def claimed(self, job: Job) -> None:
        self.seen.append(("claimed", job.id, job.token))

    def started(self, job: Job) -> None:
        self.seen.append(("started", job.id, job.token))

    def settled(self, job: Job, outcome: str) -> None:
        self.seen.append(("settled", job.id, outcome))


class Broken(Hooks):
    def claimed(self, job: Job) -> None:
        raise RuntimeError("a buggy metrics exporter")


@pytest.mark.redis
async def test_hooks_see_claim_start_and_settlement(queue: Queue, start_worker: Any) -> None:
    async def ok(job: Job) -> str:
        return "fine"

    async def boom(job: Job) -> None:
        raise ValueError("no")

    recorder = Recorder()
    good = await queue.add("ok")
    bad = await queue.add("boom", max_attempts=1)
    start_worker({"ok": ok, "boom": boom}, hooks=[Broken(), recorder])
    assert (await settled(queue, good.id)).result == "fine"  # a raising hook changes nothing
    await settled(queue, bad.id)
    await eventually(lambda: len(recorder.seen) == 6, 5, message="every hook call")
    by_job = {job_id: [step for step, j, _ in recorder.seen if j == job_id] for job_id in (good.id, bad.id)}
    assert by_job == {good.id: ["claimed", "started", "settled"], bad.id: ["claimed", "started", "settled"]}
    outcomes = {j: v for step, j, v in recorder.seen if step == "settled"}
    assert outcomes == {good.id: "completed", bad.id: "failed"}


def test_hooks_must_be_hook_objects() -> None:
    with pytest.raises(InvalidInput, match="hooks"):
        Worker("q", {"t": lambda job: None}, REDIS_URL, hooks=[object()])  # type: ignore[list-item]


async def test_maintenance_runs_each_duty_on_its_period_and_survives_failures() -> None:
    maintenance = Maintenance()
    runs: dict[str, int] = {"fast": 0, "failing": 0}

    async def fast() -> None:
        runs["fast"] += 1

    async def failing() -> None:
        runs["failing"] += 1
        raise ConnectionError("redis is down")

    maintenance.register("fast", 0.01, fast)
    maintenance.register("failing", 0.01, failing)
    with pytest.raises(ValueError, match="registered already"):
        maintenance.register("fast", 1, fast)
    task = asyncio.ensure_future(maintenance.run())
    await eventually(lambda: runs["fast"] >= 5 and runs["failing"] >= 5, 5)
    maintenance.stop()
    await asyncio.wait_for(task, 5)
