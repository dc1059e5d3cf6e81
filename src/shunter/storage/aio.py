"""``Storage``: one queue's state over an asyncio client.

One method per Lua script, with the script's name, typed arguments and typed results (the
calls are built by :mod:`shunter.storage.calls`); a negative reply is turned into the
matching exception of :mod:`shunter.errors`. Plain reads of job state live here too.
The event stream and worker heartbeats have their own modules, reached as
``storage.events`` and ``storage.heartbeats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import NoScriptError

from ..errors import InvalidInput
from ..flow.limits import GroupInfo
from ..states import State
from . import calls
from .heartbeats import Heartbeats
from .keys import QueueKeys
from .model import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_PAYLOAD,
    FINISHED,
    ClaimResult,
    Counts,
    Enqueued,
    JobSpec,
)
from .scripts import SCRIPTS, Arg
from .streams import EventStream

__all__ = ["Storage"]

T = TypeVar("T")


def block_limit(client: Any) -> float:
    """Longest a blocking command may wait (seconds): under the client's socket timeout,
    which redis-py 8 sets to 5 s by default and which would otherwise turn an idle BZPOPMIN
    or XREAD BLOCK into a TimeoutError. Callers loop anyway."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout", 5.0)
    return 60.0 if timeout is None else max(float(timeout) * 0.8, 0.01)


class Storage:
    """Typed access to one queue's keys over an asyncio client."""

    __slots__ = ("_raw", "client", "events", "heartbeats", "keys", "max_block", "max_events",
                 "max_payload_bytes")

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
        self.max_block = block_limit(client)
        #: The queue's event stream (reads; scripts append to it).
        self.events = EventStream(client, self.keys, self.max_block)
        #: Worker heartbeats of this queue.
        self.heartbeats = Heartbeats(client, self.keys)

    async def run(self, call: calls.Script[T]) -> T:
        """Send one script call and read its reply."""
        return call.parse(await SCRIPTS[call.name].run(self.client, call.keys, call.args))

    async def pipeline(self, call: calls.Commands[T]) -> T:
        async with self.client.pipeline(transaction=False) as pipe:
            for command in call.commands:
                pipe.execute_command(*command)
            return call.parse(await pipe.execute())

    async def _fenced(self, name: str, job_id: str, keys: list[str], args: list[Arg]) -> int:
        return await self.run(calls.fenced(name, self.keys, job_id, keys, args))

    # -- producer ------------------------------------------------------------------------
    async def enqueue(self, spec: JobSpec) -> Enqueued:
        """Create a job, or find the existing job with its id (``created`` False, its hash
        in ``fields``). Raises :class:`WrongKeyType` when its key holds foreign data."""
        (result,) = await self.run(calls.enqueue(self.keys, [spec], self.max_events))
        if isinstance(result, Exception):
            raise result
        return result

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[Enqueued | Exception]:
        """Enqueue many jobs: one script call per :data:`~calls.ENQUEUE_CHUNK` jobs, all
        pipelined in one round trip. One result per spec, or the error of a job that was not
        added (see :func:`calls.enqueue_replies`): the other jobs are stored all the same."""
        batch = calls.enqueue_many(self.keys, specs, self.max_events)
        script = SCRIPTS["enqueue"]

        async def send(chosen: Sequence[calls.Script[Any]]) -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for call in chosen:
                    pipe.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
                return list(await pipe.execute(raise_on_error=False))

        replies = await send([call for call, _ in batch])
        # NOSCRIPT: that chunk did not run; only those are sent again, so a job stored by
        # another chunk is not reported back as existing
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.client.script_load(script.source)
            for i, reply in zip(missing, await send([batch[i][0] for i in missing]), strict=True):
                replies[i] = reply
        return calls.enqueue_replies(batch, replies)

    # -- transitions -----------------------------------------------------------------
    async def promote(self, limit: int = 1000, *, early: bool = False) -> int:
        """Move up to ``limit`` due scheduled jobs to waiting (``early``: every scheduled
        job, due or not); returns how many."""
        k = self.keys
        return int(await self.run(calls.Script(
            "promote", [k.scheduled, k.waiting, k.meta, k.events, k.marker],
            [k.prefix, limit, self.max_events, int(early)])))

    async def claim(self, count: int, lease_ms: int, worker_id: str, claim_id: str = "",
                    promote_limit: int = 1000) -> ClaimResult:
        """Claim up to ``count`` waiting jobs. With a ``claim_id``, sending the same call
        again (its reply was lost) returns the same jobs instead of new ones."""
        return await self.run(calls.claim(self.keys, count, lease_ms, worker_id, self.max_events,
                                          promote_limit, claim_id))

    async def complete_many(self, done: Sequence[tuple[str, int, bytes]], *, claim: int = 0,
                            lease_ms: int = 0, worker_id: str = "", claim_id: str = "",
                            promote_limit: int = 1000) -> tuple[list[int], ClaimResult]:
        """Complete several jobs (``(job_id, token, result)`` each, fenced one by one) and
        claim up to ``claim`` next jobs, in one round trip. Returns one code per job (1, or
        a negative ErrorCode) and the claim (idempotent under ``claim_id``, as :meth:`claim`)."""
        return await self.run(calls.complete(self.keys, done, self.max_events, claim, lease_ms,
                                             worker_id, promote_limit, claim_id))

    async def renew(self, lease_ms: int, held: Sequence[tuple[str, int]]) -> list[int]:
        """Extend leases; one code per job (1 ok, 2 ok + cancel requested, < 0 lost)."""
        if not held:
            return []
        return await self.run(calls.renew(self.keys, lease_ms, held))

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
            calls.raise_for(code, self.keys, job_id, "complete")

    async def retry(self, job_id: str, token: int, delay_ms: int, error: bytes,
                    count_attempt: bool = True) -> None:
        k = self.keys
        await self._fenced("retry", job_id,
                           [k.active, k.scheduled, k.waiting, k.meta, k.events, k.marker],
                           [k.prefix, job_id, token, delay_ms, error, int(count_attempt),
                            self.max_events])

    async def ratelimited(self, job_id: str, token: int, delay_ms: int, scope: str) -> None:
        """Back to the head of its line without an attempt; its group (``scope`` "group")
        or the queue ("queue") parked for ``delay_ms`` (the handler raised RateLimited)."""
        k = self.keys
        await self._fenced("ratelimited", job_id, [k.active, k.waiting, k.meta, k.events, k.marker],
                           [k.prefix, job_id, token, delay_ms, scope, self.max_events])

    async def fail(self, job_id: str, token: int, error: bytes, count_attempt: bool = True) -> None:
        k = self.keys
        await self._fenced("fail", job_id, [k.active, k.failed, k.events],
                           [k.prefix, job_id, token, error, int(count_attempt), self.max_events])

    async def cancel(self, job_id: str, by: str, reason: str) -> bool:
        """True if cancelled now; False if the job is active and its worker was asked."""
        return await self.run(calls.cancel(self.keys, job_id, by, reason, self.max_events))

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
        reply: list[int] = await self.run(calls.Script(
            "rescue", [k.active, k.waiting, k.failed, k.cancelled, k.meta, k.events, k.marker,
                       k.rescue_lock], [k.prefix, max_stalls, lock_ms, limit, self.max_events]))
        return int(reply[0])  # reply[1]: 0 when another worker holds the lock

    async def replay(self, job_id: str) -> None:
        await self.run(calls.replay(self.keys, job_id, self.max_events))

    # -- queue operations ----------------------------------------------------------------
    async def pause(self) -> None:
        await self.run(calls.pause(self.keys, self.max_events))

    async def resume(self) -> None:
        await self.run(calls.resume(self.keys, self.max_events))

    async def drain(self, limit: int = 1000) -> int:
        k = self.keys
        total = 0
        while n := int(await self.run(calls.Script("drain", [k.waiting, k.scheduled, k.events],
                                                   [k.prefix, limit, self.max_events]))):
            total += n
        return total

    async def clean(self, state: State, age_ms: int, limit: int = 1000,
                    max_total: int | None = None) -> int:
        """Delete jobs of a finished ``state`` that finished at least ``age_ms`` ago, oldest
        first, up to ``max_total`` (None: all of them); returns how many."""
        if state not in FINISHED:
            raise InvalidInput(f"clean removes completed, failed or cancelled jobs, not {state}")
        k = self.keys
        total = 0
        while max_total is None or total < max_total:
            batch = limit if max_total is None else min(limit, max_total - total)
            n = int(await self.run(calls.Script(
                "clean", [k.index(state), k.events],
                [k.prefix, state.value, max(age_ms, 0), batch, self.max_events])))
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
            n = int(await self.run(calls.Script("obliterate", keys, [k.prefix, limit, int(force)])))
            if n < 0:
                calls.raise_for(n, k, "", "obliterate")
            if n == 0:
                return total
            total += n

    # -- reads ---------------------------------------------------------------------------
    # -- queue-wide settings (stored in the queue's meta hash) ---------------------------
    async def configure(self, pairs: Sequence[Arg]) -> calls.Settings:
        """Store queue-wide settings (``pairs`` of name and value, "" removes one; see
        ``lua/configure.lua``); returns what is stored now, and adopts it."""
        stored = await self.run(calls.configure(self.keys, self.max_events, pairs))
        self.adopt(stored)
        return stored

    async def configure_group(self, group: str, pairs: Sequence[Arg]) -> None:
        """Store one group's overrides or pause flag, and place the group again."""
        await self.run(calls.configure_group(self.keys, self.max_events, group, pairs))

    async def group_info(self, group: str) -> GroupInfo:
        (info,) = await self.group_infos([group])
        return info

    async def group_infos(self, groups: Sequence[str]) -> list[GroupInfo]:
        """Several groups in one round trip."""
        return await self.pipeline(calls.group_infos(self.keys, groups))

    async def group_names(self, after: str = "", count: int = 100) -> list[str]:
        return await self.pipeline(calls.group_names(self.keys, after, count))

    async def load_settings(self) -> calls.Settings:
        """Read the queue's stored caps and adopt them (a queue with none keeps this
        client's own)."""
        stored = await self.pipeline(calls.settings(self.keys))
        self.adopt(stored)
        return stored

    def adopt(self, stored: calls.Settings) -> None:
        if stored["max_events"] is not None:
            self.max_events = stored["max_events"]
        if stored["max_payload_bytes"] is not None:
            self.max_payload_bytes = stored["max_payload_bytes"]

    async def job_fields(self, job_id: str) -> dict[bytes, bytes]:
        """The job's hash; raises :class:`~shunter.errors.JobNotFound` when there is none."""
        return await self.pipeline(calls.job_fields(self.keys, job_id))

    async def counts(self) -> Counts:
        return await self.pipeline(calls.counts(self.keys))

    async def job_ids(self, state: State, start: int = 0, end: int = -1) -> list[str]:
        """Ids in one state's index (finished states newest first)."""
        return await self.pipeline(calls.job_ids(self.keys, state, start, end))

    async def logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        return await self.pipeline(calls.logs(self.keys, job_id, start, end))

    async def wait_for_work(self, timeout: float, others: Sequence[Storage] = ()) -> bool:
        """Block until a producer (or a retry, resume, rescue) signals work, or ``timeout``
        seconds pass. Uses BZPOPMIN on a one-member marker set: the signal persists, so a
        wake-up that arrives between a claim and this call is never missed. With
        ``others`` (storages of other queues on the same server), one BZPOPMIN waits on
        every queue's marker; it takes the signal of one queue, the others keep theirs."""
        wait = min(max(timeout, 0.001), self.max_block)
        markers = [self.keys.marker, *(o.keys.marker for o in others)]
        reply = await self._raw.bzpopmin(markers, timeout=wait)
        return reply is not None
