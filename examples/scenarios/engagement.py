"""Scenario 1 of PRODUCT.md — engagement automation: a group of members reacts to a new post.

What it shows, mapped to the product brief:

- Likes are scheduled 5–30 min after the post, spread linearly across the window by
  member index with ±10 % jitter; comments 1–6 h, ±15 % (:func:`stagger`).
- Worker concurrency 5, job timeout 30 s, 3 attempts, exponential backoff from 30 s.
- Errors are classified (:func:`classify`): ``rate_limit`` → retry after the delay the
  remote asked for (without using an attempt); ``network`` → retry; ``auth`` and
  ``not_found`` → stop, a human must look; anything else → retry.
- At most once: the job id is the activity's idempotency key (enqueueing the same post
  twice adds nothing), and the handler checks a ledger before acting, so a retried job
  never acts twice. A job is never executed before its time (the handler double-checks).
- Input is validated (comment length) with a clear error, before anything is enqueued.
- Stats per group (the post) by status: pending / scheduled / executed / failed.
- Retention: 1000 completed for 7 days, 500 failed for 30 days.
- Not yet: "at most 3 engagements per post per hour" needs per-key rate limits, which
  the engine does not have yet (a later issue); this example does not fake it.

``time_scale`` compresses time for the demo and the tests (1/1800: an hour is 2 seconds).

    .venv/bin/python examples/scenarios/engagement.py
    shunter worker examples.scenarios.engagement:make_worker
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from shunter import Backoff, Decision, Job, JobFailed, Queue, Retention, RetryAfter, Worker

QUEUE = "engagement"
TASK = "engage"
LIKE_WINDOW = (5 * 60.0, 30 * 60.0, 0.10)  #: (start, end, ±jitter) in seconds after the post
COMMENT_WINDOW = (3600.0, 6 * 3600.0, 0.15)
MAX_COMMENT = 280
KEEP_COMPLETED = Retention(count=1000, age=7 * 86400)
KEEP_FAILED = Retention(count=500, age=30 * 86400)


class RemoteError(Exception):
    """An error from the social network's API, with the kind it reported."""

    def __init__(self, kind: str, message: str, retry_after: float = 0.0) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.retry_after = retry_after


def classify(exc: BaseException, job: Job) -> Decision | RetryAfter | None:
    """Map remote errors to what the worker should do next."""
    if not isinstance(exc, RemoteError):
        return None  # unknown: the default rule retries while attempts remain
    if exc.kind == "rate_limit":
        return RetryAfter(exc.retry_after, "the remote asked us to slow down")
    if exc.kind in ("auth", "not_found"):
        return Decision.FAIL
    return Decision.RETRY  # network


EXECUTED: set[str] = set()  #: stands in for the table of performed activities


def remote_call(job: Job) -> None:
    """Simulated API: a few members hit each kind of error."""
    kind, member, attempt = job.data["kind"], job.data["member"], job.attempt
    if member == 2 and job.deferrals == 0 and kind == "like":
        time_scale = job.data["time_scale"]
        raise RemoteError("rate_limit", "429 Too Many Requests", retry_after=60 * time_scale)
    if member == 4 and attempt == 1:
        raise RemoteError("network", "connection reset by peer")
    if member == 6 and kind == "like":
        raise RemoteError("auth", "the member's token was revoked")
    if member == 7 and kind == "like":
        raise RemoteError("not_found", "the post was deleted")


async def engage(job: Job) -> dict[str, Any]:
    data = job.data
    early = data["not_before"] - time.time()
    if early > 0.001:  # the engine never claims early; this guards against clock misuse
        raise RetryAfter(early, "picked up before its scheduled time")
    key = f"{job.queue}/{job.id}"
    if key in EXECUTED:
        return {"skipped": "already executed"}
    remote_call(job)
    EXECUTED.add(key)
    return {"done": data["kind"], "member": data["member"]}


def make_worker(redis: str | Redis | None = None, queue: str = QUEUE) -> Worker:
    return Worker(queue, {TASK: engage}, redis, concurrency=5, job_timeout=30, classify=classify)


def stagger(index: int, count: int, window: tuple[float, float, float],
            rng: random.Random) -> float:
    """Seconds after the post for member ``index`` of ``count``: linear across the window,
    then ±jitter (a fraction of that offset)."""
    start, end, jitter = window
    offset = start + (end - start) * index / max(count - 1, 1)
    return offset * rng.uniform(1 - jitter, 1 + jitter)


def plan_engagements(post: str, members: int, comments: dict[int, str], *,
                     time_scale: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """The jobs for one post, as ``add_bulk`` entries. Raises ValueError for a comment
    over the length limit, before anything is enqueued."""
    for member, text in comments.items():
        if len(text) > MAX_COMMENT:
            raise ValueError(f"comment of member {member} is {len(text)} characters; "
                             f"the limit is {MAX_COMMENT}")
    rng, now, entries = random.Random(seed), time.time(), []
    plans = [("like", m, LIKE_WINDOW) for m in range(members)]
    plans += [("comment", m, COMMENT_WINDOW) for m in sorted(comments)]
    for kind, member, window in plans:
        delay = stagger(member, members, window, rng) * time_scale
        data = {"post": post, "member": member, "kind": kind, "text": comments.get(member, ""),
                "not_before": now + delay, "time_scale": time_scale}
        entries.append({"task": TASK, "data": data, "job_id": f"{post}.{kind}.{member}",
                        "delay": delay, "max_attempts": 3, "timeout": 30,
                        "backoff": Backoff.exponential(30 * time_scale),
                        "keep_completed": KEEP_COMPLETED, "keep_failed": KEEP_FAILED})
    return entries


STATUS = {"waiting": "pending", "active": "pending", "scheduled": "scheduled",
          "completed": "executed", "failed": "failed", "cancelled": "failed"}


async def group_stats(queue: Queue, job_ids: list[str]) -> dict[str, int]:
    """Per-post stats by status (a job that retention already deleted is not counted)."""
    stats = dict.fromkeys(("pending", "scheduled", "executed", "failed"), 0)
    for job_id in job_ids:
        job = await queue.get_job(job_id)
        if job is not None:
            stats[STATUS[str(job.state)]] += 1
    return stats


async def run(redis: str | Redis | None = None, *, queue: str = QUEUE,
              time_scale: float = 1 / 1800, members: int = 9) -> dict[str, Any]:
    """A post by a group of ``members``: everyone likes it, three comment, one comment is
    too long; the post event arrives twice."""
    started = time.monotonic()
    comments = {0: "Great read!", 3: "Congrats to the team", 5: "Saving this for later"}
    rejected = ""
    try:
        plan_engagements("post-1", members, {**comments, 8: "x" * 300})
    except ValueError as exc:
        rejected = str(exc)
    entries = plan_engagements("post-1", members, comments, time_scale=time_scale)
    feed = Queue(queue, redis)
    worker = make_worker(feed.storage.client, queue)
    running = asyncio.ensure_future(worker.run(handle_signals=False))
    try:
        jobs = await feed.add_bulk(entries)
        again = await feed.add_bulk(entries)  # the post event was delivered twice
        first_stats = await group_stats(feed, [job.id for job in jobs])
        for job in jobs:
            with contextlib.suppress(JobFailed):
                await job.wait(timeout=120)
        stats = await group_stats(feed, [job.id for job in jobs])
        counts = await feed.counts()
    finally:
        await worker.close()
        await running
        await feed.close()
    return {
        "scenario": "engagement", "queue": queue, "enqueued": len(jobs),
        "duplicates": sum(job.existing for job in again), "rejected": rejected,
        "processed": counts["completed"], "retried": worker.counters["retried"],
        "dead_lettered": counts["failed"], "stats_at_start": first_stats, "stats": stats,
        "window_seconds": [round(e["delay"], 3) for e in entries],
        "seconds": round(time.monotonic() - started, 2),
        "not_yet": "per-post rate limit (3 per hour) needs per-key rate limits: a later issue",
    }


async def main() -> None:
    """Run once on a fresh queue name, print the report, delete the queue."""
    queue = f"{QUEUE}-{uuid.uuid4().hex[:8]}"
    report = await run(queue=queue)
    print(f"queue: {queue}")
    for key in ("enqueued", "duplicates", "rejected", "processed", "retried", "dead_lettered",
                "stats", "seconds", "not_yet"):
        print(f"{key}: {report[key]}")
    async with Queue(queue) as leftovers:
        await leftovers.obliterate(force=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
