"""Batched acknowledgements, owned by the worker's event loop.

Completions are queued here instead of each paying its own round trip. The acker sends
whatever has queued up in one ``complete`` call, and the same call claims jobs for the
slots those completions free (complete-and-claim-next). Batching is natural: a lone
completion goes out at once (no added latency); under load, completions that arrive while
a call is in flight ride together in the next one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["Acker"]

#: Most completions sent in one call (bounds the script's run time on the server).
MAX_BATCH = 200


class Acker:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._queue: list[tuple[str, int, bytes, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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
        worker = self._worker
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                # The finishing jobs still count as running; their slots are what we refill.
                claim = 0 if worker.stopping else max(0, min(worker.batch, worker.free_slots + len(batch)))
                worker.reserved += claim
                try:
                    codes, claimed = await worker.storage.complete_many(
                        [(job_id, token, result) for job_id, token, result, _ in batch],
                        claim=claim, lease_ms=worker.lease_ms, worker_id=worker.id)
                except BaseException as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                finally:
                    worker.reserved -= claim
                for fields in claimed.jobs:
                    worker.start_job(fields)
                for (*_, future), code in zip(batch, codes, strict=True):
                    if not future.done():
                        future.set_result(code)
