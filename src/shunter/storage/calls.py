"""Sans-IO call builders: for each script, its KEYS and ARGV and how to read its reply.

Nothing here sends a command. :class:`~shunter.storage.aio.Storage` (asyncio) and
:class:`~shunter.storage.blocking.BlockingStorage` (the lease thread, the sync producer)
run the same :class:`Script` and :class:`Commands` values, so both sides send exactly the
same commands and read the replies the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import (
    ErrorCode,
    JobNotFound,
    JobNotInState,
    LeaseLost,
    PayloadTooLarge,
    ShunterError,
    WrongKeyType,
)
from ..flow.limits import GroupInfo, Rate
from ..states import State
from .keys import QueueKeys
from .model import COUNTED, FINISHED, ClaimResult, Counts, Enqueued, JobSpec
from .scripts import CLAIM_FIELDS, Arg

__all__ = [
    "ENQUEUE_CHUNK", "Commands", "Script", "cancel", "chunks", "claim", "complete", "counts",
    "enqueue", "enqueue_many", "enqueue_replies", "fenced", "job_fields", "job_ids", "logs",
    "pause", "raise_for", "renew", "replay", "resume",
]

T = TypeVar("T")


def _identity(reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class Script(Generic[T]):
    """One script call: which script, its KEYS and ARGV, and the reader of its reply."""

    name: str
    keys: list[str]
    args: list[Arg]
    parse: Callable[[Any], T] = _identity


@dataclass(frozen=True, slots=True)
class Commands(Generic[T]):
    """Plain commands sent together in one pipeline, and the reader of their replies."""

    commands: list[tuple[Arg, ...]]
    parse: Callable[[list[Any]], T]


def raise_for(code: int, keys: QueueKeys, job_id: str, transition: str) -> None:
    """Turn a negative script reply into the matching exception."""
    if code == ErrorCode.JOB_NOT_FOUND:
        raise JobNotFound(keys.name, job_id)
    if code == ErrorCode.NOT_IN_STATE:
        raise JobNotInState(job_id, transition)
    if code == ErrorCode.TOKEN_MISMATCH:
        raise LeaseLost(job_id, transition)
    if code == ErrorCode.QUEUE_BUSY:
        raise ShunterError(f"queue {keys.name!r} has active jobs; pass force=True to {transition} anyway")
    raise ShunterError(f"{transition} of {job_id!r} failed with code {code}")


def fenced(name: str, k: QueueKeys, job_id: str, keys: list[str], args: list[Arg]) -> Script[int]:
    """A script that answers one code: negative codes raise (see :func:`raise_for`)."""

    def parse(reply: Any) -> int:
        code = int(reply)
        if code < 0:
            raise_for(code, k, job_id, name)
        return code

    return Script(name, keys, args, parse)


def pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


# -- enqueue ---------------------------------------------------------------------------------

#: Jobs per enqueue script call: bounds how long one call holds the server (~2 ms).
ENQUEUE_CHUNK = 200

_CREATED = {b"waiting": State.WAITING, b"scheduled": State.SCHEDULED}


def _state_of(fields: dict[bytes, bytes]) -> State | None:
    try:
        return State(fields[b"state"].decode())
    except (KeyError, ValueError):
        return None


def chunks(specs: Sequence[JobSpec]) -> list[Sequence[JobSpec]]:
    return [specs[i:i + ENQUEUE_CHUNK] for i in range(0, len(specs), ENQUEUE_CHUNK)]


def enqueue(k: QueueKeys, specs: Sequence[JobSpec], maxev: int) -> Script[list[Enqueued | Exception]]:
    """Create up to :data:`ENQUEUE_CHUNK` jobs: one result per spec, or the error of a job
    that was not added: :class:`WrongKeyType` (its key holds foreign data) or
    :class:`PayloadTooLarge` (over the queue's stored cap).
    The reader raises :class:`WrongKeyType` when a queue key does (nothing was written)."""
    args: list[Arg] = [k.prefix, maxev]
    for spec in specs:
        run_at = "" if spec.run_at_ms is None else spec.run_at_ms
        args += (spec.job_id, spec.delay_ms, run_at, spec.priority, spec.group, len(spec.fields),
                 *spec.fields)

    def parse(reply: list[Any]) -> list[Enqueued | Exception]:
        if reply[0] == ErrorCode.WRONG_TYPE:
            _code, key, found, expected = reply
            raise WrongKeyType(k.name, key.decode(), found.decode(), expected.decode())
        now = int(reply[0])
        out: list[Enqueued | Exception] = []
        for spec, entry in zip(specs, reply[1:], strict=True):
            code = entry[0]
            if code == 1:
                out.append(Enqueued(True, _CREATED[entry[1]], now, entry[2] if len(entry) > 2 else None))
            elif code == 0:
                fields = pairs(entry[1])
                out.append(Enqueued(False, _state_of(fields), now, None, fields))
            elif code == 2:  # its dedup key is held (lua/lib/dedup_hit.lua)
                fields = pairs(entry[3])
                out.append(Enqueued(False, _state_of(fields), now, None, fields,
                                    entry[1].decode(), entry[2] == b"debounce"))
            elif code == ErrorCode.PAYLOAD_TOO_LARGE:  # over the queue's stored cap
                out.append(PayloadTooLarge(
                    f"job {spec.job_id!r}: payload is {int(entry[1]):,} bytes of JSON, over queue "
                    f"{k.name!r}'s max_payload_bytes of {int(entry[2]):,} (Queue.configure)"))
            else:  # ErrorCode.WRONG_TYPE: only this job was refused
                out.append(WrongKeyType(k.name, k.job(spec.job_id), entry[1].decode(), "hash",
                                        spec.job_id))
        return out

    return Script("enqueue", [k.waiting, k.scheduled, k.meta, k.events, k.marker], args, parse)


def enqueue_many(k: QueueKeys, specs: Sequence[JobSpec],
                 maxev: int) -> list[tuple[Script[list[Enqueued | Exception]], int]]:
    """One enqueue call per :data:`ENQUEUE_CHUNK` jobs, each with its number of jobs."""
    return [(enqueue(k, chunk, maxev), len(chunk)) for chunk in chunks(specs)]


def enqueue_replies(calls: Sequence[tuple[Script[list[Enqueued | Exception]], int]],
                    replies: Sequence[Any]) -> list[Enqueued | Exception]:
    """Read the pipelined replies of :func:`enqueue_many`: one result or error per job.

    A chunk refused as a whole (a queue key holding foreign data, out of memory) gives its
    error to each of its jobs, since the other chunks were stored; when every chunk was
    refused nothing was written, and the first error is raised as it is."""
    results: list[Enqueued | Exception] = []
    refused: list[Exception] = []
    for (call, size), reply in zip(calls, replies, strict=True):
        if not isinstance(reply, Exception):
            try:
                results += call.parse(reply)
                continue
            except WrongKeyType as exc:
                reply = exc
        refused.append(reply)
        results += [reply] * size
    if len(refused) == len(replies):
        raise refused[0]
    return results


# -- the worker's calls ----------------------------------------------------------------------

def claimed(values: Sequence[bytes | None]) -> dict[bytes, bytes]:
    """One claimed job from its CLAIM_FIELDS values (absent fields left out)."""
    return {name: value for name, value in zip(CLAIM_FIELDS, values, strict=True) if value is not None}


def _claim_result(jobs: list[Any], next_due: Any, pending: Any, paused: Any) -> ClaimResult:
    return ClaimResult([claimed(j) for j in jobs], int(next_due), int(pending), bool(paused))


def claim(k: QueueKeys, count: int, lease_ms: int, worker_id: str, maxev: int,
          promote_limit: int, claim_id: str) -> Script[ClaimResult]:
    return Script("claim", [k.waiting, k.scheduled, k.active, k.meta, k.events, k.marker, k.failed],
                  [k.prefix, count, lease_ms, worker_id, maxev, promote_limit, claim_id],
                  lambda reply: _claim_result(*reply))


def complete(k: QueueKeys, done: Sequence[tuple[str, int, bytes]], maxev: int, claim: int,
             lease_ms: int, worker_id: str, promote_limit: int,
             claim_id: str) -> Script[tuple[list[int], ClaimResult]]:
    args: list[Arg] = [k.prefix, maxev, claim, lease_ms, worker_id, promote_limit, claim_id]
    for job_id, token, result in done:
        args += (job_id, token, result)

    def parse(reply: list[Any]) -> tuple[list[int], ClaimResult]:
        codes, *rest = reply
        return [int(c) for c in codes], _claim_result(*rest)

    return Script("complete", [k.waiting, k.scheduled, k.active, k.meta, k.events, k.marker,
                               k.failed, k.completed], args, parse)


def renew(k: QueueKeys, lease_ms: int, held: Sequence[tuple[str, int]]) -> Script[list[int]]:
    """Extend leases; one code per job (1 ok, 2 ok + cancel requested, < 0 lost)."""
    args: list[Arg] = [k.prefix, lease_ms]
    for job_id, token in held:
        args += (job_id, token)
    return Script("renew", [k.active], args, lambda reply: [int(c) for c in reply])


# -- admin -------------------------------------------------------------------------------------

#: Caps on the ``by`` and ``reason`` a cancel stores (characters; longer ones are cut).
MAX_CANCELLED_BY = 200
MAX_CANCEL_REASON = 1000


def cancel(k: QueueKeys, job_id: str, by: str, reason: str, maxev: int) -> Script[bool]:
    """True if cancelled now; False if the job is active and its worker was asked."""
    call = fenced("cancel", k, job_id, [k.waiting, k.scheduled, k.cancelled, k.events],
                  [k.prefix, job_id, str(by)[:MAX_CANCELLED_BY], str(reason)[:MAX_CANCEL_REASON],
                   maxev])
    return Script(call.name, call.keys, call.args, lambda reply: call.parse(reply) == 1)


def replay(k: QueueKeys, job_id: str, maxev: int) -> Script[int]:
    """A failed or cancelled job back to waiting with fresh attempts (dead-letter replay)."""
    return fenced("replay", k, job_id, [k.failed, k.cancelled, k.waiting, k.meta, k.events, k.marker],
                  [k.prefix, job_id, maxev])


def pause(k: QueueKeys, maxev: int) -> Script[Any]:
    return Script("pause", [k.meta, k.events], [maxev])


def resume(k: QueueKeys, maxev: int) -> Script[Any]:
    return Script("resume", [k.meta, k.events, k.marker], [maxev])


def counts(k: QueueKeys) -> Commands[Counts]:
    """Jobs per state, plus ``paused`` (1 or 0)."""
    commands: list[tuple[Arg, ...]] = [("ZCARD", k.index(state)) for state in COUNTED]
    commands.append(("HMGET", k.meta, "paused", "gwaiting"))

    def parse(replies: list[Any]) -> Counts:
        out = {state.value: int(n) for state, n in zip(COUNTED, replies, strict=False)}
        paused, grouped = replies[-1]
        out["waiting"] += int(grouped or 0)  # jobs waiting in the lines of groups
        out["paused"] = int(bool(paused))
        return out

    return Commands(commands, parse)


# -- reads -------------------------------------------------------------------------------------

def job_fields(k: QueueKeys, job_id: str) -> Commands[dict[bytes, bytes]]:
    """The job's whole hash; the reader raises :class:`JobNotFound` when there is none."""

    def parse(replies: list[Any]) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = replies[0]
        if not fields:
            raise JobNotFound(k.name, job_id)
        return fields

    return Commands([("HGETALL", k.job(job_id))], parse)


def logs(k: QueueKeys, job_id: str, start: int, end: int) -> Commands[list[str]]:
    """The job's log lines, ``start`` and ``end`` inclusive as in ``LRANGE``."""
    return Commands([("LRANGE", k.logs(job_id), start, end)],
                    lambda replies: [line.decode("utf-8", "replace") for line in replies[0]])


def job_ids(k: QueueKeys, state: State, start: int, end: int) -> Commands[list[str]]:
    """Ids in one state's index: finished states newest first, the others in index order."""
    command = "ZREVRANGE" if state in FINISHED else "ZRANGE"
    return Commands([(command, k.index(state), start, end)],
                    lambda replies: [job_id.decode() for job_id in replies[0]])


# -- queue settings ----------------------------------------------------------------------------

#: The settings a queue may store in its meta hash (see ``lua/configure.lua``), in the
#: order ``configure`` answers them.
SETTINGS = ("max_events", "max_payload_bytes", "concurrency", "rate", "group_concurrency",
            "group_rate")
_RATES = ("rate", "group_rate")

Settings = dict[str, Any]


def _settings(reply: list[Any]) -> Settings:
    if reply and reply[0] == ErrorCode.NOT_IN_STATE:  # an unknown setting name: never sent
        raise ShunterError(f"the server refused setting {reply[1]!r}")
    return {name: Rate.decode(value) if name in _RATES else None if value is None else int(value)
            for name, value in zip(SETTINGS, reply, strict=True)}


def configure(k: QueueKeys, maxev: int, pairs: Sequence[Arg]) -> Script[Settings]:
    """Store queue-wide settings: ``pairs`` of setting name and value ("" removes it; see
    ``lua/configure.lua``); the reply is every setting as stored now."""
    return Script("configure", [k.meta, k.events, k.marker], [maxev, *pairs], _settings)


def settings(k: QueueKeys) -> Commands[Settings]:
    """The queue's stored settings (None where it stores none)."""
    return Commands([("HMGET", k.meta, *SETTINGS)], lambda replies: _settings(replies[0]))


# -- groups ------------------------------------------------------------------------------------

def configure_group(k: QueueKeys, maxev: int, group: str, pairs: Sequence[Arg]) -> Script[Any]:
    """Store one group's overrides or pause flag and place the group again."""
    return Script("configure_group", [k.meta, k.events, k.marker, k.active],
                  [k.prefix, maxev, group, *pairs])


#: What group_info reads of a group's hash, in order.
_GROUP_FIELDS = ("paused", "concurrency", "rate", "weight", "until", "completed", "failed",
                 "cancelled", "scheduled")


def _group(group: str, replies: Sequence[Any]) -> GroupInfo:
    """A group from its five replies (see :func:`group_infos`)."""
    (paused, conc, rate, weight, _until, completed, failed, cancelled, scheduled), defaults, \
        waiting, active, wake_at = replies
    concurrency = int(conc) if conc is not None else (
        int(defaults[0]) if defaults[0] is not None else None)
    limit = Rate.decode(rate) if rate is not None else Rate.decode(defaults[1])
    state, next_ms = "ready", None
    if int(waiting) == 0:
        state = "idle"
    elif paused:
        state = "paused"
    elif wake_at is not None:
        state, next_ms = "blocked", int(float(wake_at))
    elif concurrency and int(active) >= concurrency:
        state = "full"
    return GroupInfo(group, int(waiting), int(scheduled or 0), int(active), int(completed or 0),
                     int(failed or 0), int(cancelled or 0), bool(paused), concurrency or None,
                     limit, float(weight) if weight else 1.0, state, next_ms)


def group_infos(k: QueueKeys, groups: Sequence[str]) -> Commands[list[GroupInfo]]:
    """Groups' counts, limits and state (see :class:`~shunter.flow.limits.GroupInfo`), all
    in one pipeline: five commands per group."""
    commands: list[tuple[Arg, ...]] = []
    for group in groups:
        commands += [
            ("HMGET", k.group(group), *_GROUP_FIELDS),
            ("HMGET", k.meta, "group_concurrency", "group_rate"),
            ("ZCARD", k.group_waiting(group)),
            ("SCARD", k.group_active(group)),
            ("ZSCORE", k.group_wakes, group),
        ]
    return Commands(commands, lambda replies: [
        _group(group, replies[5 * i:5 * i + 5]) for i, group in enumerate(groups)])


def group_names(k: QueueKeys, after: str, count: int) -> Commands[list[str]]:
    """Names of the queue's groups in name order, from the first after ``after``."""
    low = "-" if after == "" else f"({after}"
    return Commands([("ZRANGEBYLEX", k.groups, low, "+", "LIMIT", 0, count)],
                    lambda replies: [name.decode() for name in replies[0]])
