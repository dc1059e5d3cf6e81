"""QueueEvents: an async iterator over a queue's event stream (one event per transition)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from . import codec
from .storage import Storage
from .storage.connection import RedisLike, async_client

__all__ = ["Event", "QueueEvents", "progress_of"]


@dataclass(frozen=True, slots=True)
class Event:
    """One transition: ``name`` is the verb (enqueue, claim, complete, retry, ...), ``state``
    the job's state after it. ``id`` is the stream id, whose order is the order of the
    transitions.

    ``fields`` holds the rest, as strings (docs/lifecycle.md, "Events", has the table):
    ``seq`` on every event, the queue's event number (1, 2, 3 ... with no gaps: a jump
    says exactly how many events the capped stream dropped); on the events of an attempt
    (claim, progress, complete, retry, fail, abort, release, rescue) its ``token``,
    ``attempt`` number and ``worker``; on failures ``error_type`` and ``error_message``
    (at most 1,000 bytes; the whole error stays on the job); on cancellations ``by`` and
    ``reason``; and ``delay_ms`` (retry), ``stalls`` (rescue), ``progress`` or
    ``progress_bytes`` (progress), ``count`` (drain, clean)."""

    id: str
    name: str
    job_id: str
    state: str
    fields: dict[str, str]

    @property
    def timestamp(self) -> datetime:
        """Server time of the transition."""
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, UTC)


class QueueEvents:
    """Follow a queue's events::

        async for event in QueueEvents("emails"):
            print(event.name, event.job_id, event.state)

    ``since`` is a stream id to start after; the default ``"$"`` means only new events
    (those appended after ``async with`` entered, or else after iteration started),
    ``"0"`` replays what the capped stream still holds.
    """

    def __init__(self, queue: str, redis: RedisLike = None, *, since: str = "$") -> None:
        codec.validate_queue_name(queue)
        self._client, self._owned = async_client(redis)
        self._storage = Storage(self._client, queue)
        self.cursor = since

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[Event]:
        if self.cursor == "$":
            self.cursor = await self._storage.events.last_id()
        while True:
            for eid, raw in await self._storage.events.read(self.cursor, block_ms=0):
                self.cursor = eid
                fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
                yield Event(eid, fields.pop("event", ""), fields.pop("job", ""),
                            fields.pop("state", ""), fields)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def __aenter__(self) -> QueueEvents:
        # "$" is fixed on entry, not at the first read: what the body of the ``async with``
        # reads next (say, a job's state) cannot miss an event between the two.
        if self.cursor == "$":
            self.cursor = await self._storage.events.last_id()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def progress_of(event: Event) -> object:
    """The decoded progress value carried by a ``progress`` event (None otherwise)."""
    raw = event.fields.get("progress")
    return None if raw is None else codec.loads(raw, "progress")
