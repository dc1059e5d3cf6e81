"""Scenario 2 of PRODUCT.md — AI plan generation: a six-stage pipeline behind an HTTP endpoint.

What it shows, mapped to the product brief:

- The HTTP handler (:func:`request_plan`) enqueues and returns a job id in milliseconds.
- One unfinished plan per user: ``Dedup.unique(f"plan:user:{user}")``, so a second click
  while a plan is waiting, running or between retries returns that plan
  (``job.deduplicated is True``), and once it finished (completed, failed for good,
  cancelled) the user's next request makes a new plan at once. The job id is the HTTP
  request's own id, so a client that re-sends the same request gets the same job back
  (``job.existing``) even after the plan finished. (It was a job id derived from the user,
  kept for a day: a user could not ask for a new plan until retention deleted the old one.)
- Worker concurrency 2; six stages, each reporting ``{stage, name, message, percent}``
  with ``job.update_progress`` — clients poll ``job.progress`` or follow the queue's
  ``progress`` events (what ``shunter demo`` draws as progress bars).
- The result is persisted on success; 3 attempts with backoff 5 s / 10 s / 20 s; completed
  plans kept 24 h (at most 100), failed ones 7 days.
- Error messages are logged with personal data (e-mail addresses) redacted.
- Deploys: the worker finishes in-flight plans on SIGTERM (``shunter worker`` handles it).

Run it on its own (embedded server, or ``$SHUNTER_REDIS_URL``)::

    .venv/bin/python examples/scenarios/plan_pipeline.py

or as a worker for real traffic::

    shunter worker examples.scenarios.plan_pipeline:make_worker
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from shunter import Backoff, Dedup, Job, JobFailed, Queue, Retention, Worker

QUEUE = "plans"
TASK = "generate_plan"
STAGES = [
    ("profile", "reading the member's profile and history"),
    ("goals", "working out goals and constraints"),
    ("research", "asking the model for candidate activities"),
    ("draft", "drafting the week-by-week plan"),
    ("review", "checking the draft against the constraints"),
    ("finalize", "formatting and saving the plan"),
]
#: 3 attempts, waiting 5 s then 10 s (a third retry would wait 20 s).
BACKOFF_SECONDS = [5.0, 10.0, 20.0]
KEEP_COMPLETED = Retention(count=100, age=24 * 3600)
KEEP_FAILED = Retention(count=None, age=7 * 86400)

log = logging.getLogger("examples.plan_pipeline")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def redact(text: str) -> str:
    """Personal data never reaches the logs: e-mail addresses are masked."""
    return _EMAIL.sub("<email>", text)


class ModelTimeout(Exception):
    """The language model did not answer in time (retryable)."""


async def generate_plan(job: Job) -> dict[str, Any]:
    """The worker's handler: six stages, one progress report at the start of each."""
    user, stage_seconds = job.data["user"], float(job.data["stage_seconds"])
    for number, (name, message) in enumerate(STAGES, start=1):
        percent = round(100 * (number - 1) / len(STAGES))
        await job.update_progress({"stage": number, "name": name, "message": message,
                                   "percent": percent})
        await asyncio.sleep(stage_seconds)  # the model call would go here
        if name == "research" and job.data.get("fail_first_attempt") and job.attempt == 1:
            error = f"model timed out while planning for {job.data['email']}"
            log.warning("plan %s: %s", job.id, redact(error))
            raise ModelTimeout(redact(error))
    await job.update_progress({"stage": len(STAGES), "name": "done", "message": "plan ready",
                               "percent": 100})
    return {"user": user, "weeks": 4, "stages": [name for name, _ in STAGES]}


def make_worker(redis: str | Redis | None = None, queue: str = QUEUE) -> Worker:
    """The plan worker: two plans at a time (model calls are expensive)."""
    return Worker(queue, {TASK: generate_plan}, redis, concurrency=2, job_timeout=600,
                  shutdown_timeout=600)


async def request_plan(plans: Queue, user: str, email: str, request_id: str, *,
                       time_scale: float = 1.0, stage_seconds: float = 2.0,
                       fail_first_attempt: bool = False) -> Job:
    """What the HTTP endpoint does: enqueue (one round trip) and answer with the job id.
    ``request_id`` is the request's idempotency key; while the user has an unfinished
    plan, the answer is that plan instead. ``time_scale`` shrinks the backoff for demos
    and tests (0.01 = a hundred times faster)."""
    return await plans.add(
        TASK, {"user": user, "email": email, "stage_seconds": stage_seconds,
               "fail_first_attempt": fail_first_attempt},
        job_id=f"plan-{user}-{request_id}", dedup=Dedup.unique(f"plan:user:{user}"),
        max_attempts=3,
        backoff=Backoff.schedule([s * time_scale for s in BACKOFF_SECONDS]),
        keep_completed=KEEP_COMPLETED, keep_failed=KEEP_FAILED)


USERS = [("ana", False), ("ben", False), ("chloe", True), ("dev", False), ("eli", False)]


async def run(redis: str | Redis | None = None, *, queue: str = QUEUE, time_scale: float = 0.01,
              stage_seconds: float = 0.4) -> dict[str, Any]:
    """Five users ask for a plan (one asks twice); ``chloe``'s first attempt times out and
    is retried. Returns a report of what happened."""
    started = time.monotonic()
    plans = Queue(queue, redis)
    worker = make_worker(plans.storage.client, queue)
    running = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        jobs, latencies = [], []
        for request, (user, fail) in enumerate(USERS, start=1):
            t0 = time.perf_counter()
            jobs.append(await request_plan(plans, user, f"{user}@example.com", str(request),
                                           time_scale=time_scale, stage_seconds=stage_seconds,
                                           fail_first_attempt=fail))
            latencies.append((time.perf_counter() - t0) * 1000)
        # ana clicks again (a new request) while her plan is still waiting or running
        again = await request_plan(plans, "ana", "ana@example.com", str(len(USERS) + 1),
                                   time_scale=time_scale, stage_seconds=stage_seconds)
        results: dict[str, Any] = {}
        for job in jobs:
            try:
                results[job.id] = await job.wait(timeout=120)
            except JobFailed as exc:
                results[job.id] = str(exc)
        counts = await plans.counts()
    finally:
        await worker.close()
        await running
        await plans.close()
    return {
        "scenario": "plan pipeline", "queue": queue, "enqueued": len(jobs),
        "duplicates": int(again.deduplicated), "processed": counts["completed"],
        "retried": worker.counters["retried"], "dead_lettered": counts["failed"],
        "max_enqueue_ms": round(max(latencies), 2), "results": results,
        "seconds": round(time.monotonic() - started, 2),
    }


async def main() -> None:
    """Run once on a fresh queue name, print the report, delete the queue."""
    queue = f"{QUEUE}-{uuid.uuid4().hex[:8]}"
    report = await run(queue=queue)
    print(f"queue: {queue}")
    for key in ("enqueued", "duplicates", "processed", "retried", "dead_lettered",
                "max_enqueue_ms", "seconds"):
        print(f"{key}: {report[key]}")
    async with Queue(queue) as leftovers:
        await leftovers.obliterate(force=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
