"""Assertions about enqueued jobs: ``assert_enqueued``, ``assert_not_enqueued`` and
``enqueued_jobs``, for the asyncio :class:`~shunter.Queue`, with blocking twins (``_sync``)
for :class:`shunter.sync.Queue`.

They read the jobs as stored, through the queue's own reads (``job_ids``, ``get_job``),
and match them here: by task name (a name or a :class:`~shunter.TaskDef`) and by data,
compared with ``==`` so that :data:`unittest.mock.ANY` works anywhere inside it, or
tested by a function. A failed assertion lists what the searched states do hold, and how
many jobs the other states hold, so the message says what happened instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar
from unittest.mock import ANY

from .. import codec
from ..errors import InvalidInput
from ..job import Job, JobSnapshot
from ..queue import Queue
from ..states import State
from ..storage import Counts
from ..storage.connection import RedisLike
from ..sync import Job as SyncJob
from ..sync import Queue as SyncQueue
from ..tasks import TaskDef

__all__ = [
    "ANY", "assert_enqueued", "assert_enqueued_sync", "assert_not_enqueued",
    "assert_not_enqueued_sync", "enqueued_jobs", "enqueued_jobs_sync",
]

#: What "enqueued" means when no ``state`` is given: added and not started yet.
PENDING = (State.WAITING, State.SCHEDULED)
#: Most jobs read per state.
MAX_SCAN = 10_000
#: Jobs listed in a failure message.
SHOWN = 20

TaskLike = str | TaskDef[Any] | None
StateLike = State | str | Iterable[State | str] | None


class _Search:
    """One search: which task, data and states (checked up front, before any read)."""

    def __init__(self, task: TaskLike, data: Any, state: StateLike) -> None:
        if isinstance(task, TaskDef):
            self.task: str | None = task.name
        elif task is None or isinstance(task, str):
            self.task = None if task is None else codec.validate_task_name(task)
        else:
            raise InvalidInput(f"task must be a task name, a TaskDef or None, got {task!r}")
        self.data = data
        self.states = _states(state)

    def matches(self, job: JobSnapshot) -> bool:
        if self.task is not None and job.task != self.task:
            return False
        if self.data is ANY:
            return True
        if callable(self.data):
            return bool(self.data(job.data))
        return bool(job.data == self.data)

    def wanted(self, count: int | None) -> str:
        what = "a job" if count is None else f"{count} job{'s' * (count != 1)}"
        what += " of any task" if self.task is None else f" of task {self.task!r}"
        if self.data is not ANY:
            what += (" whose data passes " + getattr(self.data, "__name__", repr(self.data))
                     if callable(self.data) else f" with data {_short(self.data)}")
        return what

    def failure(self, queue: str, count: int | None, found: Sequence[JobSnapshot],
                jobs: Sequence[JobSnapshot], counts: Counts) -> str:
        states = " or ".join(s.value for s in self.states)
        head = f"expected {self.wanted(count)} in queue {queue!r} ({states})"
        if count is None:
            head += "; found none."
        else:
            head += f"; found {len(found)}{':' if found else '.'}"
            head += "".join(f"\n  {_line(job)}" for job in found[:SHOWN])
        if jobs:
            lines = [_line(job) for job in jobs[:SHOWN]]
            if len(jobs) > SHOWN:
                lines.append(f"... and {len(jobs) - SHOWN} more")
            head += f"\n{states} holds {len(jobs)} job(s):\n  " + "\n  ".join(lines)
        else:
            head += f"\nNothing is {states} there."
        others = {s.value: counts.get(s.value, 0) for s in State
                  if s not in self.states and counts.get(s.value, 0)}
        if others:
            head += ("\nNot searched: " + ", ".join(f"{n} {s}" for s, n in others.items())
                     + " (state= includes them)")
        if counts.get("paused"):
            head += "\nThe queue is paused."
        return head


def _states(state: StateLike) -> tuple[State, ...]:
    if state is None:
        return PENDING
    given = [state] if isinstance(state, (str, State)) else state
    try:
        chosen = tuple(dict.fromkeys(State(s) for s in given))
    except (TypeError, ValueError):
        raise InvalidInput(f"state must be a State, its name, or a list of them; got {state!r} "
                           f"(states: {', '.join(State)})") from None
    if not chosen:
        raise InvalidInput("state is an empty list")
    return chosen


def _count(count: int | None) -> None:
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InvalidInput(f"count must be an int >= 1 or None, got {count!r} (to check that no "
                           "job was enqueued, use assert_not_enqueued)")


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(job: JobSnapshot) -> str:
    state = job.state.value if job.state else "?"
    if job.state is State.SCHEDULED and job.scheduled_for is not None:
        state += f" for {job.scheduled_for:%Y-%m-%d %H:%M:%S} UTC"
    return f"{job.id}  {job.task}  {_short(job.data)}  ({state})"


def _missing(found: Sequence[JobSnapshot], count: int | None) -> bool:
    return not found if count is None else len(found) != count


def _unexpected(search: _Search, queue: str, found: Sequence[JobSnapshot]) -> AssertionError:
    states = " or ".join(s.value for s in search.states)
    lines = "\n  ".join(_line(job) for job in found[:SHOWN])
    return AssertionError(f"expected no {search.wanted(None)[2:]} in queue {queue!r} "
                          f"({states}); found {len(found)}:\n  {lines}")


Q = TypeVar("Q", Queue, SyncQueue)
_PUBLIC = {Queue: "shunter.Queue", SyncQueue: "shunter.sync.Queue"}


def _open(queue: object, redis: Any, helper: str, kind: type[Q]) -> tuple[Q, bool]:
    """The queue to read (``kind``), and whether it was opened here (from a name)."""
    if isinstance(queue, kind):
        if redis is not None:
            raise InvalidInput("redis= is for a queue given by name")
        return queue, False
    if isinstance(queue, str):
        return kind(queue, redis), True
    hint = ""
    if isinstance(queue, (Queue, SyncQueue)):  # the other kind
        twin = f"await {helper.removesuffix('_sync')}" if kind is SyncQueue else f"{helper}_sync"
        hint = f"; for a {_PUBLIC[type(queue)]} use {twin}"
    raise InvalidInput(f"{helper} takes a {_PUBLIC[kind]} or a queue name, got "
                       f"{type(queue).__name__}{hint}")


# -- asyncio ----------------------------------------------------------------------------------
async def _read(queue: Queue, states: Sequence[State]) -> list[Job]:
    jobs = []
    for state in states:
        for job_id in await queue.job_ids(state, 0, MAX_SCAN - 1):
            job = await queue.get_job(job_id)
            if job is not None and job.state is state:  # it may have moved on meanwhile
                jobs.append(job)
    return jobs


async def _search(queue: Queue | str, task: TaskLike, data: Any, state: StateLike,
                  count: int | None, redis: RedisLike, helper: str,
                  expect: bool | None) -> list[Job]:
    """The matching jobs; ``expect`` True: assert there are (``count`` of them), False:
    assert there are none, None: just return them."""
    search = _Search(task, data, state)
    _count(count)
    opened, owned = _open(queue, redis, helper, Queue)
    try:
        jobs = await _read(opened, search.states)
        found = [job for job in jobs if search.matches(job)]
        if expect and _missing(found, count):
            raise AssertionError(search.failure(opened.name, count, found, jobs,
                                                await opened.counts()))
        if expect is False and found:
            raise _unexpected(search, opened.name, found)
        return found
    finally:
        if owned:
            await opened.close()


async def enqueued_jobs(queue: Queue | str, task: TaskLike = None, data: Any = ANY, *,
                        state: StateLike = None, redis: RedisLike = None) -> list[Job]:
    """The jobs in ``queue`` of ``task`` (a name or a TaskDef; None: any) whose data
    matches ``data``, in the given states (default: waiting and scheduled), in each
    state's order (waiting in claim order, scheduled by due time, finished newest first).
    ``queue`` is a :class:`~shunter.Queue` or a name (on ``redis``)."""
    return await _search(queue, task, data, state, None, redis, "enqueued_jobs", None)


async def assert_enqueued(queue: Queue | str, task: TaskLike = None, data: Any = ANY, *,
                          state: StateLike = None, count: int | None = None,
                          redis: RedisLike = None) -> Job:
    """Assert that ``queue`` holds a job of ``task`` whose data matches ``data``, and return
    it (the first, in the order of :func:`enqueued_jobs`).

    - ``task``: a task name or a :class:`~shunter.TaskDef`; None for any task.
    - ``data``: compared with ``==`` (``unittest.mock.ANY`` works inside it; data is JSON,
      so lists, not tuples), or a function of the data returning True for a match.
      Default: any data.
    - ``state``: a :class:`~shunter.State`, its name, or a list of them (default: waiting
      and scheduled, that is enqueued and not started; ``list(shunter.State)`` for all).
    - ``count``: exactly this many must match (default: at least one).

    Raises :class:`AssertionError` listing the jobs the searched states hold instead.
    """
    found = await _search(queue, task, data, state, count, redis, "assert_enqueued", True)
    return found[0]


async def assert_not_enqueued(queue: Queue | str, task: TaskLike = None, data: Any = ANY, *,
                              state: StateLike = None, redis: RedisLike = None) -> None:
    """Assert that no job of ``task`` matching ``data`` is in ``queue`` in ``state`` (the
    arguments of :func:`assert_enqueued`); the message lists the jobs that match."""
    await _search(queue, task, data, state, None, redis, "assert_not_enqueued", False)


# -- blocking ---------------------------------------------------------------------------------
def _read_sync(queue: SyncQueue, states: Sequence[State]) -> list[SyncJob]:
    jobs = []
    for state in states:
        for job_id in queue.job_ids(state, 0, MAX_SCAN - 1):
            job = queue.get_job(job_id)
            if job is not None and job.state is state:
                jobs.append(job)
    return jobs


def _search_sync(queue: SyncQueue | str, task: TaskLike, data: Any, state: StateLike,
                 count: int | None, redis: str | None, helper: str,
                 expect: bool | None) -> list[SyncJob]:
    """:func:`_search` over a blocking queue."""
    search = _Search(task, data, state)
    _count(count)
    opened, owned = _open(queue, redis, helper, SyncQueue)
    try:
        jobs = _read_sync(opened, search.states)
        found = [job for job in jobs if search.matches(job)]
        if expect and _missing(found, count):
            raise AssertionError(search.failure(opened.name, count, found, jobs, opened.counts()))
        if expect is False and found:
            raise _unexpected(search, opened.name, found)
        return found
    finally:
        if owned:
            opened.close()


def enqueued_jobs_sync(queue: SyncQueue | str, task: TaskLike = None, data: Any = ANY, *,
                       state: StateLike = None, redis: str | None = None) -> list[SyncJob]:
    """:func:`enqueued_jobs` for a :class:`shunter.sync.Queue` (or a name), without an
    event loop."""
    return _search_sync(queue, task, data, state, None, redis, "enqueued_jobs_sync", None)


def assert_enqueued_sync(queue: SyncQueue | str, task: TaskLike = None, data: Any = ANY, *,
                         state: StateLike = None, count: int | None = None,
                         redis: str | None = None) -> SyncJob:
    """:func:`assert_enqueued` for a :class:`shunter.sync.Queue` (or a name), without an
    event loop; returns a ``shunter.sync.Job``."""
    return _search_sync(queue, task, data, state, count, redis, "assert_enqueued_sync",
                        True)[0]


def assert_not_enqueued_sync(queue: SyncQueue | str, task: TaskLike = None, data: Any = ANY, *,
                             state: StateLike = None, redis: str | None = None) -> None:
    """:func:`assert_not_enqueued` for a :class:`shunter.sync.Queue` (or a name)."""
    _search_sync(queue, task, data, state, None, redis, "assert_not_enqueued_sync", False)
