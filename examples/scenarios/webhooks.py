"""Scenario 3 of PRODUCT.md — webhook event ingestion from providers that redeliver.

What it shows, mapped to the product brief:

- Retry schedule 5 s, 15 s, 1 min, 5 min, 15 min, 1 h, each with 0–1 s jitter
  (``Backoff.schedule(..., spread=1)``), so an event gets 7 attempts.
- After the schedule is exhausted the event lands in the dead-letter set (the queue's
  ``failed`` jobs), kept durably for 30 days; ``queue.replay(id)`` or
  ``shunter replay ID --queue webhooks`` runs it again.
- Idempotent by the provider's event id: the job id is ``<provider>.<event id>``, so a
  redelivered event is not enqueued twice; the handler also checks a ledger (your
  database's unique constraint) so an event retried after its side effect is not applied
  twice.
- A bad signature is not worth retrying: ``UnrecoverableError`` dead-letters it at once.
- Events arrive in batches (``add_bulk``: one round trip per batch).

``time_scale`` compresses the schedule for the demo and the tests: at 0.001 the hour-long
schedule takes under 5 seconds.

    .venv/bin/python examples/scenarios/webhooks.py
    shunter worker examples.scenarios.webhooks:make_worker
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from shunter import Backoff, Job, JobFailed, Queue, Retention, UnrecoverableError, Worker

QUEUE = "webhooks"
TASK = "ingest_event"
SCHEDULE_SECONDS = [5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]
JITTER_SECONDS = 1.0
KEEP_DEAD_LETTERS = Retention(count=None, age=30 * 86400)


class Downstream503(Exception):
    """The service we forward events to is unavailable (retryable)."""


class Ledger:
    """Stands in for the database table whose unique key is the provider's event id."""

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}

    def apply_once(self, event_key: str) -> bool:
        """Record the event; False if it was applied before."""
        if event_key in self.applied:
            return False
        self.applied[event_key] = int(time.time() * 1000)
        return True


LEDGER = Ledger()


async def ingest_event(job: Job) -> dict[str, Any]:
    """Verify, apply once, acknowledge. ``kind`` simulates what the downstream does."""
    kind = job.data["kind"]
    if kind == "bad_signature":
        raise UnrecoverableError("signature check failed: not retrying a forged event")
    if kind == "flaky" and job.attempt <= 2:
        raise Downstream503(f"downstream answered 503 (attempt {job.attempt})")
    if kind == "endpoint_gone":
        raise Downstream503("downstream answered 410 Gone for this account")
    applied = LEDGER.apply_once(f"{job.queue}/{job.id}")
    return {"event": job.data["event_id"], "applied": applied}


def make_worker(redis: str | Redis | None = None, queue: str = QUEUE) -> Worker:
    return Worker(queue, {TASK: ingest_event}, redis, concurrency=10, job_timeout=30,
                  shutdown_timeout=30)


def delivery(provider: str, event_id: str, kind: str, time_scale: float = 1.0) -> dict[str, Any]:
    """One received webhook, as an ``add_bulk`` entry keyed by the provider's event id."""
    return {
        "task": TASK, "data": {"provider": provider, "event_id": event_id, "kind": kind},
        "job_id": f"{provider}.{event_id}", "max_attempts": len(SCHEDULE_SECONDS) + 1,
        "backoff": Backoff.schedule([s * time_scale for s in SCHEDULE_SECONDS],
                                    spread=JITTER_SECONDS * time_scale),
        "keep_failed": KEEP_DEAD_LETTERS,
    }


def deliveries(time_scale: float) -> list[dict[str, Any]]:
    """Twelve events; providers redeliver three of them (15 deliveries in all)."""
    kinds = ["ok"] * 7 + ["flaky", "flaky", "endpoint_gone", "endpoint_gone", "bad_signature"]
    events = [delivery("stripe" if i % 2 else "github", f"evt_{i:03d}", kind, time_scale)
              for i, kind in enumerate(kinds)]
    return [*events, events[0], events[3], events[7]]  # at-least-once delivery


async def run(redis: str | Redis | None = None, *, queue: str = QUEUE,
              time_scale: float = 0.001) -> dict[str, Any]:
    """Receive the deliveries in two batches, process them, report what happened."""
    started = time.monotonic()
    inbox = Queue(queue, redis)
    worker = make_worker(inbox.storage.client, queue)
    running = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        received = deliveries(time_scale)
        jobs = await inbox.add_bulk(received[:8]) + await inbox.add_bulk(received[8:])
        fresh = [job for job in jobs if not job.existing]
        for job in fresh:
            await _finished(job)
        counts = await inbox.counts()
        dead = await inbox.job_ids("failed")
    finally:
        await worker.close()
        await running
        await inbox.close()
    return {
        "scenario": "webhooks", "queue": queue, "received": len(received),
        "enqueued": len(fresh), "duplicates": len(received) - len(fresh),
        "processed": counts["completed"], "retried": worker.counters["retried"],
        "dead_lettered": counts["failed"], "dead_letter_ids": sorted(dead),
        "schedule": [round(s * time_scale, 3) for s in SCHEDULE_SECONDS],
        "seconds": round(time.monotonic() - started, 2),
    }


async def _finished(job: Job) -> None:
    """Wait for a terminal state whatever it is (dead letters are expected here)."""
    with contextlib.suppress(JobFailed):
        await job.wait(timeout=120)


async def main() -> None:
    """Run once on a fresh queue name, print the report, delete the queue."""
    queue = f"{QUEUE}-{uuid.uuid4().hex[:8]}"
    report = await run(queue=queue)
    print(f"queue: {queue}")
    for key in ("received", "duplicates", "processed", "retried", "dead_lettered", "seconds"):
        print(f"{key}: {report[key]}")
    async with Queue(queue) as leftovers:
        await leftovers.obliterate(force=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
