"""Read-only views across queues for operators (``shunter status``, dashboards).

Part of the storage layer: it reads keys named by :mod:`shunter.keys` and never writes job
state. Queue discovery SCANs the keyspace (``shunter:{*}:meta`` / ``:events`` /
``:workers``), so its cost grows with the number of keys; name the queues to skip it.
Throughput is counted from each queue's event stream (server timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from . import codec
from .errors import DecodeError
from .storage import Counts, Storage

__all__ = ["QueueStats", "discover_queues", "queue_stats"]

_SUFFIXES = ("meta", "events", "workers")
#: Most stream entries read per queue to count throughput (the stream is capped anyway).
MAX_EVENTS_READ = 10_000


@dataclass(slots=True)
class QueueStats:
    """One queue at one moment."""

    name: str
    counts: Counts
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: Jobs completed / failed in the last ``window`` seconds, from the event stream.
    completed_recent: int = 0
    failed_recent: int = 0
    retried_recent: int = 0
    window: float = 60.0

    @property
    def per_second(self) -> float:
        return (self.completed_recent + self.failed_recent) / self.window if self.window else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.name, "counts": self.counts, "workers": self.workers,
                "window_seconds": self.window, "completed_recent": self.completed_recent,
                "failed_recent": self.failed_recent, "retried_recent": self.retried_recent,
                "jobs_per_second": round(self.per_second, 3)}


async def discover_queues(client: redis.asyncio.Redis) -> list[str]:
    """Names of the queues that have keys on this server (sorted)."""
    raw: Any = client
    names: set[str] = set()
    for suffix in _SUFFIXES:
        async for key in raw.scan_iter(match=f"shunter:{{*}}:{suffix}", count=1000):
            text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            inner = text[len("shunter:{"):-(len(suffix) + 2)]
            try:
                names.add(codec.validate_queue_name(inner))
            except ValueError:
                continue  # not one of ours
    return sorted(names)


async def _recent_events(storage: Storage, window_ms: int) -> dict[str, int]:
    raw: Any = storage.client
    sec, usec = await raw.time()
    start = int(sec) * 1000 + int(usec) // 1000 - window_ms
    entries = await raw.xrange(storage.keys.events, min=f"{start}-0", max="+",
                               count=MAX_EVENTS_READ)
    tally: dict[str, int] = {}
    for _eid, fields in entries:
        name = fields.get(b"event", b"").decode()
        tally[name] = tally.get(name, 0) + 1
    return tally


async def queue_stats(client: redis.asyncio.Redis, name: str, *, window: float = 60.0) -> QueueStats:
    """Counts per state, live workers (heartbeats) and recent throughput of one queue."""
    storage = Storage(client, name)
    workers = []
    for beat in await storage.workers():
        try:
            info = codec.loads(beat, "heartbeat")
        except DecodeError:
            continue
        if isinstance(info, dict):
            workers.append(info)
    tally = await _recent_events(storage, int(window * 1000))
    return QueueStats(name, await storage.counts(), workers, tally.get("complete", 0),
                      tally.get("fail", 0), tally.get("retry", 0), window)

