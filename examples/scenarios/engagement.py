"""Scenario 1 of PRODUCT.md — engagement automation: a group of members reacts to a new post.

What it shows, mapped to the product brief:

- Likes are scheduled 5–30 min after the post, spread linearly across the window by
  member index with ±10 % jitter; comments 1–6 h, ±15 % (``queue.add_spread``: the jitter
  is a fraction of each member's slot; the batch id keeps it the same if the post event
  is delivered again).
- At most 3 engagements per post per hour, whoever the member: every job of a post is in
  the group ``post:<id>``, and every group has the rate limit ``Rate(3, per=3600)``
  (``configure_groups``). The limit is enforced when jobs are claimed, across every
  worker: over any window shorter than an hour a post starts at most 3 jobs (20 min
  apart), and the jobs held back use no attempt. Posts do not hold each other up: groups
  are served fairly.
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

``time_scale`` compresses time for the demo and the tests (1/1800: an hour is 2 seconds,
and the rate limit becomes 3 per 2 seconds).

    .venv/bin/python examples/scenarios/engagement.py
    shunter worker examples.scenarios.engagement:make_worker
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from shunter import Backoff, Decision, Job, JobFailed, Queue, Rate, Retention, RetryAfter, Worker

QUEUE = "engagement"
TASK = "engage"
LIKE_WINDOW = (5 * 60.0, 30 * 60.0, 0.10)  #: (start, end, ±jitter) in seconds after the post
COMMENT_WINDOW = (3600.0, 6 * 3600.0, 0.15)
PER_POST = Rate(3, per=3600)  #: at most 3 engagements per post per hour, whoever the member
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
#: When each attempt started (server time, seconds), per queue and post group: what the
#: report checks the rate limit against.
STARTS: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))


def remote_call(job: Job) -> None:
    """Simulated API: a few members of the first post hit each kind of error."""
    kind, member, attempt = job.data["kind"], job.data["member"], job.attempt
    if job.data["post"] != "post-1":
        return
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
    if job.started_at and job.group:
        STARTS[job.queue][job.group].append(job.started_at.timestamp())
    if job.scheduled_for and job.started_at and job.started_at < job.scheduled_for:
        # A job is claimed only once promoted, which clears scheduled_for: one that starts
        # with a due time still ahead (server clock both) was picked up early. The engine
        # never does that; the product asks for the guard all the same.
        early = (job.scheduled_for - job.started_at).total_seconds()
        raise RetryAfter(early, "picked up before its scheduled time")
    key = f"{job.queue}/{job.id}"
    if key in EXECUTED:
        return {"skipped": "already executed"}
    remote_call(job)
    EXECUTED.add(key)
    return {"done": data["kind"], "member": data["member"]}


def make_worker(redis: str | Redis | None = None, queue: str = QUEUE) -> Worker:
    return Worker(queue, {TASK: engage}, redis, concurrency=5, job_timeout=30, classify=classify)


def post_group(post: str) -> str:
    """The group of a post's jobs: ``post-17`` -> ``post:17``."""
    return "post:" + post.removeprefix("post-")


def plan_engagements(post: str, members: int, comments: dict[int, str], *,
                     time_scale: float = 1.0) -> dict[str, list[dict[str, Any]]]:
    """The jobs for one post, as ``add_spread`` entries by kind ("like", "comment"), in
    member order. Raises ValueError for a comment over the length limit, before anything
    is enqueued."""
    for member, text in comments.items():
        if len(text) > MAX_COMMENT:
            raise ValueError(f"comment of member {member} is {len(text)} characters; "
                             f"the limit is {MAX_COMMENT}")
    plans: dict[str, list[dict[str, Any]]] = {"like": [], "comment": []}
    for kind, members_of in (("like", list(range(members))), ("comment", sorted(comments))):
        for member in members_of:
            data = {"post": post, "member": member, "kind": kind,
                    "text": comments.get(member, ""), "time_scale": time_scale}
            plans[kind].append({
                "task": TASK, "data": data, "job_id": f"{post}.{kind}.{member}",
                "group": post_group(post), "max_attempts": 3, "timeout": 30,
                "backoff": Backoff.exponential(30 * time_scale),
                "keep_completed": KEEP_COMPLETED, "keep_failed": KEEP_FAILED})
    return plans


async def schedule(queue: Queue, post: str, plans: dict[str, list[dict[str, Any]]],
                   time_scale: float) -> list[Job]:
    """Spread the likes over 5–30 min and the comments over 1–6 h after the post (one
    pipelined call per kind). The batch ids make a second delivery of the post event add
    nothing: its jobs come back with ``existing=True``."""
    jobs: list[Job] = []
    for kind, window in (("like", LIKE_WINDOW), ("comment", COMMENT_WINDOW)):
        start, end, jitter = window
        jobs += await queue.add_spread(plans[kind], start=start * time_scale,
                                       end=end * time_scale, jitter=jitter,
                                       batch_id=f"{post}.{kind}")
    return jobs


STATUS = {"waiting": "pending", "active": "pending", "scheduled": "scheduled",
          "completed": "executed", "failed": "failed", "cancelled": "failed"}


async def group_stats(queue: Queue, job_ids: list[str]) -> dict[str, dict[str, int]]:
    """Stats per group (the post) by status (a job that retention already deleted is not
    counted)."""
    stats: dict[str, dict[str, int]] = {}
    for job_id in job_ids:
        job = await queue.get_job(job_id)
        if job is not None and job.group is not None:
            per = stats.setdefault(job.group, dict.fromkeys(
                ("pending", "scheduled", "executed", "failed"), 0))
            per[STATUS[str(job.state)]] += 1
    return stats


def busiest_window(starts: list[float], period: float) -> int:
    """The most starts within any window of ``period`` seconds (half open: [t, t + period))."""
    ordered = sorted(starts)
    most = 0
    for i, at in enumerate(ordered):
        most = max(most, sum(1 for later in ordered[i:] if later < at + period))
    return most


async def run(redis: str | Redis | None = None, *, queue: str = QUEUE,
              time_scale: float = 1 / 1800, members: int = 9, posts: int = 1,
              workers: int = 1) -> dict[str, Any]:
    """``posts`` posts by a group of ``members``: everyone likes each post, three comment,
    one comment is too long; every post event arrives twice. ``workers`` workers (of
    concurrency 5) share the queue; at most 3 engagements per post per (scaled) hour."""
    started = time.monotonic()
    comments = {0: "Great read!", 3: "Congrats to the team", 5: "Saving this for later"}
    rejected = ""
    try:
        plan_engagements("post-1", members, {**comments, 8: "x" * 300})
    except ValueError as exc:
        rejected = str(exc)
    names = [f"post-{n}" for n in range(1, posts + 1)]
    plans = {post: plan_engagements(post, members, comments, time_scale=time_scale)
             for post in names}
    per_post = Rate(PER_POST.limit, per=PER_POST.per * time_scale, burst=PER_POST.burst)
    feed = Queue(queue, redis)
    await feed.configure_groups(rate=per_post)  # every post's group, before its first job
    crew = [make_worker(feed.storage.client, queue) for _ in range(workers)]
    running = [asyncio.ensure_future(w.run(handle_signals=False)) for w in crew]
    try:
        jobs = [job for post in names for job in await schedule(feed, post, plans[post], time_scale)]
        again = [job for post in names for job in await schedule(feed, post, plans[post], time_scale)]
        # as add_spread returned them (job.wait below refreshes the jobs in place)
        due = {job.id: _seconds_after(job.scheduled_for, job.created_at) for job in jobs}
        first_stats = await group_stats(feed, [job.id for job in jobs])
        for job in jobs:
            with contextlib.suppress(JobFailed):
                await job.wait(timeout=120)
        stats = await group_stats(feed, [job.id for job in jobs])
        groups = {g.name: g.as_dict() for g in await feed.groups()}
        counts = await feed.counts()
    finally:
        for w in crew:
            await w.close()
        await asyncio.gather(*running)
        await feed.close()
    starts = {group: sorted(at) for group, at in STARTS.pop(queue, {}).items()}
    return {
        "scenario": "engagement", "queue": queue, "enqueued": len(jobs),
        "duplicates": sum(job.existing for job in again), "rejected": rejected,
        "processed": counts["completed"], "retried": sum(w.counters["retried"] for w in crew),
        "dead_lettered": counts["failed"], "stats_at_start": first_stats, "stats": stats,
        "groups": groups, "rate_per_post": str(per_post), "starts": starts,
        "busiest_hour": max((busiest_window(at, per_post.per) for at in starts.values()),
                            default=0),
        "scheduled_for": due,
        "seconds": round(time.monotonic() - started, 2),
    }


def _seconds_after(at: datetime | None, origin: datetime | None) -> float | None:
    return None if at is None or origin is None else round((at - origin).total_seconds(), 3)


async def main() -> None:
    """Run once on a fresh queue name, print the report, delete the queue."""
    queue = f"{QUEUE}-{uuid.uuid4().hex[:8]}"
    report = await run(queue=queue)
    print(f"queue: {queue}")
    for key in ("enqueued", "duplicates", "rejected", "processed", "retried", "dead_lettered",
                "rate_per_post", "busiest_hour", "stats", "seconds"):
        print(f"{key}: {report[key]}")
    async with Queue(queue) as leftovers:
        await leftovers.obliterate(force=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
