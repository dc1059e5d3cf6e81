"""Validating and encoding ``add`` requests into :class:`~shunter.storage.JobSpec`, and
turning what the enqueue script did into the jobs ``add`` returns.

Shared by the asyncio :class:`~shunter.queue.Queue` and the blocking
:class:`shunter.sync.Queue`, so both reject the same bad input with the same errors,
before anything is written, and return the same jobs (each its own kind of job:
:class:`~shunter.Job` or ``shunter.sync.Job``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from . import codec
from .errors import BulkAddError, InvalidInput
from .flow.dedup import Dedup
from .job import JobSnapshot
from .options import DEFAULT_BACKOFF, DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED, Backoff, Retention
from .storage import DEFAULT_MAX_PAYLOAD, Enqueued, JobSpec
from .tasks import TaskDef

__all__ = ["ADD_OPTIONS", "DEFAULT_BACKOFF", "DEFAULT_MAX_ATTEMPTS", "added_job", "added_jobs",
           "build_spec", "spec_from_mapping"]

#: ``max_attempts`` when ``add`` is not told otherwise.
DEFAULT_MAX_ATTEMPTS = 3

MAX_ATTEMPTS = 1000
MAX_PRIORITY = 1000
MAX_DELAY = 366 * 86400.0
MAX_TIMEOUT = 7 * 86400.0

#: The kind of job a producer hands out: :class:`~shunter.Job` or ``shunter.sync.Job``.
J = TypeVar("J", bound=JobSnapshot)

ADD_OPTIONS = frozenset({
    "job_id", "delay", "run_at", "priority", "max_attempts", "backoff", "timeout",
    "keep_completed", "keep_failed", "group", "dedup",
})


def int_in(value: object, what: str, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} must be an int from {low} to {high}, got {value!r}")
    return value


_KEEP_COMPLETED_CODE = DEFAULT_KEEP_COMPLETED.encode()
_KEEP_FAILED_CODE = DEFAULT_KEEP_FAILED.encode()


def _keep(value: Retention | int, what: str) -> str:
    if value is DEFAULT_KEEP_COMPLETED:  # the defaults are encoded once, not per job
        return _KEEP_COMPLETED_CODE
    if value is DEFAULT_KEEP_FAILED:
        return _KEEP_FAILED_CODE
    return Retention.coerce(value, what).encode()


def _when(delay: float | None, run_at: datetime | None) -> tuple[int, int | None]:
    if delay is not None and run_at is not None:
        raise InvalidInput("give delay or run_at, not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
            raise InvalidInput(f"delay must be a number of seconds, got {delay!r}")
        if not 0 <= delay <= MAX_DELAY:
            raise InvalidInput(f"delay must be between 0 and 366 days, got {delay!r}")
        return int(delay * 1000), None
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidInput(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None:
            raise InvalidInput("run_at must be timezone-aware (e.g. datetime.now(UTC) + ...)")
        ms = int(run_at.timestamp() * 1000)
        if ms > (datetime.now(run_at.tzinfo).timestamp() + MAX_DELAY) * 1000:
            raise InvalidInput(f"run_at is more than 366 days ahead: {run_at.isoformat()}")
        return 0, ms
    return 0, None


def build_spec(task: str | TaskDef[Any], data: Any = None, *, job_id: str | None = None,
               delay: float | None = None, run_at: datetime | None = None,
               priority: int | None = None, max_attempts: int | None = None,
               backoff: Backoff | None = None, timeout: float | None = None,
               keep_completed: Retention | int = DEFAULT_KEEP_COMPLETED,
               keep_failed: Retention | int = DEFAULT_KEEP_FAILED,
               group: str | None = None, dedup: Dedup | None = None,
               max_payload_bytes: int) -> JobSpec:
    """Check every option and encode the job; raises :class:`InvalidInput` on bad input.
    ``task`` is a name or a registered :class:`~shunter.TaskDef`, whose options fill in
    those not given (None)."""
    if dedup is not None and not isinstance(dedup, Dedup):
        raise InvalidInput(f"dedup must be a shunter.Dedup (Dedup.unique(key) ...), got {dedup!r}")
    if not isinstance(task, str):
        if not isinstance(task, TaskDef):
            raise InvalidInput(f"task must be a task name or a registered task (shunter.Tasks), "
                               f"got {task!r}")
        defaults = task.job_options()
        priority = defaults.get("priority", 0) if priority is None else priority
        max_attempts = defaults.get("max_attempts") if max_attempts is None else max_attempts
        backoff = defaults.get("backoff") if backoff is None else backoff
        timeout = defaults.get("timeout") if timeout is None else timeout
        task = task.name
    codec.validate_task_name(task)
    if priority is None:
        priority = 0
    if max_attempts is None:
        max_attempts = DEFAULT_MAX_ATTEMPTS
    # 128 random bits as 32 hex digits (what uuid4().hex gives, without building a UUID)
    job_id = os.urandom(16).hex() if job_id is None else codec.validate_job_id(job_id)
    delay_ms, run_at_ms = _when(delay, run_at)
    priority = int_in(priority, "priority", -MAX_PRIORITY, MAX_PRIORITY)
    # added_job reads these six pairs by position (the hot path of add_bulk): keep them
    # first, in this order
    fields: list[Any] = [
        "task", task,
        "data", codec.dumps(data, "payload", max_payload_bytes),
        "priority", priority,
        "max_attempts", int_in(max_attempts, "max_attempts", 1, MAX_ATTEMPTS),
        "keep_completed", _keep(keep_completed, "keep_completed"),
        "keep_failed", _keep(keep_failed, "keep_failed"),
    ]
    if dedup is not None:
        # right after the fixed pairs: the enqueue script looks for them there (one
        # comparison per job, see lib/dedup_hit.lua), not by scanning every field
        fields += dedup.fields()
    if backoff is not None:
        if not isinstance(backoff, Backoff):
            raise InvalidInput(
                "backoff must be a Backoff (fixed, exponential or schedule); a callable backoff "
                "belongs to the worker's Task, since code cannot travel with the job")
        fields += ("backoff", codec.dumps(backoff.to_json()))
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT
        ):
            raise InvalidInput(f"timeout must be seconds in (0, 7 days], got {timeout!r}")
        fields += ("timeout_ms", max(int(timeout * 1000), 1))
    if group is not None:
        fields += ("group", codec.validate_group(group))
    return JobSpec(job_id, delay_ms, run_at_ms, priority, fields, group or "")


def validate_job_options(options: Mapping[str, Any]) -> None:
    """Check job options (as given to ``add``) without building a job: a task's defaults
    are checked when it is declared, not when its first job is enqueued."""
    build_spec("probe", None, max_payload_bytes=DEFAULT_MAX_PAYLOAD, **options)


def spec_from_mapping(entry: Mapping[str, Any], max_payload_bytes: int) -> JobSpec:
    """One ``add_bulk`` entry: ``{"task": ..., "data": ..., <any add() option>}``."""
    if not isinstance(entry, Mapping):
        raise InvalidInput(f"add_bulk entries must be dicts, got {type(entry).__name__}")
    unknown = set(entry) - ADD_OPTIONS - {"task", "data"}
    if unknown:
        raise InvalidInput(f"unknown add_bulk option(s): {', '.join(sorted(unknown))}")
    if "task" not in entry:
        raise InvalidInput("add_bulk entry has no 'task'")
    options = {k: v for k, v in entry.items() if k not in ("task", "data")}
    return build_spec(entry["task"], entry.get("data"), max_payload_bytes=max_payload_bytes,
                      **options)


#: Entries of JobSpec.fields every job has (six field/value pairs); optional ones follow.
_FIXED_FIELDS = 12


@functools.lru_cache(maxsize=64)
def _utc(ms: int) -> datetime:
    # every job of one script call shares the call's server time: built once per call
    return datetime.fromtimestamp(ms / 1000, UTC)


def added_job(make: Callable[[str], J], spec: JobSpec, result: Enqueued) -> J:
    """The job that ``add`` returns (``make(job_id)`` builds an empty one), with the fields
    as stored. A new job's are known here (the script returns only its server time and due
    time, so the hot path reads nothing back); an existing id's come from the hash the
    script returned."""
    if not result.created:
        job = make(result.holder or spec.job_id)
        if result.fields:  # a throttle key may outlive its holder: only the id is known
            job._load(result.fields)
        job.existing = True
        job.deduplicated = result.holder is not None
        job.debounced = result.debounced
        return job
    job = make(spec.job_id)
    fields = spec.fields  # build_spec's order: task, data, priority, max_attempts, keep_*
    job.task = str(fields[1])
    job.data = codec.loads(cast(bytes, fields[3]), "data")  # a copy, as a reader gets it
    job.state = result.state
    job.priority = spec.priority
    job.max_attempts = int(fields[7])
    if len(fields) > _FIXED_FIELDS:  # backoff and timeout, when given
        optional = dict(zip(fields[_FIXED_FIELDS::2], fields[_FIXED_FIELDS + 1::2], strict=True))
        if "timeout_ms" in optional:
            job.timeout = int(optional["timeout_ms"]) / 1000
        if "backoff" in optional:
            job.backoff = Backoff.from_json(codec.loads(cast(bytes, optional["backoff"]), "backoff"))
        if "group" in optional:
            job.group = str(optional["group"])
    job.created_at = _utc(result.now_ms)
    job.scheduled_for = None if result.due_ms is None else _utc(result.due_ms)
    return job


def added_jobs(make: Callable[[str], J], queue: str, specs: Sequence[JobSpec],
               results: Sequence[Enqueued | Exception]) -> list[J]:
    """The jobs that ``add_bulk`` returns, one per spec; raises :class:`BulkAddError`
    (which carries them) when some were not added, after the others were stored."""
    jobs: list[J | None] = []
    errors: dict[str, Exception] = {}
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, Exception):
            jobs.append(None)
            errors.setdefault(spec.job_id, result)
        else:
            jobs.append(added_job(make, spec, result))
    if errors:
        raise BulkAddError(queue, jobs, errors)
    return cast(list[J], jobs)
