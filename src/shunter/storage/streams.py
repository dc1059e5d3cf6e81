"""Reading a queue's event stream (scripts append to it; this module only reads).

Listeners (``QueueEvents``, ``Job.wait``, ``shunter status``) come here; later the SQL
history sink's consumer group will too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

from .keys import QueueKeys

__all__ = ["EventStream", "StreamInfo", "wait_for_events"]

Entry = tuple[str, dict[bytes, bytes]]
#: (first entry id, length, entries ever added or None before Redis 7)
StreamInfo = tuple[bytes, int, int | None]


class EventStream:
    """The event stream of one queue, over an asyncio client."""

    __slots__ = ("_raw", "key", "max_block")

    def __init__(self, client: redis.asyncio.Redis, keys: QueueKeys, max_block: float) -> None:
        self._raw: Any = client
        self.key = keys.events
        #: Longest a blocking read may wait (seconds), under the client's socket timeout.
        self.max_block = max_block

    async def last_id(self) -> str:
        """The id of the newest event ("0-0" when there is none)."""
        newest = await self._raw.xrevrange(self.key, count=1)
        return newest[0][0].decode() if newest else "0-0"

    async def read(self, cursor: str, block_ms: int | None, count: int = 100) -> list[Entry]:
        """Events after ``cursor``; ``block_ms`` None returns at once, 0 waits as long as a
        blocking command may (:attr:`max_block`), and an empty list means none came."""
        if block_ms is not None:
            longest = int(self.max_block * 1000)
            block_ms = longest if block_ms <= 0 else min(block_ms, longest)
        reply = await self._raw.xread({self.key: cursor}, count=count, block=block_ms)
        if not reply:
            return []
        return [(eid.decode(), fields) for eid, fields in reply[0][1]]

    async def wait_for_job(self, job_id: str, cursor: str, timeout: float | None) -> str:
        """Read events after ``cursor`` until one concerns ``job_id`` or time runs out
        (at most 5 s per call, so callers re-check state); returns the new cursor."""
        deadline = time.monotonic() + (5.0 if timeout is None else min(timeout, 5.0))
        wanted = job_id.encode()
        while (left := deadline - time.monotonic()) > 0:
            for eid, fields in await self.read(cursor, max(int(left * 1000), 1)):
                cursor = eid
                if fields.get(b"job") == wanted:
                    return cursor
        return cursor

    async def newest(self, since_ms: int, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` events from ``since_ms`` (server time) on, newest first."""
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._raw.xrevrange(
            self.key, max="+", min=f"{since_ms}-0", count=count)
        return entries

    async def info(self) -> StreamInfo | None:
        """What the stream holds: None if it does not exist or is empty."""
        try:
            info = await self._raw.xinfo_stream(self.key)
        except ResponseError:  # no such key
            return None
        first = info.get("first-entry")
        if not first:
            return None
        added = info.get("entries-added")
        return first[0], int(info["length"]), None if added is None else int(added)


async def wait_for_events(cursors: Sequence[tuple[EventStream, str]], timeout: float) -> bool:
    """Block until any of the streams (of queues on one server) holds an event after its
    cursor, or ``timeout`` seconds pass (at most :attr:`EventStream.max_block`); True if
    one does. One XREAD over all of them, on the first stream's client."""
    first = cursors[0][0]
    block_ms = max(int(min(timeout, first.max_block) * 1000), 1)
    reply = await first._raw.xread({s.key: cursor for s, cursor in cursors}, count=1,
                                   block=block_ms)
    return bool(reply)
