"""Read-only views across queues for operators (``shunter status``, dashboards).

Part of the storage layer: it reads keys named by :mod:`shunter.keys` and never writes job
state. Queue discovery SCANs the keyspace (``shunter:{*}:meta`` / ``:events`` /
``:workers``), so its cost grows with the number of keys; name the queues to skip it.
Throughput is counted from each queue's event stream (server timestamps), over the part
of the window the stream still holds: the stream is capped (``max_events``), so a busy
queue keeps only its last seconds of events, and dividing those by the whole window
would report a fraction of the real rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from . import codec
from .errors import DecodeError
from .storage import MAX_EVENTS_RANGE, Counts, Storage
from .storage.server import discover_queues, server_time_ms

__all__ = ["QueueStats", "discover_queues", "queue_stats"]

#: Most stream entries read per queue to count throughput (the stream is capped anyway).
MAX_EVENTS_READ = 10_000


@dataclass(slots=True)
class QueueStats:
    """One queue at one moment."""

    name: str
    counts: Counts
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: Jobs completed / failed / retried in the last ``span`` seconds, from the event stream.
    completed_recent: int = 0
    failed_recent: int = 0
    retried_recent: int = 0
    window: float = 60.0
    #: Seconds the recent counts cover: the window, or the newer part of it that the capped
    #: event stream still holds.
    span: float = 60.0

    @property
    def per_second(self) -> float:
        """Jobs finished (completed or failed) per second over :attr:`span`."""
        return (self.completed_recent + self.failed_recent) / self.span if self.span > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.name, "counts": self.counts, "workers": self.workers,
                "window_seconds": self.window, "span_seconds": round(self.span, 3),
                "completed_recent": self.completed_recent,
                "failed_recent": self.failed_recent, "retried_recent": self.retried_recent,
                "jobs_per_second": round(self.per_second, 3)}


def _ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


async def _trimmed(storage: Storage) -> int | None:
    """The time (unix ms) from which the stream holds every event, if the cap has trimmed
    older ones away; None if it holds all it was ever given (or does not exist)."""
    info = await storage.events.info()
    if info is None:
        return None
    first, length, added = info
    # entries-added is Redis 7 / Valkey; on 6.2 a stream of at least the smallest cap a
    # queue may have is taken as trimmed
    trimmed = added > length if added is not None else length >= MAX_EVENTS_RANGE[0]
    return _ms(first) if trimmed else None


async def _recent_events(storage: Storage, window_ms: int) -> tuple[dict[str, int], int]:
    """Events per name in the last ``window_ms``, and the ms they cover: the window, or
    less when the stream was trimmed inside it, or when it holds more events than
    :data:`MAX_EVENTS_READ` (the newest are read)."""
    now = await server_time_ms(storage.client)
    start = now - window_ms
    entries = await storage.events.newest(start, MAX_EVENTS_READ)
    tally: dict[str, int] = {}
    for _eid, fields in entries:
        name = fields.get(b"event", b"").decode()
        tally[name] = tally.get(name, 0) + 1
    covered_from = start
    if entries:
        holds_from = await _trimmed(storage)
        if holds_from is not None:
            covered_from = max(covered_from, holds_from)
        if len(entries) >= MAX_EVENTS_READ:
            covered_from = max(covered_from, _ms(entries[-1][0]))
    return tally, max(now - covered_from, 1)


async def queue_stats(client: redis.asyncio.Redis, name: str, *, window: float = 60.0) -> QueueStats:
    """Counts per state, live workers (heartbeats) and recent throughput of one queue."""
    storage = Storage(client, name)
    workers = []
    for beat in await storage.heartbeats.alive():
        try:
            info = codec.loads(beat, "heartbeat")
        except DecodeError:
            continue
        if isinstance(info, dict):
            workers.append(info)
    tally, span_ms = await _recent_events(storage, int(window * 1000))
    return QueueStats(name, await storage.counts(), workers, tally.get("complete", 0),
                      tally.get("fail", 0), tally.get("retry", 0), window, span_ms / 1000)

