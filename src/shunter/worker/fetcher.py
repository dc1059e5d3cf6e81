"""The fetcher: a task on the worker's event loop that claims jobs into free slots from
the worker's queues, and blocks on the server (one ``BZPOPMIN`` over every queue's
marker) when none has work.

It also re-sends claims whose reply was lost (see :mod:`shunter.worker.slots`) before it
claims anything new, and rides out Redis outages with a capped backoff: it never exits
because the server went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..storage import UNAVAILABLE, ClaimResult, Storage
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
    """What the claiming tasks of one queue (the fetcher, and that queue's acker) share:
    where they claim, into which slots, how, and what starts the jobs they get."""

    storage: Storage
    slots: Slots
    launch: Launch
    ids: ClaimIds
    batch: int  #: most jobs per claim
    lease_ms: int
    worker_id: str
    stopping: Callable[[], bool]  #: True once no new claims may be made
    #: The queue's acker claims the next jobs along with its completions (see :mod:`.acker`).
    piggyback: bool = True
    weight: int = 1  #: share of claims when the worker's queues are weighted


class Fetcher:
    """Claims into free slots from the worker's queues, in ``claimers`` order (strict), or
    in an order drawn by weight each round (``weighted``): the first queue in the order
    gets the free slots; a queue that runs short hands the rest to the next one. When no
    queue has work, it blocks on all of their markers at once."""

    def __init__(self, claimers: Sequence[Claimer], *, block_timeout: float,
                 stopped: asyncio.Event, weighted: bool = False) -> None:
        self.claimers = list(claimers)
        self.by_queue = {c.storage.keys.name: c for c in self.claimers}
        first = self.claimers[0]
        self.storage = first.storage
        self.slots = first.slots
        self.stopping = first.stopping
        self.weighted = weighted and len(self.claimers) > 1
        self.block_timeout = block_timeout
        self.stopped = stopped
        self._others = [c.storage for c in self.claimers[1:]]
        self._outage = 0

    def order(self) -> list[Claimer]:
        """This round's order: the given one, or a draw without replacement by weight
        (each queue keyed by ``u ** (1 / weight)``, largest first: the same distribution
        as drawing one queue after another by weight, in O(n log n))."""
        if not self.weighted:
            return self.claimers
        return sorted(self.claimers, key=lambda c: random.random() ** (1 / c.weight),
                      reverse=True)

    async def run(self, burst: bool) -> None:
        """Claim until the worker stops; with ``burst``, return once no queue has a job
        waiting or scheduled and nothing runs (or the queues are paused)."""
        slots = self.slots
        while not self.stopping():
            unresolved = slots.next_unresolved()
            if unresolved is not None:
                # Re-send a claim whose reply was lost once its slots are really free (the
                # completions that came with it may still be in flight).
                if slots.free < 0:
                    slots.retry_later(*unresolved)
                    await slots.wait_freed()
                    continue
                queue, claim_id, count = unresolved
                await self._claim(self.by_queue[queue], claim_id, count)
                continue
            if slots.free <= 0:
                await slots.wait_freed()
                continue
            claimed, idle, due_ms = False, True, -1
            for c in self.order():
                count = min(slots.free, c.batch)
                if count <= 0:
                    break
                slots.reserve(count)
                claim = await self._claim(c, c.ids.new(), count)
                if claim is None:  # unreachable: the claim is re-sent next round
                    claimed = True
                    break
                if claim.jobs:
                    claimed = True
                    if len(claim.jobs) == count:
                        break  # it may have more: the next round starts over in order
                if claim.pending and not claim.paused:
                    idle = False
                if claim.next_due_ms >= 0:
                    due_ms = claim.next_due_ms if due_ms < 0 else min(due_ms, claim.next_due_ms)
            if claimed or slots.has_unresolved:
                continue
            if burst and not slots.running and idle:
                return
            timeout = self.block_timeout
            if due_ms >= 0:
                timeout = min(timeout, due_ms / 1000)
            if burst:
                timeout = min(timeout, 0.05)  # notice our own last job finishing
            await self._wait_for_work(timeout)

    async def _claim(self, c: Claimer, claim_id: str, count: int) -> ClaimResult | None:
        """Claim ``count`` jobs (reserved already) on one queue and start them. None when
        the call failed: the claim stays reserved, to be re-sent with the same id."""
        try:
            claim = await c.storage.claim(count, c.lease_ms, c.worker_id, claim_id)
        except Exception as exc:  # unreachable, or a script error: never end the worker
            self.slots.retry_later(c.storage.keys.name, claim_id, count)
            if not isinstance(exc, UNAVAILABLE):
                log.error("claim failed: %r", exc)
            await self.server_unavailable(exc)
            return None
        self.slots.unreserve(count)
        self._outage = 0
        for fields in claim.jobs:
            c.launch(fields)
        return claim

    async def hand_back_unresolved(self) -> None:
        """Jobs of a claim whose reply was lost are ours, unstarted: on the way out, fetch
        them with the same claim id and hand them back at once (best effort; if Redis is
        still unreachable they are rescued when their lease runs out)."""
        while (unresolved := self.slots.next_unresolved()) is not None:
            queue, claim_id, count = unresolved
            c = self.by_queue[queue]
            try:
                # count 0: only the stored batch comes back, never new jobs
                claim = await c.storage.claim(0, c.lease_ms, c.worker_id, claim_id)
                for fields in claim.jobs:
                    with contextlib.suppress(Exception):
                        await c.storage.release(fields[b"id"].decode(), int(fields[b"token"]))
            except Exception as exc:
                log.warning("could not hand back the jobs of an unanswered claim: %s", exc)
            self.slots.unreserve(count)

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
        blocker = asyncio.ensure_future(self.storage.wait_for_work(timeout, self._others))
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
