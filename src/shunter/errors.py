"""Exceptions raised by shunter and the error codes its Lua scripts return.

Errors whose constructor takes other arguments than the message define ``__reduce__``:
they cross process boundaries (a handler in the worker's process pool raises
:class:`RetryAfter`, or gets :class:`LeaseLost` back from a progress write), and an
exception unpickles by calling its class with ``args``, which holds only the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import JobSnapshot

__all__ = [
    "BulkAddError",
    "DecodeError",
    "ErrorCode",
    "InvalidInput",
    "JobNotFound",
    "JobNotInState",
    "LeaseLost",
    "PayloadTooLarge",
    "ProcessCrashed",
    "RateLimited",
    "RetryAfter",
    "ShunterError",
    "UnpicklableError",
    "UnrecoverableError",
    "UnregisteredTask",
    "UnsupportedServer",
    "WorkerStartupError",
    "WrongKeyType",
]


class ErrorCode(IntEnum):
    """Codes returned by the Lua scripts (as negative integers) when a transition is refused."""

    #: The job hash does not exist.
    JOB_NOT_FOUND = -1
    #: The job is not in a state this transition may start from.
    NOT_IN_STATE = -2
    #: The fencing token does not match: another attempt owns the job now.
    TOKEN_MISMATCH = -3
    #: The queue has active jobs and the operation needs it idle.
    QUEUE_BUSY = -4
    #: A key shunter writes holds another Redis type (foreign data, e.g. a ``SET`` on a
    #: job key); nothing was written to it.
    WRONG_TYPE = -5
    #: A job's data is over the queue's stored ``max_payload_bytes`` (``Queue.configure``).
    PAYLOAD_TOO_LARGE = -6


class ShunterError(Exception):
    """Base class of every error shunter raises."""


class InvalidInput(ShunterError, ValueError):
    """An argument was rejected before anything was written (bad id, name, option, payload)."""


class PayloadTooLarge(InvalidInput):
    """The encoded payload, result or progress is larger than the configured cap."""


class DecodeError(ShunterError):
    """A job stored in Redis could not be decoded (corrupted, pickled, or foreign data)."""


class UnsupportedServer(ShunterError):
    """The Redis/Valkey server is too old or misconfigured for shunter."""


class JobNotFound(ShunterError, KeyError):
    """No job with this id exists in the queue (never added, or removed by retention)."""

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found in queue {queue!r}")
        self.queue = queue
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[JobNotFound], tuple[str, str]]:
        return type(self), (self.queue, self.job_id)


class JobNotInState(ShunterError):
    """The job is not in a state the requested transition may start from."""

    def __init__(self, job_id: str, transition: str, state: str | None = None) -> None:
        where = f" (it is {state})" if state else ""
        super().__init__(f"cannot {transition} job {job_id!r}{where}")
        self.job_id = job_id
        self.transition = transition
        self.state = state

    def __reduce__(self) -> tuple[type[JobNotInState], tuple[str, str, str | None]]:
        return type(self), (self.job_id, self.transition, self.state)


class LeaseLost(ShunterError):
    """This attempt no longer holds the job: the fencing token it presented is not the
    job's current one (its lease expired, the job was rescued and claimed again).

    The write was rejected; nothing was changed. (A write after a rescue that has not yet
    been claimed again is refused with :class:`JobNotInState`; the worker treats both as
    a lost lease.)
    """

    def __init__(self, job_id: str, transition: str) -> None:
        super().__init__(f"lease lost: {transition} of job {job_id!r} rejected by its fencing token")
        self.job_id = job_id
        self.transition = transition

    def __reduce__(self) -> tuple[type[LeaseLost], tuple[str, str]]:
        return type(self), (self.job_id, self.transition)


class WrongKeyType(ShunterError):
    """A key shunter needs holds another Redis type: foreign data written there by hand or
    by another program (e.g. ``SET shunter:{q}:job:<id> x``). Nothing was written to it.

    From ``add``, ``job_id`` names the job that was not added; ``key`` is the key at
    fault, ``found`` the type it holds and ``expected`` the type shunter needs.
    """

    def __init__(self, queue: str, key: str, found: str, expected: str,
                 job_id: str | None = None) -> None:
        what = f"job {job_id!r} was not added to" if job_id is not None else "nothing was written to"
        super().__init__(f"{what} queue {queue!r}: key {key} holds a {found}, not a {expected} "
                         f"(foreign data; delete the key{' or use another id' if job_id else ''})")
        self.queue = queue
        self.key = key
        self.found = found
        self.expected = expected
        self.job_id = job_id

    def __reduce__(self) -> tuple[type[WrongKeyType], tuple[str, str, str, str, str | None]]:
        return type(self), (self.queue, self.key, self.found, self.expected, self.job_id)


class BulkAddError(ShunterError):
    """``add_bulk`` stored every job it could, but not all of them.

    ``jobs`` has one entry per entry given, in order: the job (created, or existing; a
    :class:`~shunter.Job`, or a ``shunter.sync.Job`` from the blocking producer) or None
    where the job was not added; ``errors`` maps each job id that was not
    added to its error (a :class:`WrongKeyType`). Calling ``add_bulk`` again with the same
    ids is safe: the stored ones come back with ``existing=True``.
    """

    def __init__(self, queue: str, jobs: Sequence[JobSnapshot | None],
                 errors: dict[str, Exception]) -> None:
        shown = "; ".join(f"{job_id!r}: {exc}" for job_id, exc in list(errors.items())[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        stored = sum(job is not None for job in jobs)
        super().__init__(f"add_bulk to queue {queue!r}: {len(jobs) - stored} of {len(jobs)} "
                         f"jobs not added, the other {stored} were stored. {shown}{more}")
        self.queue = queue
        self.jobs = jobs
        self.errors = errors


class UnregisteredTask(ShunterError):
    """A job names a task that the worker has no handler for (never imported by name)."""


class UnrecoverableError(ShunterError):
    """Raise from a handler to fail the job at once, without further attempts."""


class RetryAfter(ShunterError):
    """Raise from a handler to run the job again after ``seconds``, without using an attempt.

    Use it when the remote side asked you to come back later (HTTP 429 ``Retry-After``).
    Deferrals are counted separately from attempts and capped by the worker's
    ``max_deferrals``; past the cap a ``RetryAfter`` counts as an ordinary failed attempt,
    so a job can never defer itself forever.
    """

    def __init__(self, seconds: float, message: str = "") -> None:
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not (
            0 <= seconds <= 366 * 86400
        ):
            raise InvalidInput(f"RetryAfter seconds must be between 0 and 366 days, got {seconds!r}")
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = float(seconds)

    def __reduce__(self) -> tuple[type[RetryAfter], tuple[float, str]]:
        return type(self), (self.seconds, str(self))


class RateLimited(ShunterError):
    """Raise from a handler when the remote side is rate limiting you (HTTP 429): the job
    goes back to the head of its group's line without using an attempt (counted apart, as
    ``job.throttled``), and its group (``add(group=...)``) starts nothing for ``seconds``.
    With ``scope="queue"``, or for a job without a group, the whole queue is parked that
    long instead. Other groups keep running (unlike :class:`RetryAfter`, which reschedules
    this one job only)."""

    def __init__(self, seconds: float, message: str = "", *, scope: str = "group") -> None:
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not (
            0 < seconds <= 366 * 86400
        ):
            raise InvalidInput(f"RateLimited seconds must be in (0, 366 days], got {seconds!r}")
        if scope not in ("group", "queue"):
            raise InvalidInput(f"RateLimited scope must be 'group' or 'queue', got {scope!r}")
        super().__init__(message or f"rate limited for {seconds:g}s")
        self.seconds = float(seconds)
        self.scope = scope

    def __reduce__(self) -> tuple[Any, ...]:
        return _rate_limited, (self.seconds, str(self), self.scope)


def _rate_limited(seconds: float, message: str, scope: str) -> RateLimited:
    return RateLimited(seconds, message, scope=scope)


class ProcessCrashed(ShunterError):
    """The process running a handler (``Task(..., executor="process")``) died during the
    attempt: it exited, crashed or was killed (the kernel's OOM killer sends SIGKILL). A
    failed attempt, retried like any other; the pool starts a fresh process for the next
    job."""


class UnpicklableError(ShunterError):
    """A handler in a process raised an exception that could not be sent back to the
    worker (it does not pickle or unpickle); this error stands in for it, with the original
    type and message in its own message and the child's traceback."""

class WorkerStartupError(ShunterError):
    """A worker's ``lifespan`` failed to start: the worker claimed nothing and stopped.
    The lifespan's own exception is the ``__cause__``."""
