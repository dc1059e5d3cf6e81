"""The fetcher: a task on the worker's event loop that claims jobs into free slots and
blocks on the server (``BZPOPMIN`` of the queue's marker) when there is no work.

It also re-sends claims whose reply was lost (see :mod:`shunter.worker.slots`) before it
claims anything new, and rides out Redis outages with a capped backoff: it never exits
because the server went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..storage import UNAVAILABLE, Storage
from .slots import Slots

__all__ = ["ClaimIds", "Claimer", "Fetcher", "Launch"]

log = logging.getLogger("shunter.worker")

#: Starts one claimed job (its CLAIM_FIELDS); the fetcher and the acker both call it.
Launch = Callable[[dict[bytes, bytes]], None]


class ClaimIds:
    """Claim request ids of one worker: a re-sent claim with the same id returns the same
    batch instead of a new one."""

    def __init__(self) -> None:
        self._prefix = f"{uuid.uuid4().hex[:12]}:"
        self._seq = 0

    def new(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq}"


@dataclass(frozen=True, slots=True)
class Claimer:
    """What the two claiming tasks (fetcher and acker) share: where they claim, into which
    slots, how, and what starts the jobs they get."""

    storage: Storage
    slots: Slots
    launch: Launch
    ids: ClaimIds
    batch: int  #: most jobs per claim
    lease_ms: int
    worker_id: str
    stopping: Callable[[], bool]  #: True once no new claims may be made


class Fetcher:
    def __init__(self, claimer: Claimer, *, block_timeout: float, stopped: asyncio.Event) -> None:
        self.storage = claimer.storage
        self.slots = claimer.slots
        self.launch = claimer.launch
        self.claimer = claimer
        self.block_timeout = block_timeout
        self.stopped = stopped
        self._outage = 0

    async def run(self, burst: bool) -> None:
        """Claim until the worker stops; with ``burst``, return once nothing is waiting or
        scheduled and nothing runs (or the queue is paused)."""
        slots = self.slots
        c = self.claimer
        while not c.stopping():
            free = slots.free
            unresolved = slots.next_unresolved()
            if unresolved is not None:
                # Re-send a claim whose reply was lost once its slots are really free (the
                # completions that came with it may still be in flight).
                if free < 0:
                    slots.retry_later(*unresolved)
                    await slots.wait_freed()
                    continue
                claim_id, count = unresolved
            else:
                if free <= 0:
                    await slots.wait_freed()
                    continue
                claim_id, count = c.ids.new(), min(free, c.batch)
                slots.reserve(count)
            try:
                claim = await self.storage.claim(count, c.lease_ms, c.worker_id, claim_id)
            except Exception as exc:  # unreachable, or a script error: never end the worker
                slots.retry_later(claim_id, count)
                if not isinstance(exc, UNAVAILABLE):
                    log.error("claim failed: %r", exc)
                await self.server_unavailable(exc)
                continue
            slots.unreserve(count)
            self._outage = 0
            for fields in claim.jobs:
                self.launch(fields)
            if claim.jobs or slots.has_unresolved:
                continue
            if burst and not slots.running and (claim.pending == 0 or claim.paused):
                return
            timeout = self.block_timeout
            if claim.next_due_ms >= 0:
                timeout = min(timeout, claim.next_due_ms / 1000)
            if burst:
                timeout = min(timeout, 0.05)  # notice our own last job finishing
            await self._wait_for_work(timeout)

    async def server_unavailable(self, exc: BaseException) -> None:
        """Redis is unreachable (restart, failover, network): wait and try again, never exit.
        Jobs in flight keep running; their leases are renewed again once it is back."""
        self._outage += 1
        delay = min(0.05 * 2 ** min(self._outage, 8), 5.0)
        if self._outage in (1, 10) or self._outage % 100 == 0:
            log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), delay)

    async def _wait_for_work(self, timeout: float) -> None:
        if timeout <= 0:
            return
        self.slots.nudge.clear()
        blocker = asyncio.ensure_future(self.storage.wait_for_work(timeout))
        stopper = asyncio.ensure_future(self.slots.nudge.wait())
        await asyncio.wait({blocker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not blocker.done():
            blocker.cancel()  # redis-py drops the connection of a cancelled blocking call
            await asyncio.wait({blocker}, timeout=0.1)
            if not blocker.done():
                # The cancel was lost (Python 3.11: redis-py's wait_for swallows it): the
                # BZPOPMIN would hold shutdown for its whole timeout. Closing the pool ends
                # it; drop it.
                blocker.add_done_callback(_retrieve)
                return
        elif isinstance(blocker.exception(), UNAVAILABLE):
            await self.server_unavailable(blocker.exception() or Exception())
        if not blocker.cancelled():
            blocker.exception()  # retrieved, so asyncio does not log it at shutdown


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a dropped future's outcome as seen, so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()
