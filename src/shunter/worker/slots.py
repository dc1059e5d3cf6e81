"""Concurrency accounting, owned by the worker's event loop and shared by the fetcher and
the ackers (the places that claim).

A slot is either running an attempt or reserved by a claim in flight, so the worker never
claims more than it can run; one set of slots serves every queue of the worker. Attempts
are keyed by (queue, job id, fencing token), never by the job id alone: a worker frozen
past its lease can claim a rescued job again while its first attempt still winds down
here; the new claim supersedes the old attempt, and each attempt's end removes only its
own entry.

A claim whose reply never came (connection cut after the script ran) keeps its
reservation as *unresolved* until the fetcher re-sends it with the same claim id, which
returns the same batch (see ``replay_claim`` in the Lua library).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Protocol

__all__ = ["AttemptKey", "Slots"]

#: One attempt of a job in this worker: (queue, job id, fencing token).
AttemptKey = tuple[str, str, int]
#: A job of this worker: (queue, job id).
JobKey = tuple[str, str]
#: A claim whose reply was lost: (queue, claim id, slots reserved for it).
Unresolved = tuple[str, str, int]


class Attempt(Protocol):
    """What slots need of a running attempt (see :class:`shunter.worker.executor.Running`)."""

    @property
    def queue(self) -> str: ...

    @property
    def job_id(self) -> str: ...

    @property
    def token(self) -> int: ...

    def supersede(self) -> bool: ...


class Slots:
    """``concurrency`` slots: running attempts, reservations of claims in flight, and
    unresolved claims."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._running: dict[AttemptKey, Attempt] = {}
        self._newest: dict[JobKey, Attempt] = {}
        #: Slots promised to claims in flight (fetcher and acker), so they never over-claim.
        self.reserved = 0
        self._unresolved: list[Unresolved] = []
        self._freed = asyncio.Event()
        #: Set when the fetcher should stop waiting for work and look again (a claim became
        #: unresolved, or the worker is stopping).
        self.nudge = asyncio.Event()

    @staticmethod
    def attempt_key(queue: str, job_id: str, token: int) -> AttemptKey:
        """One attempt of a job in this worker: (queue, job id, fencing token)."""
        return (queue, job_id, token)

    @property
    def free(self) -> int:
        """Slots neither running an attempt nor promised to a claim in flight."""
        return self.concurrency - len(self._running) - self.reserved

    @property
    def running(self) -> int:
        return len(self._running)

    def attempts(self) -> Iterator[Attempt]:
        return iter(list(self._running.values()))

    # -- claims ----------------------------------------------------------------------------
    def reserve(self, count: int) -> None:
        self.reserved += count

    def unreserve(self, count: int) -> None:
        self.reserved -= count

    def unresolved(self, queue: str, claim_id: str, count: int) -> None:
        """A claim of ``count`` jobs on ``queue`` (its slots reserved) got no reply: the
        script may have run on the server. The reservation stays until
        :meth:`next_unresolved` hands it out."""
        self._unresolved.append((queue, claim_id, count))
        self.nudge.set()

    def retry_later(self, queue: str, claim_id: str, count: int) -> None:
        """Put back an unresolved claim that could not be re-sent yet (still reserved)."""
        self._unresolved.insert(0, (queue, claim_id, count))

    def next_unresolved(self) -> Unresolved | None:
        return self._unresolved.pop(0) if self._unresolved else None

    @property
    def has_unresolved(self) -> bool:
        return bool(self._unresolved)

    # -- attempts --------------------------------------------------------------------------
    def add(self, attempt: Attempt) -> bool:
        """Count a new attempt; an older attempt of the same job running here is superseded
        (it lost its lease). Returns True when one was."""
        job = (attempt.queue, attempt.job_id)
        key = self.attempt_key(attempt.queue, attempt.job_id, attempt.token)
        older = self._newest.get(job)  # None but after a freeze: the hot path
        superseded = (older is not None and self.attempt_key(older.queue, older.job_id, older.token)
                      != key and older.supersede())
        self._running[key] = attempt
        self._newest[job] = attempt
        return superseded

    def get(self, queue: str, job_id: str, token: int) -> Attempt | None:
        """The attempt of this job holding ``token``, if it runs here."""
        attempt = self._running.get(self.attempt_key(queue, job_id, token))
        return attempt if attempt is not None and attempt.token == token else None

    def remove(self, attempt: Attempt) -> None:
        """The attempt ended: remove its entries only (a newer attempt may be running)."""
        self._running.pop(self.attempt_key(attempt.queue, attempt.job_id, attempt.token), None)
        job = (attempt.queue, attempt.job_id)
        if self._newest.get(job) is attempt:
            del self._newest[job]
        self._freed.set()

    async def wait_freed(self) -> None:
        """Wait until an attempt ends (or :meth:`wake` is called)."""
        self._freed.clear()
        await self._freed.wait()

    def wake(self) -> None:
        """Release every waiter (the worker is stopping)."""
        self._freed.set()
        self.nudge.set()
