"""The settler: the commit port of the executor. It records how an attempt ended with one
fenced write (completions go through the acker, batched), and tells a write that landed
from one the fence refused, even when the reply was lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..errors import JobNotFound, JobNotInState, LeaseLost
from ..job import Job
from ..outcome import Outcome
from ..storage import UNAVAILABLE, Storage, raise_for
from .hooks import HookSet

__all__ = ["Settler"]

log = logging.getLogger("shunter.worker")


class Completer(Protocol):
    async def complete(self, job_id: str, token: int, result: bytes) -> int: ...


class Settler:
    """Records the end of attempts: ``apply`` an outcome, ``abort`` (cancelled) or
    ``release`` (handed back by a shutdown, no attempt used)."""

    def __init__(self, storage: Storage, completer: Completer, lease: float,
                 counters: Counter[str], hooks: HookSet) -> None:
        self.storage = storage
        self.completer = completer
        self.lease = lease
        self.counters = counters
        self.hooks = hooks

    async def apply(self, job: Job, outcome: Outcome) -> None:
        storage, token = self.storage, job.token or 0
        if outcome.kind == "complete":
            async def complete() -> None:
                code = await self.completer.complete(job.id, token, outcome.result)
                if code < 0:
                    raise_for(code, storage.keys, job.id, "complete")
            await self._fenced(job, "completed", complete)
        elif outcome.kind == "throttle":
            await self._fenced(job, "throttled", lambda: storage.ratelimited(
                job.id, token, outcome.delay_ms, outcome.scope))
        elif outcome.kind == "retry":
            await self._fenced(job, "retried", lambda: storage.retry(
                job.id, token, outcome.delay_ms, outcome.error, outcome.count_attempt))
        else:
            await self._fenced(job, "failed", lambda: storage.fail(job.id, token, outcome.error))

    async def abort(self, job: Job) -> None:
        await self._fenced(job, "cancelled", lambda: self.storage.abort(job.id, job.token or 0))

    async def release(self, job: Job) -> None:
        await self._fenced(job, "released", lambda: self.storage.release(job.id, job.token or 0))

    async def _fenced(self, job: Job, counter: str, send: Callable[[], Awaitable[None]]) -> None:
        """Apply one fenced write. While the server is unreachable, keep trying for as long as
        the lease could still be ours.

        A send can land and still look failed (the reply was lost, and the client re-sent it
        after reconnecting): the second apply is then refused with JobNotInState. Every settling
        script records its token as ``settled_token``, so "settled by our token" means our write
        landed; any other refusal means the attempt lost the job (lease expired, rescued).
        """
        deadline = time.monotonic() + self.lease
        warned = False
        while True:
            try:
                await send()
            except LeaseLost:
                self.counters["lease_lost"] += 1
                log.warning("job %s: commit rejected, another attempt owns the job now", job.id)
                self.hooks.settled(job, "refused")
                return
            except JobNotFound:
                # Deleted meanwhile: by obliterate, or by retention (keep count 0) right after
                # our own write landed and its reply was lost. Nothing is left to record.
                log.info("job %s: gone before its %s was recorded (deleted meanwhile)",
                         job.id, counter)
            except JobNotInState:
                if not await self._landed(job):
                    # The job left active without our write: rescued after our lease ran out.
                    self.counters["lease_lost"] += 1
                    log.warning("job %s: commit rejected, its lease ran out and it was rescued",
                                job.id)
                    self.hooks.settled(job, "refused")
                    return
            except UNAVAILABLE as exc:
                if time.monotonic() > deadline:
                    raise
                if not warned:
                    log.warning("job %s: redis unavailable while committing (%s); retrying",
                                job.id, exc)
                    warned = True
                await asyncio.sleep(0.1)
                continue
            self.counters[counter] += 1
            if self.hooks.active:
                self.hooks.settled(job, counter)
            return

    async def _landed(self, job: Job) -> bool:
        try:
            fields = await self.storage.job_fields(job.id)
        except JobNotFound:
            return True  # finished and already removed by retention (keep count 0)
        return fields.get(b"settled_token") == str(job.token).encode()
