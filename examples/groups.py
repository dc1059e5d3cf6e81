"""Groups: fair queueing across groups, per-group concurrency and rate limits, weights,
and ``RateLimited`` from a handler (see docs/groups.md).

One queue, two workers of concurrency 5. Jobs carry a group (``add(group=...)``):

- every group may run at most 2 jobs at once (``configure_groups(concurrency=2)``),
  across both workers;
- the group ``partner:api`` may start at most 5 jobs per second, evenly spaced
  (``configure_group(..., rate=Rate(5, per=1.0))``);
- ``tenant:big`` has weight 3 and ``tenant:small`` weight 1, and no concurrency limit of
  their own (an override of the default): while both have work, the big one gets three
  starts for every one of the small one;
- a handler of ``partner:flaky`` gets an HTTP 429 on its first call and raises
  ``RateLimited(0.3)``: its job goes back to the head of the group's line without using
  an attempt, the group starts nothing for 0.3 s, and the other groups keep running.

Every limit is enforced when jobs are claimed: a job over a limit is never claimed.

    .venv/bin/python examples/groups.py
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections import Counter, defaultdict

from shunter import Job, Queue, Rate, RateLimited, Worker

# The server: $SHUNTER_REDIS_URL, else (None) shunter's embedded server in ./.shunter,
# started on first use and left running for the next run (`shunter server stop` ends it).
REDIS_URL = os.environ.get("SHUNTER_REDIS_URL")


async def main() -> None:
    name = f"example-groups-{uuid.uuid4().hex[:6]}"
    print(f"queue: {name}")
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    starts: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    refused: set[str] = set()

    async def call(job: Job) -> str:
        group = job.group or ""
        starts[group].append(time.monotonic())
        order.append(group)
        if group == "partner:flaky" and not refused:
            refused.add(job.id)
            raise RateLimited(0.3, "429 Too Many Requests")  # the remote said: slow down
        running[group] += 1
        most[group] = max(most[group], running[group])
        await asyncio.sleep(0.02)  # the remote call
        running[group] -= 1
        return f"{group} {job.data}"

    async with Queue(name, REDIS_URL) as queue:
        await queue.configure_groups(concurrency=2)
        await queue.configure_group("partner:api", rate=Rate(5, per=1.0))
        await queue.configure_group("tenant:big", weight=3, concurrency=0)
        await queue.configure_group("tenant:small", concurrency=0)
        entries = [{"task": "call", "data": n, "group": group,
                    "job_id": f"{group.replace(':', '-')}-{n}"}
                   for group, jobs in (("tenant:big", 40), ("tenant:small", 40),
                                       ("partner:api", 6), ("partner:flaky", 3))
                   for n in range(jobs)]
        await queue.add_bulk(entries)
        workers = [Worker(name, {"call": call}, REDIS_URL, concurrency=5) for _ in range(2)]
        await asyncio.gather(*(w.run(burst=True, handle_signals=False) for w in workers))

        tenants = [g for g in order if g.startswith("tenant:")][:40]
        print(f"first 40 tenant starts: big={tenants.count('tenant:big')} "
              f"small={tenants.count('tenant:small')} (weights 3:1)")
        api = starts["partner:api"]
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(api)]
        print(f"partner:api starts {api[-1] - api[0]:.2f}s apart first to last, gaps {gaps} "
              f"(Rate(5, per=1.0): 0.2 s apart)")
        flaky = [await queue.get_job(j) for j in sorted(refused)]
        print("partner:flaky after a 429: " + ", ".join(
            f"{j.id} {j.state} attempts_made={j.attempts_made} throttled={j.throttled}"
            for j in flaky if j is not None))
        print(f"{'group':<14}{'done':>6}{'active':>8}  rate     weight  state")
        for g in await queue.groups():
            rate = "-" if g.rate is None else str(g.rate)
            print(f"{g.name:<14}{g.completed:>6}{g.active:>8}  {rate:<8} {g.weight:>6g}  {g.state}")
        done = sum(w.counters["completed"] for w in workers)
        limited = max(most[g] for g in ("partner:api", "partner:flaky"))
        print(f"summary: completed={done} most_at_once_in_a_limited_group={limited} "
              f"throttled={len(refused)}")
        await queue.obliterate(force=True)


if __name__ == "__main__":
    asyncio.run(main())
