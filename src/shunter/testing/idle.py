"""``run_until_idle``: run the jobs of one or more queues inside a test, then return a
report of what the worker did.

It runs a real :class:`~shunter.Worker` in the caller's event loop and decides itself when
the queues are idle, instead of using the worker's burst mode: burst waits until every
scheduled job has come due, so one job delayed by an hour would hold a test for an hour.
Here, idle means nothing waiting and nothing active (a paused queue's waiting jobs do not
count); scheduled jobs (a delay, or the backoff before a retry) are left for later unless
``run_scheduled=True`` moves them to waiting at once, over and over until none is left.
The check reads the queues' counts and then sleeps on their event streams (one XREAD,
from a cursor taken before the counts), so it wakes on the next transition and misses
none, without polling.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from ..errors import InvalidInput, JobNotFound
from ..outcome import Task
from ..queue import Queue
from ..states import State
from ..storage import Counts, Storage
from ..storage.connection import RedisLike, async_client
from ..storage.streams import wait_for_events
from ..tasks import TaskDef, Tasks
from ..worker import Worker
from .running import WorkerRun

__all__ = ["IdleReport", "run_until_idle"]

#: Scheduled jobs moved per promote call when ``run_scheduled`` is on.
PROMOTE_BATCH = 1000
#: Jobs named per state in a timeout message.
SHOWN = 5


@dataclass(frozen=True, slots=True)
class IdleReport:
    """What :func:`run_until_idle` did: the worker's counters (jobs completed, retried,
    failed, cancelled, released while it ran), the queues' counts at the end, and the
    time it took."""

    completed: int
    failed: int
    retried: int
    cancelled: int
    released: int
    #: Every counter of the worker (also ``lease_lost``, ``abandoned``).
    counters: dict[str, int]
    #: Queue name -> its counts per state when it went idle (as ``Queue.counts()``).
    counts: dict[str, Counts]
    seconds: float

    @property
    def processed(self) -> int:
        """Attempts that ended the job: completed, failed or cancelled."""
        return self.completed + self.failed + self.cancelled


def _queues(queues: object) -> tuple[str | list[str] | dict[str, int] | None,
                                      redis.asyncio.Redis | None]:
    """The worker's ``queues`` from what the caller gave, and the client of the first
    :class:`~shunter.Queue` among them (its server is the default)."""
    def name_of(item: object) -> tuple[str, redis.asyncio.Redis | None]:
        if isinstance(item, Queue):
            return item.name, item.storage.client
        if isinstance(item, str):
            return item, None
        kind = type(item)
        hint = (" (a shunter.sync.Queue: pass its name, and redis= if it is not the default "
                "server)" if kind.__module__ == "shunter.sync" else "")
        raise InvalidInput("queues must be a queue name, a shunter.Queue, a list of them, or a "
                           f"mapping of name -> weight; got {kind.__name__}{hint}")

    if queues is None:
        return None, None
    if isinstance(queues, Mapping):
        return dict(queues), None  # names and weights are checked by the Worker
    if isinstance(queues, (list, tuple)):
        named = [name_of(item) for item in queues]
        return [n for n, _ in named], next((c for _, c in named if c is not None), None)
    name, client = name_of(queues)
    return name, client


def _idle(counts: Counts, run_scheduled: bool) -> bool:
    if counts["active"]:
        return False
    if counts["paused"]:
        return True
    return not counts["waiting"] and not (run_scheduled and counts["scheduled"])


async def _describe(storages: Sequence[Storage], counts: dict[str, Counts]) -> str:
    """Per queue: its counts and the first active and waiting jobs (id and task)."""
    lines = []
    for storage in storages:
        name = storage.keys.name
        shown = {k: v for k, v in counts[name].items() if v}
        lines.append(f"  {name}: {shown or 'empty'}")
        for state in (State.ACTIVE, State.WAITING):
            for job_id in await storage.job_ids(state, 0, SHOWN - 1):
                try:
                    task = (await storage.job_fields(job_id)).get(b"task", b"?")
                except JobNotFound:
                    continue
                lines.append(f"    {state.value:8} {job_id} {task.decode('utf-8', 'replace')}")
    return "\n".join(lines)


async def run_until_idle(
    queues: str | Queue | Sequence[str | Queue] | Mapping[str, int] | None,
    tasks: Tasks | Mapping[str, Callable[..., Any] | Task | TaskDef[Any]],
    *, redis: RedisLike = None, timeout: float = 30.0, run_scheduled: bool = False,
    **worker_options: Any,
) -> IdleReport:
    """Run the jobs of ``queues`` with a :class:`~shunter.Worker` of ``tasks`` in this event
    loop until the queues are idle, and return an :class:`IdleReport`.

    - ``queues``: a queue name, a :class:`~shunter.Queue`, a list of them (strict order),
      or a mapping of name -> weight; ``None``: every queue of a :class:`~shunter.Tasks`
      registry.
    - ``tasks``: a registry, or a mapping of task name -> handler, as for ``Worker``.
    - ``redis``: the server (default: the first ``Queue``'s, else ``$SHUNTER_REDIS_URL``,
      else the embedded server).
    - ``timeout``: seconds (> 0) from when the worker is up until :class:`TimeoutError`,
      whose message names what was still waiting or active; in-flight jobs are then
      handed back at once.
    - ``run_scheduled``: also run scheduled jobs now (delayed jobs, and retries without
      their backoff), again and again until none is left. Without it they stay
      scheduled (jobs that come due while it runs may run).
    - ``worker_options``: any other option of ``Worker`` (``concurrency``, ``lifespan``,
      ``middleware``, ``hooks``, ``classify`` ...).

    Idle means nothing waiting (or the queue is paused) and nothing active, on the server:
    jobs the handlers enqueue run too. Raises what the worker failed with, and
    :class:`~shunter.testing.WorkerFailure` if it logged errors (a hook that raised ...).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and timeout > 0):
        raise InvalidInput(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if not isinstance(run_scheduled, bool):
        raise InvalidInput(f"run_scheduled must be True or False, got {run_scheduled!r}")
    order, queue_client = _queues(queues)
    if redis is not None or queue_client is None:
        client, owned = async_client(redis)
    else:
        client, owned = queue_client, False
    try:
        worker = Worker(order, tasks, client, **worker_options)
        return await _run(worker, client, timeout, run_scheduled)
    finally:
        if owned:
            await client.aclose()


async def _run(worker: Worker, client: redis.asyncio.Redis, timeout: float,
               run_scheduled: bool) -> IdleReport:
    storages = [Storage(client, name) for name in worker.queues]
    run = WorkerRun(worker)
    await run.start()  # bounded on its own: a slow start is not the jobs' time
    began = time.monotonic()
    deadline = began + timeout
    try:
        while True:
            cursors = [(s.events, await s.events.last_id()) for s in storages]
            if run_scheduled:
                for s in storages:
                    while await s.promote(PROMOTE_BATCH, early=True) == PROMOTE_BATCH:
                        pass
            counts = {s.keys.name: await s.counts() for s in storages}
            if all(_idle(c, run_scheduled) for c in counts.values()) or run.done:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"run_until_idle: not idle after {timeout:g}s (worker counters "
                    f"{dict(worker.counters)}):\n{await _describe(storages, counts)}")
            await wait_for_events(cursors, min(left, 1.0))
    except BaseException:
        worker.shutdown_timeout = 0.0  # hand in-flight jobs back now
        with contextlib.suppress(Exception):  # what went wrong here comes first
            await run.stop(check=False)
        raise
    await run.stop()
    c = worker.counters
    return IdleReport(c["completed"], c["failed"], c["retried"], c["cancelled"], c["released"],
                      dict(c), counts, time.monotonic() - began)
