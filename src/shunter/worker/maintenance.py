"""Maintenance: named periodic duties run by a task on the worker's event loop.

Rescue of expired leases and the worker's heartbeat are duties today; schedulers and
stream trimming will register their own. Each duty runs about every ``interval``
seconds; one that raises is logged (at most once a minute per duty) and runs again next
period, so a Redis outage never ends maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Duty", "Maintenance"]

log = logging.getLogger("shunter.worker")


@dataclass(slots=True)
class Duty:
    """One periodic duty: ``run`` is awaited about every ``interval`` seconds."""

    name: str
    interval: float
    run: Callable[[], Awaitable[object]]
    due: float = field(default=0.0)  #: monotonic time of its next run
    warned: float = field(default=-1e9)


class Maintenance:
    """Runs the registered duties until :meth:`stop`."""

    def __init__(self) -> None:
        self.duties: list[Duty] = []
        self._stop = asyncio.Event()

    def register(self, name: str, interval: float, run: Callable[[], Awaitable[object]]) -> None:
        """Add a duty; it first runs when maintenance starts."""
        if any(d.name == name for d in self.duties):
            raise ValueError(f"a maintenance duty named {name!r} is registered already")
        self.duties.append(Duty(name, max(interval, 0.01), run))

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for duty in self.duties:
                if duty.due <= now:
                    duty.due = now + duty.interval
                    await self._run(duty)
            wake = min((d.due for d in self.duties), default=time.monotonic() + 1)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(wake - time.monotonic(), 0))

    async def _run(self, duty: Duty) -> None:
        try:
            await duty.run()
        except Exception as exc:
            now = time.monotonic()
            if now - duty.warned >= 60:
                duty.warned = now
                log.warning("maintenance duty %s failed: %s", duty.name, exc)
