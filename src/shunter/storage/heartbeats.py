"""Worker heartbeats: not job state, so plain commands and no script.

A heartbeat is a key that expires on the server (``SET … PX``), so liveness never depends
on client clocks, plus an entry in the queue's worker index for discovery.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio

from .keys import QueueKeys

__all__ = ["Heartbeats"]


class Heartbeats:
    """The heartbeats of one queue's workers."""

    __slots__ = ("_raw", "keys")

    def __init__(self, client: redis.asyncio.Redis, keys: QueueKeys) -> None:
        self._raw: Any = client
        self.keys = keys

    async def beat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        """Say this worker is alive for ``ttl_ms``."""
        now_ms = int(time.time() * 1000)
        async with self._raw.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(worker_id), info, px=max(ttl_ms, 1))
            pipe.zadd(self.keys.workers, {worker_id: now_ms})
            # Workers that died never remove their entry and every start has a new id: drop
            # entries not refreshed for 100 heartbeat lifetimes, so the index stays bounded.
            # (Client clocks only decide when a long-dead id is forgotten, never liveness.)
            pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms - 100 * max(ttl_ms, 1))
            await pipe.execute()

    async def forget(self, worker_id: str) -> None:
        """Remove the heartbeat of a worker that stopped cleanly."""
        async with self._raw.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

    async def alive(self) -> list[bytes]:
        """Heartbeats of the workers alive now; index entries whose key expired (a worker
        that died) are pruned on the way."""
        ids = [i.decode() for i in await self._raw.zrange(self.keys.workers, 0, -1)]
        if not ids:
            return []
        beats = await self._raw.mget([self.keys.worker(i) for i in ids])
        gone = [i for i, beat in zip(ids, beats, strict=True) if beat is None]
        if gone:
            await self._raw.zrem(self.keys.workers, *gone)
        return [beat for beat in beats if beat is not None]
