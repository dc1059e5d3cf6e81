"""The hooks seam: how metrics, tracing and logging observe a worker without editing the
executor. A hook object implements any of the methods of :class:`Hooks` (the rest are
inherited no-ops); ``Worker(hooks=[...])`` calls them in order on the event loop.

A hook must be quick and must not block: it runs on the loop, between the steps of an
attempt. A hook that raises is logged and otherwise ignored: observing a job never
changes what happens to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..job import Job

__all__ = ["HookSet", "Hooks"]

log = logging.getLogger("shunter.worker")


class Hooks:
    """Base class of worker hooks; override what you need."""

    def claimed(self, job: Job) -> None:
        """A claim handed this job to the worker (before it runs)."""

    def started(self, job: Job) -> None:
        """Its handler is about to run (async) or was submitted to a thread (sync)."""

    def settled(self, job: Job, outcome: str) -> None:
        """The attempt's end was recorded: ``completed``, ``retried``, ``failed``,
        ``cancelled`` or ``released``; ``refused`` when the fence refused it (lost lease)."""

    def lease_lost(self, job: Job) -> None:
        """The attempt lost its lease (its worker was frozen or cut off past the lease)."""

    def abandoned(self, job: Job) -> None:
        """The handler did not stop within ``cancel_grace`` and was left running."""


class HookSet:
    """The hooks of one worker, called in order; a hook's exception is logged, not raised."""

    __slots__ = ("_hooks", "active")

    def __init__(self, hooks: Sequence[Hooks] = ()) -> None:
        self._hooks = tuple(hooks)
        #: Any hook at all: callers on the hot path test this before calling.
        self.active = bool(self._hooks)

    def _call(self, name: str, *args: object) -> None:
        for hook in self._hooks:
            try:
                getattr(hook, name)(*args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, name)

    def claimed(self, job: Job) -> None:
        if self._hooks:
            self._call("claimed", job)

    def started(self, job: Job) -> None:
        if self._hooks:
            self._call("started", job)

    def settled(self, job: Job, outcome: str) -> None:
        if self._hooks:
            self._call("settled", job, outcome)

    def lease_lost(self, job: Job) -> None:
        if self._hooks:
            self._call("lease_lost", job)

    def abandoned(self, job: Job) -> None:
        if self._hooks:
            self._call("abandoned", job)
