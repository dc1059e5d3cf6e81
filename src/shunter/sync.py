"""A blocking producer for sync code (Django, Flask, scripts): ``shunter.sync.Queue``.

Same validation and the same Lua scripts as the asyncio :class:`shunter.Queue`, over a
blocking redis-py client; safe to share between threads. Jobs it returns are snapshots;
call :meth:`Queue.get_job` again to see a newer state, or :meth:`Queue.wait` to block
until a job finishes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import redis as redis_lib
from redis import asyncio as redis_asyncio
from redis.exceptions import NoScriptError

from . import codec
from .connection import async_twin, resolve_url
from .errors import InvalidInput, JobNotFound
from .job import Job, JobFailed
from .options import DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED, Backoff, Retention
from .producer import DEFAULT_ATTEMPTS, build_spec, spec_from_mapping
from .queue import MAX_BULK
from .scripts import SCRIPTS
from .states import State
from .storage import (
    COUNTED,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_PAYLOAD,
    Counts,
    JobSpec,
    Storage,
    cancel_call,
    chunks,
    enqueue_call,
    enqueue_result,
    index_key,
    raise_for,
)

__all__ = ["Queue"]


class Queue:
    """Blocking twin of :class:`shunter.Queue` for producers: ``add``, ``add_bulk``,
    ``get_job``, ``wait``, ``counts``, ``cancel``. ``redis`` is a URL, a blocking
    ``redis.Redis`` client (used as is), or None for the same default as :class:`shunter.Queue`."""

    def __init__(self, name: str, redis: str | redis_lib.Redis | None = None, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.name = codec.validate_queue_name(name)
        if isinstance(redis, redis_lib.Redis):
            self._client, self._owned = redis, False
            url = None
        else:
            url = resolve_url(redis)
            self._client, self._owned = redis_lib.Redis.from_url(url, decode_responses=False), True
        # Jobs carry an asyncio Storage so `await job.refresh()` works where there is a loop;
        # it does not connect unless used.
        twin = async_twin(self._client) if url is None else redis_asyncio.Redis.from_url(url)
        self._jobs_storage = Storage(twin, name, max_events=max_events,
                                     max_payload_bytes=max_payload_bytes)
        self.keys = self._jobs_storage.keys
        self.max_events = max_events
        self.max_payload_bytes = max_payload_bytes

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _job(self, job_id: str, created: bool, state: State) -> Job:
        job = Job(self._jobs_storage, job_id)
        job.existing, job.state = not created, state
        return job

    def add(self, task: str, data: Any = None, *, job_id: str | None = None,
            delay: float | None = None, run_at: datetime | None = None, priority: int = 0,
            attempts: int = DEFAULT_ATTEMPTS, backoff: Backoff | None = None,
            timeout: float | None = None,
            keep_completed: Retention | int = DEFAULT_KEEP_COMPLETED,
            keep_failed: Retention | int = DEFAULT_KEEP_FAILED) -> Job:
        """Enqueue one job; the options are those of :meth:`shunter.Queue.add`."""
        spec = build_spec(task, data, job_id=job_id, delay=delay, run_at=run_at, priority=priority,
                          attempts=attempts, backoff=backoff, timeout=timeout,
                          keep_completed=keep_completed, keep_failed=keep_failed,
                          max_payload_bytes=self.max_payload_bytes)
        ((created, state),) = enqueue_result(SCRIPTS["enqueue"].run_sync(
            self._client, *enqueue_call(self.keys, [spec], self.max_events)))
        job = self._job(spec.job_id, created, state)
        if created:
            job.task, job.data = task, data
        return job

    def add_bulk(self, entries: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue many jobs in one pipelined round trip (all validated first)."""
        specs = [spec_from_mapping(e, self.max_payload_bytes) for e in entries]
        if len(specs) > MAX_BULK:
            raise InvalidInput(f"add_bulk takes at most {MAX_BULK} jobs per call, got {len(specs)}")
        replies = self._enqueue_many(specs) if specs else []
        return [self._job(s.job_id, c, st) for s, (c, st) in zip(specs, replies, strict=True)]

    def _enqueue_many(self, specs: list[JobSpec]) -> list[tuple[bool, State]]:
        script = SCRIPTS["enqueue"]
        for _ in range(2):
            with self._client.pipeline(transaction=False) as pipe:
                for chunk in chunks(specs):
                    keys, args = enqueue_call(self.keys, chunk, self.max_events)
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = pipe.execute(raise_on_error=False)
            if not any(isinstance(r, NoScriptError) for r in replies):
                break
            self._client.script_load(script.source)
        results: list[tuple[bool, State]] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            results += enqueue_result(reply)
        return results

    def get_job(self, job_id: str) -> Job:
        """A snapshot of the job; raises :class:`~shunter.errors.JobNotFound`."""
        codec.validate_job_id(job_id)
        fields: Any = self._client.hgetall(self.keys.job(job_id))
        if not fields:
            raise JobNotFound(self.name, job_id)
        return Job(self._jobs_storage, job_id)._load(fields)

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
        with self._client.pipeline(transaction=False) as pipe:
            for state in COUNTED:
                pipe.zcard(index_key(self.keys, state))
            pipe.hexists(self.keys.meta, "paused")
            replies = pipe.execute()
        counts = {state.value: int(n) for state, n in zip(COUNTED, replies, strict=False)}
        counts["paused"] = int(bool(replies[-1]))
        return counts

    def cancel(self, job_id: str, *, by: str = "", reason: str = "") -> bool:
        """As :meth:`shunter.Queue.cancel`."""
        codec.validate_job_id(job_id)
        reply = int(SCRIPTS["cancel"].run_sync(
            self._client, *cancel_call(self.keys, job_id, str(by)[:200], str(reason)[:1000],
                                       self.max_events)))
        if reply < 0:
            raise_for(reply, self.keys, job_id, "cancel")
        return reply == 1
