"""The storage layer: the only module that talks to Redis about queue state.

One method per Lua script, with the script's name, typed arguments and typed results;
a negative reply is turned into the matching exception of :mod:`shunter.errors`. The
argument lists of the scripts that blocking code also runs are built by the ``*_call``
helpers, so :mod:`shunter.sync` and the lease keeper thread send exactly the same commands.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import (
    ErrorCode,
    InvalidInput,
    JobNotFound,
    JobNotInState,
    LeaseLost,
    ShunterError,
    WrongKeyType,
)
from .keys import QueueKeys
from .scripts import CLAIM_FIELDS, SCRIPTS, Arg
from .states import State

__all__ = ["UNAVAILABLE", "ClaimResult", "Counts", "Enqueued", "JobSpec", "Storage",
           "validate_limits"]

#: Default cap of each queue's event stream (approximate, MAXLEN ~).
DEFAULT_MAX_EVENTS = 10_000
#: Default cap of an encoded payload, result or progress value (bytes).
DEFAULT_MAX_PAYLOAD = 512 * 1024
#: Allowed ``max_events`` (the range Worker has always enforced): a stream of a few dozen
#: entries is trimmed before event followers can read it; the top bounds its memory.
MAX_EVENTS_RANGE = (100, 10_000_000)
#: Allowed ``max_payload_bytes``: 1 KiB (room for a small result or an error) to 64 MiB (a
#: job hash well under Redis's 512 MB bulk limit with data, result and progress together).
MAX_PAYLOAD_RANGE = (1024, 64 * 1024 * 1024)


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

Call = tuple[list[str], list[Arg]]

#: Errors that mean "the server is unreachable right now" (restart, failover, network):
#: callers wait and try again instead of giving up.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(slots=True)
class JobSpec:
    """A validated, encoded request to create one job (built by :mod:`shunter.producer`)."""

    job_id: str
    delay_ms: int
    run_at_ms: int | None
    priority: int
    fields: list[Arg]  #: field/value pairs of the job hash


@dataclass(slots=True)
class ClaimResult:
    jobs: list[dict[bytes, bytes]]  #: CLAIM_FIELDS of each claimed job (state active, new token)
    next_due_ms: int  #: ms until the earliest scheduled job, -1 if none
    pending: int  #: waiting + scheduled after the claim
    paused: bool


Counts = dict[str, int]


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


def pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def claimed(values: Sequence[bytes | None]) -> dict[bytes, bytes]:
    """One claimed job from its CLAIM_FIELDS values (absent fields left out)."""
    return {name: value for name, value in zip(CLAIM_FIELDS, values, strict=True) if value is not None}


#: Jobs per enqueue script call: bounds how long one call holds the server (~2 ms).
ENQUEUE_CHUNK = 200


def enqueue_call(k: QueueKeys, specs: Sequence[JobSpec], maxev: int) -> Call:
    args: list[Arg] = [k.prefix, maxev]
    for spec in specs:
        run_at = "" if spec.run_at_ms is None else spec.run_at_ms
        args += (spec.job_id, spec.delay_ms, run_at, spec.priority, len(spec.fields), *spec.fields)
    return [k.waiting, k.scheduled, k.meta, k.events, k.marker], args


@dataclass(slots=True)
class Enqueued:
    """What ``enqueue`` did with one job."""

    created: bool  #: False: the id existed, and ``fields`` holds that job's hash
    state: State | None  #: its state (None only for an existing hash with a foreign state)
    now_ms: int  #: server time of the call, unix ms: the ``created_at`` of a job it created
    due_ms: int | None = None  #: when a created ``scheduled`` job is due (unix ms)
    fields: dict[bytes, bytes] | None = None  #: the existing job's whole hash, as stored


_CREATED = {b"waiting": State.WAITING, b"scheduled": State.SCHEDULED}


def _state_of(fields: dict[bytes, bytes]) -> State | None:
    try:
        return State(fields[b"state"].decode())
    except (KeyError, ValueError):
        return None


def enqueue_result(k: QueueKeys, specs: Sequence[JobSpec],
                   reply: list[Any]) -> list[Enqueued | WrongKeyType]:
    """Decode one enqueue reply (see ``lua/enqueue.lua``): one result per spec, or the
    :class:`WrongKeyType` of a job whose key holds foreign data (that job was not added).
    Raises :class:`WrongKeyType` when a queue key does (then nothing was written)."""
    if reply[0] == ErrorCode.WRONG_TYPE:
        _code, key, found, expected = reply
        raise WrongKeyType(k.name, key.decode(), found.decode(), expected.decode())
    now = int(reply[0])
    out: list[Enqueued | WrongKeyType] = []
    for spec, entry in zip(specs, reply[1:], strict=True):
        code = entry[0]
        if code == 1:
            out.append(Enqueued(True, _CREATED[entry[1]], now, entry[2] if len(entry) > 2 else None))
        elif code == 0:
            fields = pairs(entry[1])
            out.append(Enqueued(False, _state_of(fields), now, None, fields))
        else:  # ErrorCode.WRONG_TYPE: only this job was refused
            out.append(WrongKeyType(k.name, k.job(spec.job_id), entry[1].decode(), "hash",
                                    spec.job_id))
    return out


def enqueue_replies(k: QueueKeys, specs: Sequence[JobSpec],
                    replies: Sequence[Any]) -> list[Enqueued | Exception]:
    """Decode the pipelined replies of :func:`chunks`: one result or error per spec.

    A chunk refused as a whole (a queue key holding foreign data, out of memory) gives its
    error to each of its jobs, since the other chunks were stored; when every chunk was
    refused nothing was written, and the first error is raised as it is."""
    results: list[Enqueued | Exception] = []
    refused: list[Exception] = []
    for chunk, reply in zip(chunks(specs), replies, strict=True):
        if not isinstance(reply, Exception):
            try:
                results += enqueue_result(k, chunk, reply)
                continue
            except WrongKeyType as exc:
                reply = exc
        refused.append(reply)
        results += [reply] * len(chunk)
    if len(refused) == len(replies):
        raise refused[0]
    return results


def chunks(specs: Sequence[JobSpec]) -> list[Sequence[JobSpec]]:
    return [specs[i:i + ENQUEUE_CHUNK] for i in range(0, len(specs), ENQUEUE_CHUNK)]


def renew_call(k: QueueKeys, lease_ms: int, held: Sequence[tuple[str, int]]) -> Call:
    args: list[Arg] = [k.prefix, lease_ms]
    for job_id, token in held:
        args += (job_id, token)
    return [k.active], args


def cancel_call(k: QueueKeys, job_id: str, by: str, reason: str, maxev: int) -> Call:
    return [k.waiting, k.scheduled, k.cancelled, k.events], [k.prefix, job_id, by, reason, maxev]


COUNTED = (State.WAITING, State.SCHEDULED, State.ACTIVE, State.COMPLETED, State.FAILED,
           State.CANCELLED)


def index_key(k: QueueKeys, state: State) -> str:
    return str(getattr(k, state.value))


class Storage:
    """Typed access to one queue's keys over an asyncio client."""

    __slots__ = ("_raw", "client", "keys", "max_block", "max_events", "max_payload_bytes")

    def __init__(self, client: redis.asyncio.Redis, queue: str, *,
                 max_events: int = DEFAULT_MAX_EVENTS,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.client = client
        # redis-py's stubs type replies as str | bytes; with decode_responses=False they
        # are always bytes, so plain reads go through an untyped handle.
        self._raw: Any = client
        self.keys = QueueKeys(queue)
        self.max_events = max_events
        self.max_payload_bytes = max_payload_bytes
        #: Longest a blocking command may wait (seconds): under the client's socket
        #: timeout, which redis-py 8 sets to 5 s by default and which would otherwise turn
        #: an idle BZPOPMIN / XREAD BLOCK into a TimeoutError. Callers loop anyway.
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout", 5.0)
        self.max_block = 60.0 if timeout is None else max(float(timeout) * 0.8, 0.01)

    async def _run(self, name: str, keys: list[str], args: list[Arg]) -> Any:
        return await SCRIPTS[name].run(self.client, keys, args)

    async def _fenced(self, name: str, job_id: str, keys: list[str], args: list[Arg]) -> int:
        reply = int(await self._run(name, keys, args))
        if reply < 0:
            raise_for(reply, self.keys, job_id, name)
        return reply

    # -- producer ------------------------------------------------------------------------
    async def enqueue(self, spec: JobSpec) -> Enqueued:
        """Create a job, or find the existing job with its id (``created`` False, its hash
        in ``fields``). Raises :class:`WrongKeyType` when its key holds foreign data."""
        (result,) = enqueue_result(self.keys, [spec], await self._run(
            "enqueue", *enqueue_call(self.keys, [spec], self.max_events)))
        if isinstance(result, WrongKeyType):
            raise result
        return result

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[Enqueued | Exception]:
        """Enqueue many jobs: one script call per :data:`ENQUEUE_CHUNK` jobs, all pipelined
        in one round trip. One result per spec, or the error of a job that was not added
        (see :func:`enqueue_replies`): the other jobs are stored all the same."""
        script = SCRIPTS["enqueue"]
        calls = [enqueue_call(self.keys, chunk, self.max_events) for chunk in chunks(specs)]

        async def send(batch: Sequence[Call]) -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))

        replies = await send(calls)
        # NOSCRIPT: that chunk did not run; only those are sent again, so a job stored by
        # another chunk is not reported back as existing
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.client.script_load(script.source)
            for i, reply in zip(missing, await send([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        return enqueue_replies(self.keys, specs, replies)

    # -- transitions -----------------------------------------------------------------
    async def promote(self, limit: int = 1000) -> int:
        k = self.keys
        return int(await self._run("promote", [k.scheduled, k.waiting, k.meta, k.events, k.marker],
                                   [k.prefix, limit, self.max_events]))

    async def claim(self, count: int, lease_ms: int, worker_id: str, claim_id: str = "",
                    promote_limit: int = 1000) -> ClaimResult:
        """Claim up to ``count`` waiting jobs. With a ``claim_id``, sending the same call
        again (its reply was lost) returns the same jobs instead of new ones."""
        k = self.keys
        jobs, next_due, pending, paused = await self._run(
            "claim", [k.waiting, k.scheduled, k.active, k.meta, k.events, k.marker, k.failed],
            [k.prefix, count, lease_ms, worker_id, self.max_events, promote_limit, claim_id])
        return ClaimResult([claimed(j) for j in jobs], int(next_due), int(pending), bool(paused))

    async def complete_many(self, done: Sequence[tuple[str, int, bytes]], *, claim: int = 0,
                            lease_ms: int = 0, worker_id: str = "", claim_id: str = "",
                            promote_limit: int = 1000) -> tuple[list[int], ClaimResult]:
        """Complete several jobs (``(job_id, token, result)`` each, fenced one by one) and
        claim up to ``claim`` next jobs, in one round trip. Returns one code per job (1, or
        a negative ErrorCode) and the claim (idempotent under ``claim_id``, as :meth:`claim`)."""
        k = self.keys
        args: list[Arg] = [k.prefix, self.max_events, claim, lease_ms, worker_id, promote_limit,
                           claim_id]
        for job_id, token, result in done:
            args += (job_id, token, result)
        codes, jobs, next_due, pending, paused = await self._run(
            "complete", [k.waiting, k.scheduled, k.active, k.meta, k.events, k.marker, k.failed,
                         k.completed], args)
        return ([int(c) for c in codes],
                ClaimResult([claimed(j) for j in jobs], int(next_due), int(pending), bool(paused)))

    async def renew(self, lease_ms: int, held: Sequence[tuple[str, int]]) -> list[int]:
        """Extend leases; one code per job (1 ok, 2 ok + cancel requested, < 0 lost)."""
        if not held:
            return []
        return [int(c) for c in await self._run("renew", *renew_call(self.keys, lease_ms, held))]

    async def progress(self, job_id: str, token: int, progress: bytes) -> None:
        await self._fenced("progress", job_id, [self.keys.events],
                           [self.keys.prefix, job_id, token, progress, self.max_events])

    async def log(self, job_id: str, token: int, line: str, max_lines: int) -> int:
        return await self._fenced("log", job_id, [self.keys.logs(job_id)],
                                  [self.keys.prefix, job_id, token, line, max_lines])

    async def complete(self, job_id: str, token: int, result: bytes) -> None:
        """Complete one job (see :meth:`complete_many` for the batched form)."""
        (code,), _ = await self.complete_many([(job_id, token, result)])
        if code < 0:
            raise_for(code, self.keys, job_id, "complete")

    async def retry(self, job_id: str, token: int, delay_ms: int, error: bytes,
                    count_attempt: bool = True) -> None:
        k = self.keys
        await self._fenced("retry", job_id,
                           [k.active, k.scheduled, k.waiting, k.meta, k.events, k.marker],
                           [k.prefix, job_id, token, delay_ms, error, int(count_attempt),
                            self.max_events])

    async def fail(self, job_id: str, token: int, error: bytes, count_attempt: bool = True) -> None:
        k = self.keys
        await self._fenced("fail", job_id, [k.active, k.failed, k.events],
                           [k.prefix, job_id, token, error, int(count_attempt), self.max_events])

    async def cancel(self, job_id: str, by: str, reason: str) -> bool:
        """True if cancelled now; False if the job is active and its worker was asked."""
        return await self._fenced("cancel", job_id,
                                  *cancel_call(self.keys, job_id, by, reason, self.max_events)) == 1

    async def abort(self, job_id: str, token: int) -> None:
        k = self.keys
        await self._fenced("abort", job_id, [k.active, k.cancelled, k.events],
                           [k.prefix, job_id, token, self.max_events])

    async def release(self, job_id: str, token: int) -> None:
        k = self.keys
        await self._fenced("release", job_id, [k.active, k.waiting, k.meta, k.events, k.marker],
                           [k.prefix, job_id, token, self.max_events])

    async def rescue(self, max_stalls: int, lock_ms: int = 0, limit: int = 1000) -> int:
        """Recover expired leases; returns how many were looked at (0 if another worker
        holds the rescue lock)."""
        k = self.keys
        count, _ran = await self._run(
            "rescue", [k.active, k.waiting, k.failed, k.cancelled, k.meta, k.events, k.marker,
                       k.rescue_lock], [k.prefix, max_stalls, lock_ms, limit, self.max_events])
        return int(count)

    async def replay(self, job_id: str) -> None:
        k = self.keys
        await self._fenced("replay", job_id,
                           [k.failed, k.cancelled, k.waiting, k.meta, k.events, k.marker],
                           [k.prefix, job_id, self.max_events])

    # -- queue operations ----------------------------------------------------------------
    async def pause(self) -> None:
        await self._run("pause", [self.keys.meta, self.keys.events], [self.max_events])

    async def resume(self) -> None:
        k = self.keys
        await self._run("resume", [k.meta, k.events, k.marker], [self.max_events])

    async def drain(self, limit: int = 1000) -> int:
        k = self.keys
        total = 0
        while n := int(await self._run("drain", [k.waiting, k.scheduled, k.events],
                                       [k.prefix, limit, self.max_events])):
            total += n
        return total

    async def clean(self, state: State, age_ms: int, limit: int = 1000,
                    max_total: int | None = None) -> int:
        """Delete jobs of a finished ``state`` that finished at least ``age_ms`` ago, oldest
        first, up to ``max_total`` (None: all of them); returns how many."""
        if state not in (State.COMPLETED, State.FAILED, State.CANCELLED):
            raise InvalidInput(f"clean removes completed, failed or cancelled jobs, not {state}")
        k = self.keys
        total = 0
        while max_total is None or total < max_total:
            batch = limit if max_total is None else min(limit, max_total - total)
            n = int(await self._run("clean", [index_key(k, state), k.events],
                                    [k.prefix, state.value, max(age_ms, 0), batch, self.max_events]))
            total += n
            if n < batch:
                break
        return total

    async def obliterate(self, force: bool = False, limit: int = 1000) -> int:
        k = self.keys
        keys = [k.active, k.waiting, k.scheduled, k.completed, k.failed, k.cancelled, k.meta,
                k.events, k.marker, k.rescue_lock]
        total = 0
        while True:
            n = int(await self._run("obliterate", keys, [k.prefix, limit, int(force)]))
            if n < 0:
                raise_for(n, k, "", "obliterate")
            if n == 0:
                return total
            total += n

    # -- reads ---------------------------------------------------------------------------
    async def job_fields(self, job_id: str) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = await self._raw.hgetall(self.keys.job(job_id))
        if not fields:
            raise JobNotFound(self.keys.name, job_id)
        return fields

    async def counts(self) -> Counts:
        async with self.client.pipeline(transaction=False) as pipe:
            for state in COUNTED:
                pipe.zcard(index_key(self.keys, state))
            pipe.hexists(self.keys.meta, "paused")
            replies = await pipe.execute()
        counts = {state.value: int(n) for state, n in zip(COUNTED, replies, strict=False)}
        counts["paused"] = int(bool(replies[-1]))
        return counts

    async def job_ids(self, state: State, start: int = 0, end: int = -1) -> list[str]:
        """Ids in one state's index (finished states newest first)."""
        key = index_key(self.keys, state)
        if state in (State.COMPLETED, State.FAILED, State.CANCELLED):
            raw = await self._raw.zrevrange(key, start, end)
        else:
            raw = await self._raw.zrange(key, start, end)
        return [r.decode() for r in raw]

    async def logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        raw = await self._raw.lrange(self.keys.logs(job_id), start, end)
        return [r.decode("utf-8", "replace") for r in raw]

    # -- worker heartbeats (not job state: plain commands, no script) ----------------------
    async def heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        """Say this worker is alive for ``ttl_ms``: a key that expires on the server (so
        liveness never depends on clocks) plus an entry in the queue's worker index."""
        now_ms = int(time.time() * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(worker_id), info, px=max(ttl_ms, 1))
            pipe.zadd(self.keys.workers, {worker_id: now_ms})
            # Workers that died never remove their entry and every start has a new id: drop
            # entries not refreshed for 100 heartbeat lifetimes, so the index stays bounded.
            # (Client clocks only decide when a long-dead id is forgotten, never liveness.)
            pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms - 100 * max(ttl_ms, 1))
            await pipe.execute()

    async def forget_worker(self, worker_id: str) -> None:
        """Remove the heartbeat of a worker that stopped cleanly."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

    async def workers(self) -> list[bytes]:
        """Heartbeats of the workers alive now; index entries whose key expired (a worker
        that died) are pruned on the way."""
        ids = [i.decode() for i in await self._raw.zrange(self.keys.workers, 0, -1)]
        if not ids:
            return []
        beats = await self._raw.mget([self.keys.worker(i) for i in ids])
        gone = [i for i, beat in zip(ids, beats, strict=True) if beat is None]
        if gone:
            await self._raw.zrem(self.keys.workers, *gone)
        return [beat for beat in beats if beat is not None]

    # -- waiting for work and events -----------------------------------------------------
    async def wait_for_work(self, timeout: float) -> bool:
        """Block until a producer (or a retry, resume, rescue) signals work, or ``timeout``
        seconds pass. Uses BZPOPMIN on a one-member marker set: the signal persists, so a
        wake-up that arrives between a claim and this call is never missed."""
        wait = min(max(timeout, 0.001), self.max_block)
        reply = await self._raw.bzpopmin(self.keys.marker, timeout=wait)
        return reply is not None

    async def last_event_id(self) -> str:
        newest = await self._raw.xrevrange(self.keys.events, count=1)
        return newest[0][0].decode() if newest else "0-0"

    async def read_events(self, cursor: str, block_ms: int | None,
                          count: int = 100) -> list[tuple[str, dict[bytes, bytes]]]:
        """Events after ``cursor``; ``block_ms`` None returns at once, 0 waits as long as a
        blocking command may (:attr:`max_block`), and an empty list means none came."""
        if block_ms is not None:
            longest = int(self.max_block * 1000)
            block_ms = longest if block_ms <= 0 else min(block_ms, longest)
        reply = await self._raw.xread({self.keys.events: cursor}, count=count, block=block_ms)
        if not reply:
            return []
        return [(eid.decode(), fields) for eid, fields in reply[0][1]]

    async def wait_for_event(self, job_id: str, cursor: str, timeout: float | None) -> str:
        """Read events after ``cursor`` until one concerns ``job_id`` or time runs out
        (at most 5 s per call, so callers re-check state); returns the new cursor."""
        deadline = time.monotonic() + (5.0 if timeout is None else min(timeout, 5.0))
        wanted = job_id.encode()
        while (left := deadline - time.monotonic()) > 0:
            entries = await self.read_events(cursor, max(int(left * 1000), 1))
            for eid, fields in entries:
                cursor = eid
                if fields.get(b"job") == wanted:
                    return cursor
        return cursor

    async def server_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = await self.client.info()
        except ResponseError:  # INFO disabled by a managed provider
            return {}
        return info
