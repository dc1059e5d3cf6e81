"""Per-worker resources: the ``lifespan`` a worker enters before its first claim and
leaves after its last job, and whose value handlers see as ``job.context``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..errors import WorkerStartupError

__all__ = ["Lifespan", "Resources"]

log = logging.getLogger("shunter.worker")

#: ``lifespan(worker)``: an async context manager whose value is every job's ``job.context``.
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


class Resources:
    """Enters and leaves one worker's lifespan; ``value`` is what it yielded."""

    def __init__(self, lifespan: Lifespan | None, worker_id: str) -> None:
        self.lifespan = lifespan
        self.worker_id = worker_id
        self.value: Any = None
        self._entered: AbstractAsyncContextManager[Any] | None = None

    async def enter(self, worker: Any) -> None:
        """Enter the lifespan; raises :class:`WorkerStartupError` (its cause: what the
        lifespan raised) if it fails."""
        if self.lifespan is None:
            return
        try:
            cm = self.lifespan(worker)
            self.value = await cm.__aenter__()
        except Exception as exc:
            raise WorkerStartupError(f"worker {self.worker_id}: lifespan startup failed, "
                                     f"nothing was claimed: {exc!r}") from exc
        self._entered = cm

    async def exit(self) -> None:
        """Leave the lifespan (once); its errors are logged, not raised."""
        cm, self._entered = self._entered, None
        if cm is not None:
            try:
                await cm.__aexit__(None, None, None)
            except Exception:
                log.exception("worker %s: lifespan shutdown failed", self.worker_id)
