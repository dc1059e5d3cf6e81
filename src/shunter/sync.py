"""The blocking producer for sync code (Django, Flask, scripts): ``shunter.sync.Queue`` and
the jobs it hands out, ``shunter.sync.Job``.

Same validation and the same Lua scripts as the asyncio :class:`shunter.Queue`, over a
blocking redis-py client through :class:`~shunter.storage.BlockingStorage`; safe to share
between threads. A :class:`Job` has the fields of :class:`shunter.Job` (one decoder:
:class:`~shunter.job.JobSnapshot`) and blocking methods: ``refresh``, ``wait``, ``logs``,
``cancel``, ``replay``. Nothing here needs an event loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import redis as redis_lib

from . import codec
from .errors import InvalidInput, JobNotFound
from .flow import spread_entries
from .flow.dedup import Dedup
from .flow.limits import GroupInfo
from .job import JobSnapshot
from .options import DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED, Backoff, Retention
from .producer import added_job, added_jobs, build_spec, spec_from_mapping
from .queue import MAX_BULK
from .states import State
from .storage import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_PAYLOAD,
    BlockingStorage,
    Counts,
    validate_limits,
)
from .storage.connection import sync_client
from .tasks import TaskDef

__all__ = ["Job", "Queue"]


class Job(JobSnapshot):
    """A job as :class:`Queue` reads it: the fields of :class:`shunter.Job`, with blocking
    methods. It is a snapshot: :meth:`refresh` re-reads it, :meth:`wait` blocks until it
    finishes. :meth:`cancel` and :meth:`replay` change the job on the server, not this
    snapshot (``refresh`` shows the new state)."""

    __slots__ = ("_storage",)

    def __init__(self, storage: BlockingStorage, job_id: str) -> None:
        super().__init__(storage.keys.name, job_id)
        self._storage = storage

    def refresh(self) -> Job:
        """Re-read the job; raises :class:`~shunter.errors.JobNotFound` if it is gone."""
        return self._load(self._storage.job_fields(self.id))

    def wait(self, timeout: float | None = None, poll: float = 0.05) -> Any:
        """Block until the job is completed, failed or cancelled; return the result.

        Raises :class:`~shunter.JobFailed` if it failed or was cancelled,
        :class:`TimeoutError` if ``timeout`` seconds pass first, and
        :class:`~shunter.errors.JobNotFound` if the job is gone. Re-reads the job every
        ``poll`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            if self.finished:
                return self._outcome()
            pause = poll
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {self.id!r} still {self.state} after {timeout}s")
                pause = min(poll, left)
            time.sleep(pause)

    def logs(self, start: int = 0, end: int = -1) -> list[str]:
        """The job's log lines, oldest first (``start``/``end`` inclusive, as in LRANGE)."""
        return self._storage.logs(self.id, start, end)

    def cancel(self, *, by: str = "", reason: str = "") -> bool:
        """As :meth:`shunter.Queue.cancel`: True if the job was cancelled now, False if it is
        active and its worker was asked to stop it."""
        return self._storage.cancel(self.id, by, reason)

    def replay(self) -> None:
        """As :meth:`shunter.Queue.replay`: a failed or cancelled job runs again from
        attempt 1; :class:`~shunter.errors.JobNotInState` otherwise."""
        self._storage.replay(self.id)


class Queue:
    """Blocking twin of :class:`shunter.Queue` for producers and scripts: ``add``,
    ``add_bulk``, ``get_job``, ``wait``, ``counts``, ``job_ids``, ``cancel``, ``replay``,
    ``pause``, ``resume``, ``pause_group``, ``resume_group``, ``group``, ``settings``.
    ``redis`` is a URL, a blocking ``redis.Redis``
    client (used as is, not closed by us), or None for the same default as
    :class:`shunter.Queue`. ``close()`` (or leaving a ``with`` block) closes every
    connection the queue opened."""

    def __init__(self, name: str, redis: str | redis_lib.Redis | None = None, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.name = codec.validate_queue_name(name)
        max_events, max_payload_bytes = validate_limits(max_events, max_payload_bytes)
        if isinstance(redis, redis_lib.Redis):
            self._client, self._owned = redis, False
        else:
            self._client, self._owned = sync_client(redis), True
        self._storage = BlockingStorage(self._client, name, max_events=max_events)
        self.keys = self._storage.keys
        self.max_events = max_events
        self.max_payload_bytes = max_payload_bytes
        self._settings_read = False

    def _adopt_settings(self) -> None:
        """Adopt the queue's stored caps (``shunter.Queue.configure``) before the first add."""
        if not self._settings_read:
            self.settings()

    def settings(self) -> dict[str, int | None]:
        """The queue's stored caps, as :meth:`shunter.Queue.settings` (and adopts them)."""
        stored = self._storage.load_settings()
        self.max_events = self._storage.max_events
        if stored["max_payload_bytes"] is not None:
            self.max_payload_bytes = stored["max_payload_bytes"]
        self._settings_read = True
        return stored

    def close(self) -> None:
        """Close the connections this queue opened (a client passed in is left open)."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_spread(self, entries: Sequence[Mapping[str, Any]], *, start: float | datetime,
                   end: float | datetime, jitter: float = 0.1,
                   order: Literal["linear", "random"] = "linear",
                   batch_id: str | None = None) -> list[Job]:
        """Schedule the jobs across ``[start, end]``; the arguments, the jobs returned and
        the errors are those of :meth:`shunter.Queue.add_spread`."""
        return self.add_bulk(spread_entries(
            entries, start=start, end=end, jitter=jitter, order=order, batch_id=batch_id))

    def _job(self, job_id: str) -> Job:
        return Job(self._storage, job_id)

    def add(self, task: str | TaskDef[Any], data: Any = None, *, job_id: str | None = None,
            delay: float | None = None, run_at: datetime | None = None,
            priority: int | None = None, max_attempts: int | None = None,
            backoff: Backoff | None = None, timeout: float | None = None,
            keep_completed: Retention | int = DEFAULT_KEEP_COMPLETED,
            keep_failed: Retention | int = DEFAULT_KEEP_FAILED,
            group: str | None = None, dedup: Dedup | None = None) -> Job:
        """Enqueue one job; the options, the job returned and the errors are those of
        :meth:`shunter.Queue.add`."""
        self._adopt_settings()
        spec = build_spec(task, data, job_id=job_id, delay=delay, run_at=run_at, priority=priority,
                          max_attempts=max_attempts, backoff=backoff, timeout=timeout,
                          keep_completed=keep_completed, keep_failed=keep_failed, group=group,
                          dedup=dedup,
                          max_payload_bytes=self.max_payload_bytes)
        return added_job(self._job, spec, self._storage.enqueue(spec))

    def add_bulk(self, entries: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue many jobs in one pipelined round trip (all validated first); the jobs
        returned and the errors (:class:`~shunter.errors.BulkAddError` when some jobs were
        not added and the others were) are those of :meth:`shunter.Queue.add_bulk`."""
        self._adopt_settings()
        specs = [spec_from_mapping(e, self.max_payload_bytes) for e in entries]
        if len(specs) > MAX_BULK:
            raise InvalidInput(f"add_bulk takes at most {MAX_BULK} jobs per call, got {len(specs)}")
        if not specs:
            return []
        return added_jobs(self._job, self.name, specs, self._storage.enqueue_many(specs))

    def get_job(self, job_id: str) -> Job | None:
        """The job as stored now, or None if there is none (as :meth:`shunter.Queue.get_job`)."""
        codec.validate_job_id(job_id)
        try:
            return self._job(job_id).refresh()
        except JobNotFound:
            return None

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.05) -> Any:
        """Block until the job finishes and return its result: :meth:`Job.wait` (raises
        :class:`~shunter.JobFailed`, :class:`TimeoutError`, or
        :class:`~shunter.errors.JobNotFound` for an unknown id)."""
        codec.validate_job_id(job_id)
        return self._job(job_id).wait(timeout, poll)

    def counts(self) -> Counts:
        """Jobs per state, plus ``paused``."""
        return self._storage.counts()

    def job_ids(self, state: State | str, start: int = 0, end: int = -1) -> list[str]:
        """As :meth:`shunter.Queue.job_ids`."""
        try:
            wanted = State(state)
        except ValueError:
            raise InvalidInput(f"unknown state {state!r}; one of {', '.join(State)}") from None
        return self._storage.job_ids(wanted, start, end)

    def cancel(self, job_id: str, *, by: str = "", reason: str = "") -> bool:
        """As :meth:`shunter.Queue.cancel`."""
        codec.validate_job_id(job_id)
        return self._storage.cancel(job_id, by, reason)

    def replay(self, job_id: str) -> None:
        """As :meth:`shunter.Queue.replay`."""
        codec.validate_job_id(job_id)
        self._storage.replay(job_id)

    def pause(self) -> None:
        """As :meth:`shunter.Queue.pause`."""
        self._storage.pause()

    def resume(self) -> None:
        """As :meth:`shunter.Queue.resume`."""
        self._storage.resume()

    def pause_group(self, group: str) -> None:
        """As :meth:`shunter.Queue.pause_group`: no job of ``group`` is claimed until
        :meth:`resume_group` (its running jobs finish; new ones still join its line)."""
        self._storage.configure_group(codec.validate_group(group), ["paused", "1"])

    def resume_group(self, group: str) -> None:
        """As :meth:`shunter.Queue.resume_group`."""
        self._storage.configure_group(codec.validate_group(group), ["paused", ""])

    def group(self, group: str) -> GroupInfo:
        """As :meth:`shunter.Queue.group`: the group's counts, limits and state."""
        return self._storage.group_info(codec.validate_group(group))
