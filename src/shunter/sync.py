"""A blocking producer for sync code (Django, Flask, scripts): ``shunter.sync.Queue``.

Same validation and the same Lua scripts as the asyncio :class:`shunter.Queue`, over a
blocking redis-py client; safe to share between threads. Jobs it returns are snapshots;
call :meth:`Queue.get_job` again to see a newer state, or :meth:`Queue.wait` to block
until a job finishes.

Their async methods (``await job.refresh()``) run over an asyncio twin of the client whose
connections close after each command: a pooled asyncio connection belongs to the event
loop that opened it, and once that loop has ended (``asyncio.run``) nothing can close it,
so a pool would leave a socket open per loop until the process exits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import redis as redis_lib
from redis import asyncio as redis_asyncio

from . import codec
from .errors import InvalidInput
from .job import Job, JobFailed
from .options import DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED, Backoff, Retention
from .producer import DEFAULT_ATTEMPTS, added_job, added_jobs, build_spec, spec_from_mapping
from .queue import MAX_BULK
from .states import State
from .storage import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_PAYLOAD,
    BlockingStorage,
    Counts,
    Storage,
    validate_limits,
)
from .storage.connection import async_twin, resolve_url

__all__ = ["Queue"]


class _ConnectionPerCall(redis_asyncio.ConnectionPool):
    """An asyncio pool that keeps no idle connection (see the module docstring)."""

    async def release(self, connection: Any) -> None:
        try:
            await connection.disconnect()
        finally:
            await super().release(connection)


class Queue:
    """Blocking twin of :class:`shunter.Queue` for producers: ``add``, ``add_bulk``,
    ``get_job``, ``wait``, ``counts``, ``cancel``. ``redis`` is a URL, a blocking
    ``redis.Redis`` client (used as is, not closed by us), or None for the same default as
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
            url = resolve_url(redis)
            self._client, self._owned = redis_lib.Redis.from_url(url, decode_responses=False), True
        # Jobs carry an asyncio Storage so `await job.refresh()` works where there is a loop;
        # it connects only while a command runs.
        twin = async_twin(self._client, pool_class=_ConnectionPerCall)
        self._jobs_storage = Storage(twin, name, max_events=max_events,
                                     max_payload_bytes=max_payload_bytes)
        self.keys = self._jobs_storage.keys
        self._storage = BlockingStorage(self._client, name, max_events=max_events)
        self.max_events = max_events
        self.max_payload_bytes = max_payload_bytes
        self._settings_read = False

    def _settings(self) -> None:
        """Adopt the queue's stored caps (``shunter.Queue.configure``) before the first add."""
        if not self._settings_read:
            stored = self._storage.load_settings()
            self.max_events = self._storage.max_events
            if stored["max_payload_bytes"] is not None:
                self.max_payload_bytes = stored["max_payload_bytes"]
            self._jobs_storage.adopt(stored)
            self._settings_read = True

    def close(self) -> None:
        """Close the connections this queue opened (a client passed in is left open). The
        asyncio twin holds none between commands, so there is nothing of it to close."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, task: str, data: Any = None, *, job_id: str | None = None,
            delay: float | None = None, run_at: datetime | None = None, priority: int = 0,
            attempts: int = DEFAULT_ATTEMPTS, backoff: Backoff | None = None,
            timeout: float | None = None,
            keep_completed: Retention | int = DEFAULT_KEEP_COMPLETED,
            keep_failed: Retention | int = DEFAULT_KEEP_FAILED) -> Job:
        """Enqueue one job; the options, the job returned and the errors are those of
        :meth:`shunter.Queue.add`."""
        self._settings()
        spec = build_spec(task, data, job_id=job_id, delay=delay, run_at=run_at, priority=priority,
                          attempts=attempts, backoff=backoff, timeout=timeout,
                          keep_completed=keep_completed, keep_failed=keep_failed,
                          max_payload_bytes=self.max_payload_bytes)
        return added_job(self._jobs_storage, spec, self._storage.enqueue(spec))

    def add_bulk(self, entries: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue many jobs in one pipelined round trip (all validated first); the jobs
        returned and the errors (:class:`~shunter.errors.BulkAddError` when some jobs were
        not added and the others were) are those of :meth:`shunter.Queue.add_bulk`."""
        self._settings()
        specs = [spec_from_mapping(e, self.max_payload_bytes) for e in entries]
        if len(specs) > MAX_BULK:
            raise InvalidInput(f"add_bulk takes at most {MAX_BULK} jobs per call, got {len(specs)}")
        if not specs:
            return []
        return added_jobs(self._jobs_storage, specs, self._storage.enqueue_many(specs))

    def get_job(self, job_id: str) -> Job:
        """A snapshot of the job; raises :class:`~shunter.errors.JobNotFound`."""
        codec.validate_job_id(job_id)
        return Job(self._jobs_storage, job_id)._load(self._storage.job_fields(job_id))

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.05) -> Any:
        """Block until the job finishes; return its result (raises :class:`JobFailed` or
        :class:`TimeoutError`). Polls every ``poll`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.finished:
                if job.state is State.COMPLETED:
                    return job.result
                raise JobFailed(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id!r} still {job.state} after {timeout}s")
            time.sleep(poll)

    def counts(self) -> Counts:
        """Jobs per state, plus ``paused``."""
        return self._storage.counts()

    def cancel(self, job_id: str, *, by: str = "", reason: str = "") -> bool:
        """As :meth:`shunter.Queue.cancel`."""
        codec.validate_job_id(job_id)
        return self._storage.cancel(job_id, str(by)[:200], str(reason)[:1000])
