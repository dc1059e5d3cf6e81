"""Queues that belong to one test: a unique name, and the broom that deletes the queue
afterwards (tests isolate themselves by name, never by flushing the server)."""

from __future__ import annotations

import asyncio
import threading
import uuid

from .. import codec
from ..queue import Queue
from ..storage.connection import RedisLike

__all__ = ["obliterate_queue", "obliterate_queue_blocking", "unique_queue_name"]


def unique_queue_name(hint: str = "test") -> str:
    """A queue name no other test uses: ``t-<hint>-<8 random hex digits>``, the hint cut to
    40 ASCII letters, digits and dashes (a test's name is a good hint)."""
    base = "".join(c if c.isascii() and c.isalnum() else "-" for c in str(hint))[:40].strip("-")
    return codec.validate_queue_name(f"t-{base or 'test'}-{uuid.uuid4().hex[:8]}")


async def obliterate_queue(name: str, redis: RedisLike = None) -> int:
    """Delete the queue and every job in it, active ones too; returns how many jobs."""
    async with Queue(name, redis) as queue:
        return await queue.obliterate(force=True)


def obliterate_queue_blocking(name: str, redis: str | None = None) -> int:
    """:func:`obliterate_queue` from sync code, even while the calling thread runs an event
    loop or owns one that must not be replaced (a pytest-asyncio loop): it runs on a loop
    of its own in a short-lived thread."""
    result: list[int] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(obliterate_queue(name, redis)))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name=f"obliterate {name}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
