"""The producer of the fault suite: enqueues jobs through the public Queue API and records
each enqueue in the ledger, Jepsen style: ``unknown`` before the call is sent, then ``ok``
or ``error`` from the reply.

Ids are chosen here, so a call whose reply was lost (Redis crashed mid-call) is re-sent
with the same ids: enqueue is idempotent per id, so the re-send either creates the job or
finds it. An enqueue the server refused (out of memory) is recorded as ``error`` with the
message the caller saw, and never re-sent: the checker then proves nothing of it exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import BusyLoadingError, ResponseError

from shunter import Queue
from shunter.errors import BulkAddError
from shunter.storage import UNAVAILABLE

from .ledger import Ledger

__all__ = ["Producer", "ProducerStats"]

#: The server is down, restarting or still loading its AOF: re-send later.
TRANSIENT: tuple[type[BaseException], ...] = (*UNAVAILABLE, BusyLoadingError)


@dataclass
class ProducerStats:
    ok: int = 0
    errors: int = 0
    resent: int = 0  #: calls re-sent after a transient error (same ids)
    outage_s: float = 0.0  #: time spent waiting for the server
    error_messages: dict[str, int] = field(default_factory=dict)
    ok_times: list[float] = field(default_factory=list)  #: wall time of each acknowledged job
    error_times: list[float] = field(default_factory=list)


class Producer:
    def __init__(self, queue: Queue, ledger: Ledger, *, prefix: str = "j",
                 options: dict[str, Any] | None = None) -> None:
        self.queue = queue
        self.ledger = ledger
        self.prefix = prefix
        self.options = options or {}
        self.stats = ProducerStats()
        self.next_n = 0

    def entries(self, count: int, task: str = "work", data: Callable[[int], Any] | None = None,
                **options: Any) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            n = self.next_n
            self.next_n += 1
            out.append({"task": task, "data": data(n) if data else {"n": n},
                        "job_id": f"{self.prefix}{n}", **self.options, **options})
        return out

    async def send(self, entries: Sequence[dict[str, Any]], *, bulk: bool = True,
                   give_up_after: float = 120.0) -> bool:
        """Enqueue ``entries`` (one pipelined call, or one ``add`` each with ``bulk=False``).
        Transient failures are re-sent with the same ids until ``give_up_after`` seconds;
        returns False if the server refused them."""
        ids = [e["job_id"] for e in entries]
        self.ledger.enqueue(self.queue.name, ids, "unknown")
        if not bulk:
            results = [await self._send_one(e, give_up_after) for e in entries]
            return all(results)
        start = time.monotonic()
        while True:
            try:
                await self.queue.add_bulk(entries)
            except TRANSIENT:
                if time.monotonic() - start > give_up_after:
                    raise
                self.stats.resent += 1
                await asyncio.sleep(0.1)
                self.stats.outage_s += 0.1
                continue
            except (ResponseError, BulkAddError) as exc:  # partly refused: re-send one by one to know which
                self._error_seen(exc)
                return all([await self._send_one(e, give_up_after) for e in entries])
            self.ledger.enqueue(self.queue.name, ids, "ok")
            self.stats.ok += len(ids)
            self.stats.ok_times += [time.time()] * len(ids)
            return True

    async def _send_one(self, entry: dict[str, Any], give_up_after: float) -> bool:
        options = {k: v for k, v in entry.items() if k not in ("task", "data")}
        start = time.monotonic()
        while True:
            try:
                await self.queue.add(entry["task"], entry.get("data"), **options)
            except TRANSIENT:
                if time.monotonic() - start > give_up_after:
                    raise
                self.stats.resent += 1
                await asyncio.sleep(0.1)
                self.stats.outage_s += 0.1
                continue
            except ResponseError as exc:
                self._error_seen(exc)
                self.ledger.enqueue(self.queue.name, [entry["job_id"]], "error",
                                    f"{type(exc).__name__}: {exc}")
                self.stats.errors += 1
                self.stats.error_times.append(time.time())
                return False
            self.ledger.enqueue(self.queue.name, [entry["job_id"]], "ok")
            self.stats.ok += 1
            self.stats.ok_times.append(time.time())
            return True

    def _error_seen(self, exc: BaseException) -> None:
        key = f"{type(exc).__name__}: {str(exc)[:80]}"
        self.stats.error_messages[key] = self.stats.error_messages.get(key, 0) + 1

    async def run(self, total: int, *, batch: int = 200, rate: float | None = None,
                  task: str = "work", data: Callable[[int], Any] | None = None,
                  stop: asyncio.Event | None = None, bulk: bool = True, **options: Any) -> None:
        """Enqueue ``total`` jobs in batches, at most ``rate`` jobs/s (None: as fast as it can)."""
        start = time.monotonic()
        sent = 0
        while sent < total and not (stop and stop.is_set()):
            n = min(batch, total - sent)
            await self.send(self.entries(n, task, data, **options), bulk=bulk)
            sent += n
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
