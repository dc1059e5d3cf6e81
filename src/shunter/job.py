"""The Job: a snapshot of one job's hash, plus, inside a handler, the fenced writes of the
attempt that holds it (progress, log) and the ``cancelled`` flag for sync handlers.

The fields and their decoding live in :class:`JobSnapshot`, shared with the blocking
``shunter.sync.Job``; the subclasses add the methods that talk to the server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from . import codec
from .errors import DecodeError, InvalidInput, ShunterError
from .options import Backoff
from .states import TERMINAL_STATES, State

if TYPE_CHECKING:
    from .storage import Storage

__all__ = ["Job", "JobError", "JobFailed", "JobSnapshot"]

#: Cap on one log line (bytes of UTF-8); longer lines are cut with a marker.
MAX_LOG_LINE = 8192
#: Lines kept per job; older lines are dropped.
MAX_LOG_LINES = 1000


@dataclass(frozen=True, slots=True)
class JobError:
    """The error of the last failed attempt: exception type, message and capped traceback."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_json(cls, raw: bytes | None) -> JobError | None:
        if not raw:
            return None
        try:
            value = codec.loads(raw, "error")
            return cls(str(value.get("type", "")), str(value.get("message", "")),
                       str(value.get("traceback", "")))
        except (DecodeError, AttributeError):
            return cls("DecodeError", "stored error is not valid JSON")


def _text(fields: dict[bytes, bytes], name: bytes) -> str | None:
    raw = fields.get(name)
    return None if raw is None else raw.decode("utf-8", "replace")


def _int(fields: dict[bytes, bytes], name: bytes, default: int = 0) -> int:
    raw = fields.get(name)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _time(fields: dict[bytes, bytes], name: bytes) -> datetime | None:
    raw = fields.get(name)
    try:
        return None if raw is None else datetime.fromtimestamp(int(raw) / 1000, UTC)
    except ValueError:
        return None


class JobSnapshot:
    """The fields of one job's hash, decoded: what :class:`Job` (asyncio) and
    ``shunter.sync.Job`` (blocking) have in common. It reads nothing by itself."""

    __slots__ = (
        "_token", "attempts_made", "backoff", "cancel_reason", "cancel_requested", "cancelled_at",
        "cancelled_by", "created_at", "data", "debounced", "decode_error", "deduplicated",
        "deferrals", "error", "existing", "finished_at", "group", "id", "max_attempts", "priority",
        "progress", "queue", "result", "scheduled_for", "stalls", "started_at", "state", "task",
        "throttled", "timeout", "worker",
    )

    def __init__(self, queue: str, job_id: str) -> None:
        self._token: int | None = None
        self.id = job_id
        self.queue = queue
        #: True when ``add`` found this id already present and returned that job instead.
        self.existing = False
        #: True when ``add`` found its dedup key held (:class:`~shunter.Dedup`) and returned
        #: the holder instead (``existing`` is True as well).
        self.deduplicated = False
        #: True when that hit was a ``Dedup.debounce`` that replaced the holder's data and
        #: run time: the returned job is the holder as updated.
        self.debounced = False
        self.decode_error: str | None = None
        self._clear()

    def _clear(self) -> None:
        self.task = ""
        self.data: Any = None
        self.state: State | None = None
        self.priority = 0
        self.attempts_made = 0
        self.max_attempts = 1
        self.stalls = 0
        self.deferrals = 0
        #: Times a handler raised RateLimited: back in line without an attempt.
        self.throttled = 0
        self.timeout: float | None = None
        self.backoff: Backoff | None = None
        self.created_at: datetime | None = None
        self.scheduled_for: datetime | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.cancelled_at: datetime | None = None
        self.cancelled_by: str | None = None
        self.cancel_reason: str | None = None
        self.cancel_requested = False
        self.result: Any = None
        self.error: JobError | None = None
        self.progress: Any = None
        self.worker: str | None = None
        #: The job's group (``add(group=...)``), None for none.
        self.group: str | None = None

    def _load(self, fields: dict[bytes, bytes]) -> Self:
        """Fill from an HGETALL reply. Undecodable fields leave ``decode_error`` set (the
        worker fails such a job without running it) instead of raising here."""
        self._clear()
        self.decode_error = None
        state = _text(fields, b"state")
        try:
            self.state = State(state) if state else None
        except ValueError:
            self.decode_error = f"unknown state {state!r}"
        self.task = _text(fields, b"task") or ""
        self.group = _text(fields, b"group")
        self.priority = _int(fields, b"priority")
        self.attempts_made = _int(fields, b"attempts_made")
        self.max_attempts = _int(fields, b"max_attempts", 1)
        self.stalls = _int(fields, b"stalls")
        self.deferrals = _int(fields, b"deferrals")
        self.throttled = _int(fields, b"throttled")
        self._token = _int(fields, b"token") or None
        timeout_ms = _int(fields, b"timeout_ms", -1)
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.created_at = _time(fields, b"created_at")
        self.scheduled_for = _time(fields, b"scheduled_for")
        self.started_at = _time(fields, b"started_at")
        self.finished_at = _time(fields, b"finished_at")
        self.cancelled_at = _time(fields, b"cancelled_at")
        self.cancelled_by = _text(fields, b"cancelled_by")
        self.cancel_reason = _text(fields, b"cancel_reason")
        self.cancel_requested = b"cancel_requested" in fields
        self.worker = _text(fields, b"worker")
        self.error = JobError.from_json(fields.get(b"error"))
        for name, attr in ((b"data", "data"), (b"result", "result"), (b"progress", "progress")):
            raw = fields.get(name)
            if raw is not None:
                try:
                    setattr(self, attr, codec.loads(raw, name.decode()))
                except DecodeError as exc:
                    self.decode_error = self.decode_error or str(exc)
        raw_backoff = fields.get(b"backoff")
        if raw_backoff:
            try:
                self.backoff = Backoff.from_json(codec.loads(raw_backoff, "backoff"))
            except (DecodeError, InvalidInput, KeyError, TypeError, ValueError):
                self.decode_error = self.decode_error or "backoff is not valid"
        if not self.task and self.decode_error is None:
            self.decode_error = "job hash has no task name"
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.queue}/{self.id} {self.task} {self.state}>"

    @property
    def attempt(self) -> int:
        """While the job runs: the number of the running attempt (1-based). Before a run,
        the number of the next one."""
        return self.attempts_made + 1

    @property
    def finished(self) -> bool:
        """True when the job is in a terminal state."""
        return self.state in TERMINAL_STATES

    def _outcome(self) -> Any:
        """The end of a ``wait`` on a finished job: its result, or :class:`JobFailed`."""
        if self.state is State.COMPLETED:
            return self.result
        raise JobFailed(self)


class Job(JobSnapshot):
    """One job. Read its fields; call :meth:`refresh` to re-read them, :meth:`wait` to wait
    for a terminal state. Inside a handler, report with :meth:`update_progress` and
    :meth:`log` (async) or their ``_sync`` twins (sync handlers, in worker threads)."""

    __slots__ = ("_in_worker", "_loop", "_stop_asked", "_stop_seen", "_storage", "context")

    def __init__(self, storage: Storage, job_id: str) -> None:
        super().__init__(storage.keys.name, job_id)
        self._storage = storage
        #: In a handler: what the worker's ``lifespan`` yielded (None without one).
        self.context: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set when a worker runs this job (progress/log allowed); _stop_asked is set on the
        #: loop and read from handler threads: a plain bool is enough under the GIL.
        self._in_worker = False
        self._stop_asked = False
        #: The handler read ``cancelled`` as True: whatever it returns next is unfinished work.
        self._stop_seen = False

    @property
    def token(self) -> int | None:
        """The fencing token of the attempt that claimed this job (None outside a worker)."""
        return self._token

    @property
    def cancelled(self) -> bool:
        """True once the worker asked this attempt to stop (user cancel, timeout, lost
        lease or shutdown). Sync handlers should poll it in long loops and return."""
        if not self._stop_asked:
            return False
        self._stop_seen = True
        return True

    async def refresh(self) -> Job:
        """Re-read the job from Redis; raises :class:`~shunter.errors.JobNotFound` if it is gone."""
        fields = await self._storage.job_fields(self.id)
        token = self._token
        self._load(fields)
        if self._in_worker:  # keep the token of the attempt this handler runs
            self._token = token
        return self

    async def wait(self, timeout: float | None = None) -> Any:
        """Wait until the job is completed, failed or cancelled; return the result.

        Raises :class:`JobFailed` if the job failed or was cancelled, and
        :class:`TimeoutError` if ``timeout`` seconds pass first. It follows the queue's
        event stream, so it wakes as soon as the job finishes, without polling.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = await self._storage.events.last_id()
        while True:
            await self.refresh()
            if self.finished:
                return self._outcome()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {self.id!r} still {self.state} after {timeout}s")
            cursor = await self._storage.events.wait_for_job(self.id, cursor, remaining)

    async def logs(self, start: int = 0, end: int = -1) -> list[str]:
        """The job's log lines (oldest first)."""
        return await self._storage.logs(self.id, start, end)

    def _fence(self) -> int:
        if self._token is None or not self._in_worker:
            raise ShunterError("progress and log can only be written by the worker running the job")
        return self._token

    async def update_progress(self, progress: Any) -> None:
        """Store ``progress`` (any JSON, e.g. ``{"stage": 2, "percent": 40}``) as
        ``job.progress`` and publish a ``progress`` event. Fenced: raises
        :class:`~shunter.errors.LeaseLost` if this attempt no longer owns the job."""
        token = self._fence()
        encoded = codec.dumps(progress, "progress", self._storage.max_payload_bytes)
        await self._storage.progress(self.id, token, encoded)
        self.progress = progress

    async def log(self, line: str) -> None:
        """Append one line to the job's log (capped at 1,000 lines of 8 KiB). Fenced."""
        token = self._fence()
        text = str(line)
        if len(text) > MAX_LOG_LINE:
            text = text[: MAX_LOG_LINE - 14] + " …[truncated]"
        await self._storage.log(self.id, token, text, MAX_LOG_LINES)

    def _run_sync(self, coro: Any) -> None:
        loop = self._loop
        if loop is None:
            coro.close()
            raise ShunterError("the _sync methods are for sync handlers running in a worker")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise ShunterError("call the async method (await job.update_progress / job.log) "
                               "from async handlers")
        asyncio.run_coroutine_threadsafe(coro, loop).result()

    def update_progress_sync(self, progress: Any) -> None:
        """:meth:`update_progress` for sync handlers (runs on the worker's event loop)."""
        self._run_sync(self.update_progress(progress))

    def log_sync(self, line: str) -> None:
        """:meth:`log` for sync handlers."""
        self._run_sync(self.log(line))


class JobFailed(ShunterError):
    """Raised by :meth:`Job.wait` (and the blocking waits of :mod:`shunter.sync`) when the
    job ended failed or cancelled; ``job`` is its final snapshot."""

    def __init__(self, job: JobSnapshot) -> None:
        if job.state is State.CANCELLED:
            detail = f"cancelled by {job.cancelled_by or '?'}: {job.cancel_reason or ''}".rstrip(": ")
        else:
            detail = f"{job.error.type}: {job.error.message}" if job.error else "failed"
        super().__init__(f"job {job.id!r} {job.state}: {detail}")
        self.job = job
