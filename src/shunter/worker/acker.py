"""Batched acknowledgements, owned by the worker's event loop.

Completions are queued here instead of each paying its own round trip. The acker sends
what has queued up in one ``complete`` call, and the same call claims jobs for the slots
those completions free (complete-and-claim-next). A lone completion goes out at once (no
added latency); under load, completions that arrive while calls are in flight ride
together in the next one.

A worker of several queues has an acker per queue. Only the acker of its first queue
claims along (``Claimer.piggyback``), and only when that queue comes first in strict
order; otherwise the fetcher claims, so the worker's queue order (strict or weighted)
holds.

Two calls may be in flight, each with at most half the worker's concurrency: then the
worker runs one half of its jobs while Redis settles the other half, instead of the two
taking turns. Measured on a no-op drain (BENCHMARKS.md): one call of up to 200 gave
30.0k jobs/s, with the worker and Redis each idle while the other worked; two calls of
up to concurrency/2 give 40.2k. Three calls measured the same as two, with more round
trips.
"""

from __future__ import annotations

import asyncio

from .fetcher import Claimer

__all__ = ["Acker"]

#: Most completions sent in one call (bounds the script's run time on the server).
MAX_BATCH = 200
#: Calls in flight at once.
MAX_IN_FLIGHT = 2

Pending = tuple[str, int, bytes, "asyncio.Future[int]"]


class Acker:
    """Sends completions, claiming the next jobs into the claimer's slots (at most ``batch``
    per call, none once ``stopping()``) and handing them to its ``launch``."""

    def __init__(self, claimer: Claimer) -> None:
        self.claimer = claimer
        self.slots = claimer.slots
        self._queue: list[Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batch_size = max(1, min(MAX_BATCH, -(-claimer.slots.concurrency // MAX_IN_FLIGHT)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def complete(self, job_id: str, token: int, result: bytes) -> int:
        """Queue one completion; returns the script's code for it (1, or a negative
        ErrorCode). Raises what the call raised if the server could not be reached."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((job_id, token, result, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        sends: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            sends.discard(task)
            in_flight.release()

        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await in_flight.acquire()
                    batch = self._queue[:self._batch_size]
                    del self._queue[:self._batch_size]
                    if not batch:  # drained by a call that started while we waited
                        in_flight.release()
                        break
                    task = loop.create_task(self._send(batch))
                    sends.add(task)
                    task.add_done_callback(done)
        finally:
            for task in sends:
                task.cancel()

    async def _send(self, batch: list[Pending]) -> None:
        c, slots = self.claimer, self.slots
        # The finishing jobs still count as running; their slots are what we refill.
        claim = (0 if c.stopping() or not c.piggyback
                 else max(0, min(c.batch, slots.free + len(batch))))
        claim_id = c.ids.new() if claim else ""
        slots.reserve(claim)
        try:
            codes, claimed = await c.storage.complete_many(
                [(job_id, token, result) for job_id, token, result, _ in batch],
                claim=claim, lease_ms=c.lease_ms, worker_id=c.worker_id, claim_id=claim_id)
        except BaseException as exc:
            if claim:
                # The script may have run and claimed jobs for us: the fetcher re-sends the
                # claim id (the reservation goes with it); each completion is retried by
                # its executor, which recognises its own write if it had landed.
                slots.unresolved(c.storage.keys.name, claim_id, claim)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        slots.unreserve(claim)
        for fields in claimed.jobs:
            c.launch(fields)
        for (*_, future), code in zip(batch, codes, strict=True):
            if not future.done():
                future.set_result(code)
