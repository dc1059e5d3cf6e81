"""What the storage layer takes and gives: job specs, claim and enqueue results, counts,
the queue-wide caps and their rule, and the errors that mean "Redis is unreachable"."""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import InvalidInput
from ..states import State
from .scripts import Arg

__all__ = [
    "COUNTED", "DEFAULT_MAX_EVENTS", "DEFAULT_MAX_PAYLOAD", "FINISHED", "MAX_EVENTS_RANGE",
    "MAX_PAYLOAD_RANGE", "UNAVAILABLE", "ClaimResult", "Counts", "Enqueued", "JobSpec",
    "validate_limits",
]

#: Default cap of each queue's event stream (approximate, MAXLEN ~).
DEFAULT_MAX_EVENTS = 10_000
#: Default cap of an encoded payload, result or progress value (bytes).
DEFAULT_MAX_PAYLOAD = 512 * 1024
#: Allowed ``max_events``: a stream of a few dozen entries is trimmed before event
#: followers can read it; the top bounds its memory.
MAX_EVENTS_RANGE = (100, 10_000_000)
#: Allowed ``max_payload_bytes``: 1 KiB (room for a small result or an error) to 64 MiB (a
#: job hash well under Redis's 512 MB bulk limit with data, result and progress together).
MAX_PAYLOAD_RANGE = (1024, 64 * 1024 * 1024)

#: Errors that mean "the server is unreachable right now" (restart, failover, network):
#: callers wait and try again instead of giving up.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

#: The terminal states, each with its index of finished jobs.
FINISHED = (State.COMPLETED, State.FAILED, State.CANCELLED)

#: The states :func:`counts` reports, each with its index.
COUNTED = (State.WAITING, State.SCHEDULED, State.ACTIVE, State.COMPLETED, State.FAILED,
           State.CANCELLED)

Counts = dict[str, int]


def validate_limits(max_events: object, max_payload_bytes: object) -> tuple[int, int]:
    """Check the stream and payload caps that :class:`~shunter.Queue`,
    :class:`shunter.sync.Queue` and :class:`~shunter.Worker` take (one rule for all three);
    returns them, or raises :class:`~shunter.errors.InvalidInput`."""
    checked = []
    for what, value, (low, high) in (("max_events", max_events, MAX_EVENTS_RANGE),
                                     ("max_payload_bytes", max_payload_bytes, MAX_PAYLOAD_RANGE)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"{what} must be an int from {low:,} to {high:,}, got {value!r}")
        checked.append(value)
    return checked[0], checked[1]


@dataclass(slots=True)
class JobSpec:
    """A validated, encoded request to create one job (built by :mod:`shunter.producer`)."""

    job_id: str
    delay_ms: int
    run_at_ms: int | None
    priority: int
    fields: list[Arg]  #: field/value pairs of the job hash
    group: str = ""  #: its group ("" for none; in ``fields`` too)


@dataclass(slots=True)
class ClaimResult:
    jobs: list[dict[bytes, bytes]]  #: CLAIM_FIELDS of each claimed job (state active, new token)
    next_due_ms: int  #: ms until the earliest scheduled job, -1 if none
    pending: int  #: waiting + scheduled after the claim
    paused: bool


@dataclass(slots=True)
class Enqueued:
    """What ``enqueue`` did with one job."""

    created: bool  #: False: the id existed, and ``fields`` holds that job's hash
    state: State | None  #: its state (None only for an existing hash with a foreign state)
    now_ms: int  #: server time of the call, unix ms: the ``created_at`` of a job it created
    due_ms: int | None = None  #: when a created ``scheduled`` job is due (unix ms)
    fields: dict[bytes, bytes] | None = None  #: the existing job's whole hash, as stored
    #: A dedup hit: the id of the job holding the key (``fields`` is its hash, empty for a
    #: throttle key whose holder is gone); None otherwise.
    holder: str | None = None
    debounced: bool = False  #: the hit was a debounce that updated the holder
