"""What the server says about itself: INFO, persistence settings, the time, and which
queues have keys on it. Read by the worker's startup checks and by ``shunter status``."""

from __future__ import annotations

from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

from .. import codec

__all__ = ["discover_queues", "info", "rdb_enabled", "server_time_ms"]

_SUFFIXES = ("meta", "events", "workers")


async def info(client: redis.asyncio.Redis) -> dict[str, Any]:
    """``INFO``, or an empty dict where a managed provider disabled it."""
    try:
        reply: dict[str, Any] = await client.info()
    except ResponseError:
        return {}
    return reply


async def rdb_enabled(client: redis.asyncio.Redis) -> bool | None:
    """Whether RDB snapshots are configured; None when ``CONFIG`` is disabled."""
    try:
        save: dict[Any, Any] = await client.config_get("save")
    except Exception:  # CONFIG is often disabled on managed servers
        return None
    return bool((save.get(b"save") or save.get("save") or b"").strip())


async def server_time_ms(client: redis.asyncio.Redis) -> int:
    raw: Any = client
    sec, usec = await raw.time()
    return int(sec) * 1000 + int(usec) // 1000


async def discover_queues(client: redis.asyncio.Redis) -> list[str]:
    """Names of the queues that have keys on this server (sorted). SCANs the keyspace, so
    its cost grows with the number of keys."""
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
