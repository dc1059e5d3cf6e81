"""QueueEvents: an async iterator over a queue's event stream (one event per transition)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from . import codec
from .connection import RedisLike, async_client
from .storage import Storage

__all__ = ["Event", "QueueEvents", "progress_of"]


@dataclass(frozen=True, slots=True)
class Event:
    """One transition: ``name`` is the verb (enqueue, claim, complete, retry, ...), ``state``
    the job's state after it; ``fields`` holds extras such as ``token``, ``delay_ms`` or
    ``progress``. ``id`` is the stream id, whose order is the order of the transitions."""

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

    ``since`` is a stream id to start after; the default ``"$"`` means only new events,
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
            self.cursor = await self._storage.last_event_id()
        while True:
            for eid, raw in await self._storage.read_events(self.cursor, block_ms=0):
                self.cursor = eid
                fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
                yield Event(eid, fields.pop("event", ""), fields.pop("job", ""),
                            fields.pop("state", ""), fields)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def __aenter__(self) -> QueueEvents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def progress_of(event: Event) -> object:
    """The decoded progress value carried by a ``progress`` event (None otherwise)."""
    raw = event.fields.get("progress")
    return None if raw is None else codec.loads(raw, "progress")
