"""Helpers shared by the worker and lease behaviour tests (not a test module itself)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shunter import Job, Queue, State, Worker
from shunter.storage import Storage

from .conftest import REDIS_URL, eventually


async def settled(queue: Queue, job_id: str, timeout: float = 10.0,
                  state: State | None = None) -> Job:
    """Wait until the job is finished (or in ``state``) and return a fresh copy."""

    async def check() -> Job | None:
        job = await queue.get_job(job_id)
        assert job is not None, f"job {job_id} is gone"
        done = job.state is state if state is not None else job.finished
        return job if done else None

    return await eventually(check, timeout, message=f"job {job_id} {state or 'finished'}")


async def events(storage: Storage, job_id: str | None = None,
                 name: str | None = None) -> list[dict[str, str]]:
    """The queue's event stream (oldest first) as dicts, optionally of one job / verb.
    Each dict has ``event``, ``job``, ``state``, extras, and ``ms`` (server time)."""
    out: list[dict[str, str]] = []
    cursor = "0"
    while batch := await storage.events.read(cursor, None, 1000):
        for eid, raw in batch:
            cursor = eid
            fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
            fields["ms"] = eid.split("-")[0]
            if job_id is not None and fields.get("job") != job_id:
                continue
            if name is not None and fields.get("event") != name:
                continue
            out.append(fields)
    return out


def ms(moment: datetime | None) -> int:
    assert moment is not None
    return round(moment.timestamp() * 1000)


class ThreadWorker:
    """A Worker on its own event loop in a thread, so it keeps running (rescuing,
    claiming) while the test's loop is blocked by a handler."""

    def __init__(self, queue: str, tasks: dict[str, Any], **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = Worker(queue, tasks, REDIS_URL, **options)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self.worker.run(handle_signals=False))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self.loop.close()

    async def stop(self) -> None:
        if self.thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.worker.close(), self.loop)
            await asyncio.wrap_future(fut)
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "thread worker did not stop"
        if self.error is not None:
            raise self.error


def counter() -> tuple[dict[str, int], Callable[[str], int]]:
    """A call counter: ``calls, bump = counter(); bump(job.id)`` returns the new count."""
    calls: dict[str, int] = {}

    def bump(key: str) -> int:
        calls[key] = calls.get(key, 0) + 1
        return calls[key]

    return calls, bump
