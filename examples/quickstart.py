"""Quick start: a producer and a worker in one process (this is what `make demo` runs).

Enqueues a multi-stage job that reports progress, a flaky job that succeeds on its third
attempt, a job that fails into the dead-letter set, a scheduled job and a sync handler;
follows the queue's events to print live progress; prints a summary; deletes the queue.

    .venv/bin/python examples/quickstart.py      # uses $SHUNTER_REDIS_URL or the embedded server
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

from shunter import Backoff, Job, JobFailed, Queue, QueueEvents, Worker
from shunter.events import progress_of

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")

STAGES = ["outline", "research", "draft", "review"]


async def build_plan(job: Job) -> dict[str, object]:
    """A multi-stage async handler: one structured progress report per stage."""
    for i, stage in enumerate(STAGES, start=1):
        await job.update_progress({"stage": i, "name": stage, "message": f"working on the {stage}",
                                   "percent": round(100 * (i - 1) / len(STAGES))})
        await job.log(f"stage {i} ({stage}) started")
        await asyncio.sleep(0.15)  # the real work would go here
    await job.update_progress({"stage": len(STAGES), "name": "done", "message": "plan ready",
                               "percent": 100})
    return {"user": job.data["user"], "stages": len(STAGES)}


async def call_flaky_api(job: Job) -> str:
    """Fails on its first two attempts, then succeeds."""
    if job.attempt < 3:
        raise ConnectionError(f"upstream timed out (attempt {job.attempt})")
    return f"ok on attempt {job.attempt}"


async def charge_card(job: Job) -> None:
    """Always fails: after its attempts are used up it lands in the dead-letter set."""
    raise ValueError(f"card {job.data['card']} declined")


def send_reminder(job: Job) -> str:
    """A sync handler: runs in the worker's thread pool, reports with the _sync twins."""
    job.update_progress_sync({"stage": 1, "name": "send", "message": "sending", "percent": 50})
    time.sleep(0.05)  # blocking I/O is fine here: this is not the event loop
    return f"reminded {job.data['to']}"


async def follow(queue_name: str, names: dict[str, str]) -> None:
    """Print live progress and the interesting transitions, as they happen."""
    async with QueueEvents(queue_name, REDIS_URL, since="0") as events:
        async for event in events:
            who = names.get(event.job_id, event.job_id)
            if event.name == "progress":
                p = progress_of(event)
                if isinstance(p, dict):
                    print(f"  [{who}] stage {p['stage']} {p['name']}: {p['message']} ({p['percent']}%)")
            elif event.name == "retry":
                print(f"  [{who}] attempt failed, retrying in {int(event.fields['delay_ms'])} ms")
            elif event.name in ("complete", "fail", "promote"):
                print(f"  [{who}] {event.name} -> {event.state}")


async def main() -> None:
    name = f"quickstart-{uuid.uuid4().hex[:8]}"
    print(f"queue: {name}")
    async with Queue(name, REDIS_URL) as queue:
        quick_retry = Backoff.fixed(0.2)
        plan = await queue.add("build_plan", {"user": 42}, job_id="plan-user-42")
        again = await queue.add("build_plan", {"user": 42}, job_id="plan-user-42")
        print(f"enqueued {plan.id}; enqueueing the same id again returned existing={again.existing}")
        flaky = await queue.add("call_flaky_api", max_attempts=3, backoff=quick_retry)
        doomed = await queue.add("charge_card", {"card": "4242"}, max_attempts=2, backoff=quick_retry)
        later = await queue.add("send_reminder", {"to": "ada"}, delay=1.0)
        print(f"scheduled reminder: state={later.state}")
        names = {plan.id: "plan", flaky.id: "flaky", doomed.id: "charge", later.id: "reminder"}

        follower = asyncio.create_task(follow(name, names))
        worker = Worker(name, {"build_plan": build_plan, "call_flaky_api": call_flaky_api,
                               "charge_card": charge_card, "send_reminder": send_reminder},
                        REDIS_URL, concurrency=4)
        started = time.monotonic()
        # burst=True: return once nothing is waiting, scheduled or running.
        await worker.run(burst=True, handle_signals=False)
        print(f"worker finished in {time.monotonic() - started:.1f}s: {dict(worker.counters)}")

        print(f"plan result: {await plan.wait(timeout=5)}")
        print(f"plan log: {await plan.logs()}")
        print(f"flaky result: {await flaky.wait(timeout=5)}")
        print(f"reminder result: {await later.wait(timeout=5)}")
        try:
            await doomed.wait(timeout=5)
        except JobFailed as exc:
            error = exc.job.error
            assert error is not None
            print(f"charge failed after {exc.job.attempts_made} attempts: {error.type}: {error.message}")
        print(f"dead-letter set: {await queue.job_ids('failed')}")

        await asyncio.sleep(0.1)  # let the follower print the last events
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

        counts = await queue.counts()
        print("summary: " + ", ".join(f"{state}={n}" for state, n in counts.items()))
        await queue.obliterate()


if __name__ == "__main__":
    # The worker logs its startup checks (server version, persistence) and warnings.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
