"""The asyncio Queue: the producer and admin API of one queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from . import codec
from .errors import InvalidInput, JobNotFound
from .flow import spread_entries
from .flow.dedup import Dedup
from .flow.limits import GroupInfo, Rate, concurrency_value, group_pairs, rate_pairs
from .job import Job
from .options import DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED, Backoff, Retention
from .producer import added_job, added_jobs, build_spec, int_in, spec_from_mapping
from .states import State
from .storage import DEFAULT_MAX_EVENTS, DEFAULT_MAX_PAYLOAD, Counts, Storage, validate_limits
from .storage.connection import RedisLike, async_client
from .tasks import TaskDef

__all__ = ["Queue"]

MAX_BULK = 10_000


class Queue:
    """A named queue on a Redis or Valkey server.

    ``redis`` is a URL, a ``redis.asyncio.Redis`` client (used as is, not closed by us), or
    None for ``$SHUNTER_REDIS_URL``, else the embedded server (:mod:`shunter.embedded`). Payloads,
    results and progress values are capped at ``max_payload_bytes`` of JSON; the event
    stream is capped near ``max_events`` entries (100 to 10,000,000; ``max_payload_bytes``
    1 KiB to 64 MiB; the same rule as :class:`~shunter.Worker`).
    """

    def __init__(self, name: str, redis: RedisLike = None, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.name = codec.validate_queue_name(name)
        max_events, max_payload_bytes = validate_limits(max_events, max_payload_bytes)
        self._client, self._owned = async_client(redis)
        self.storage = Storage(self._client, name, max_events=max_events,
                               max_payload_bytes=max_payload_bytes)
        #: The queue's stored caps (``configure``) are read before the first add.
        self._settings_read = False

    async def _settings(self) -> None:
        if not self._settings_read:
            await self.storage.load_settings()
            self._settings_read = True

    async def configure(self, *, max_events: int | None = None,
                        max_payload_bytes: int | None = None,
                        concurrency: int | None = None,
                        rate: Rate | int | None = None) -> dict[str, Any]:
        """Store queue-wide settings on the server, so that every producer and worker of
        the queue uses the same ones whatever it was started with: ``max_events`` (the
        event stream's cap, applied by every script), ``max_payload_bytes`` (checked by
        the enqueue script, and by producers and workers, which read it before their first
        add or at start), ``concurrency`` (most jobs of the queue active at once across
        all its workers, 1..1,000,000; 0 removes the limit) and ``rate`` (a
        :class:`~shunter.Rate`: most job starts per period across all workers; 0 removes
        it). Both limits are enforced when jobs are claimed: a job over one is not claimed
        (no attempt, no event). ``None`` leaves a setting as it is. Returns every setting
        as stored now (None where none is stored). Raises
        :class:`~shunter.errors.InvalidInput` (nothing stored) on bad input."""
        checked = validate_limits(DEFAULT_MAX_EVENTS if max_events is None else max_events,
                                  DEFAULT_MAX_PAYLOAD if max_payload_bytes is None else max_payload_bytes)
        pairs: list[str] = []
        if max_events is not None:
            pairs += ["max_events", str(checked[0])]
        if max_payload_bytes is not None:
            pairs += ["max_payload_bytes", str(checked[1])]
        if concurrency is not None:
            value = concurrency_value(concurrency)
            pairs += ["concurrency", "" if value == "0" else value]
        pairs += rate_pairs(rate, "")
        stored = await self.storage.configure(pairs)
        self._settings_read = True
        return stored

    async def configure_groups(self, *, concurrency: int | None = None,
                               rate: Rate | int | None = None) -> dict[str, Any]:
        """Store the default limits of every group of this queue (``add(group=...)``):
        ``concurrency`` (most jobs of one group active at once across all workers; 0
        removes the default) and ``rate`` (a :class:`~shunter.Rate` per group; 0 removes
        it). A group's own overrides (:meth:`configure_group`) win. A lowered limit holds
        jobs back from the next claim on; a raised one lets a full group start more as
        soon as one of its running jobs ends. ``None`` leaves a setting as it is. Returns
        every queue setting as stored now (``group_concurrency``, ``group_rate``...)."""
        pairs: list[str] = []
        if concurrency is not None:
            value = concurrency_value(concurrency)
            pairs += ["group_concurrency", "" if value == "0" else value]
        pairs += rate_pairs(rate, "group_")
        return await self.storage.configure(pairs)

    async def configure_group(self, group: str, *, concurrency: int | None = None,
                              rate: Rate | int | None = None,
                              weight: float | None = None) -> GroupInfo:
        """Override the default limits for one group: ``concurrency`` (0: no limit for this
        group), ``rate`` (a :class:`~shunter.Rate`, or 0: none for this group) and
        ``weight`` (its share in fair queueing, 0.001..1000, default 1: a group of weight 3
        starts three jobs for every one of a group of weight 1 while both have work).
        Takes effect at once. ``None`` leaves a setting as it is; :meth:`reset_group`
        removes every override. Returns the group as it is now."""
        name = codec.validate_group(group)
        pairs = group_pairs(concurrency, rate, weight)
        if pairs:
            await self.storage.configure_group(name, pairs)
        return await self.storage.group_info(name)

    async def reset_group(self, group: str) -> GroupInfo:
        """Remove every override of one group: it follows the queue's defaults again."""
        name = codec.validate_group(group)
        await self.storage.configure_group(name, ["reset", "1"])
        return await self.storage.group_info(name)

    async def pause_group(self, group: str) -> None:
        """Stop workers from claiming jobs of one group (its active jobs finish; new jobs
        still join its line)."""
        await self.storage.configure_group(codec.validate_group(group), ["paused", "1"])

    async def resume_group(self, group: str) -> None:
        """Let workers claim the jobs of a paused group again."""
        await self.storage.configure_group(codec.validate_group(group), ["paused", ""])

    async def group(self, group: str) -> GroupInfo:
        """One group: jobs waiting and active, totals by end state, its limits, and whether
        it can start a job now (``state``; ``next_eligible_ms`` when blocked)."""
        return await self.storage.group_info(codec.validate_group(group))

    async def groups(self, *, after: str = "", count: int = 100) -> list[GroupInfo]:
        """The queue's groups in name order, ``count`` (1..1000) from the first after
        ``after`` (pass the last name of a page to get the next)."""
        if after:
            codec.validate_group(after)
        int_in(count, "count", 1, 1000)
        names = await self.storage.group_names(after, count)
        return await self.storage.group_infos(names) if names else []

    async def settings(self) -> dict[str, Any]:
        """The queue's stored caps (``None`` where it stores none: each client's own apply)."""
        stored = await self.storage.load_settings()
        self._settings_read = True
        return stored

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool if this queue created it."""
        if self._owned:
            await self._client.aclose()

    async def add(self, task: str | TaskDef[Any], data: Any = None, *, job_id: str | None = None,
                  delay: float | None = None, run_at: datetime | None = None,
                  priority: int | None = None, max_attempts: int | None = None,
                  backoff: Backoff | None = None, timeout: float | None = None,
                  keep_completed: Retention | int = DEFAULT_KEEP_COMPLETED,
                  keep_failed: Retention | int = DEFAULT_KEEP_FAILED,
                  group: str | None = None, dedup: Dedup | None = None) -> Job:
        """Enqueue one job (one round trip) and return it.

        - ``task``: the task's name, or the task itself (a :class:`~shunter.TaskDef` from a
          :class:`~shunter.Tasks` registry: its options are the defaults of this job, and
          a typo in its name fails at import time); ``data``: any JSON value.
        - ``job_id``: your own id; if a job with this id exists in any state, that job is
          returned as stored (its task, data, state...) with ``job.existing = True`` and
          nothing is written.
        - ``delay`` (seconds) or ``run_at`` (aware datetime): run no earlier than that.
        - ``priority``: -1000..1000, higher runs first; FIFO within a priority (default:
          the task's, else 0).
        - ``max_attempts``: runs allowed before the job fails, 1..1000 (default: the
          task's, else 3).
        - ``backoff``: delay between attempts (default: the task's, else exponential from 5 s
          with ±50 % jitter).
        - ``timeout``: seconds one attempt may run (default: the task's, else the worker's).
        - ``keep_completed`` / ``keep_failed``: retention (:class:`Retention` or a count).
        - ``group``: the job's group (``"post:123"``; 1-128 of letters, digits and
          ``_.-@=+/:``). Each group keeps its own line (priority, then FIFO), groups are
          served by weighted fair queueing, and the group limits of
          :meth:`configure_groups` and :meth:`configure_group` apply to it (see
          ``docs/groups.md``). None (the default): the job has no group.
        - ``dedup``: a :class:`~shunter.Dedup` (``Dedup.unique(key)``, ``ttl``,
          ``throttle``, ``debounce``): while its key is held, nothing is created and the
          holder is returned with ``job.deduplicated = True`` (``job.debounced = True``
          when a debounce updated it); see docs/dedup.md. With ``job_id`` too, the id is
          checked first: an existing id returns that job whatever its key.

        The returned job has the fields as stored (``created_at`` is server time). Raises
        :class:`~shunter.errors.InvalidInput` (and nothing is written) on bad input, and
        :class:`~shunter.errors.WrongKeyType` when the job's key holds foreign data (a
        value that is not a job hash; nothing is written).
        """
        if not self._settings_read:
            await self._settings()
        spec = build_spec(task, data, job_id=job_id, delay=delay, run_at=run_at, priority=priority,
                          max_attempts=max_attempts, backoff=backoff, timeout=timeout,
                          keep_completed=keep_completed, keep_failed=keep_failed, group=group,
                          dedup=dedup,
                          max_payload_bytes=self.storage.max_payload_bytes)
        return added_job(self._job, spec, await self.storage.enqueue(spec))

    async def add_bulk(self, entries: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue many jobs in one pipelined round trip; one :class:`Job` per entry, in
        order, as :meth:`add` returns them.

        Each entry is a dict with ``task``, ``data`` and any option of :meth:`add`
        (``dedup`` too: entries of one call with the same key behave as adds one after
        the other, so the first takes the key). Every
        entry is validated before anything is sent, so one bad entry raises
        :class:`~shunter.errors.InvalidInput` and writes nothing. A job the server refuses
        on its own (its key holds foreign data) does not stop the others: they are stored,
        then :class:`~shunter.errors.BulkAddError` is raised, naming the jobs that were
        not added (``errors``) and carrying every job (``jobs``, None where not added).
        """
        await self._settings()
        specs = [spec_from_mapping(e, self.storage.max_payload_bytes) for e in entries]
        if len(specs) > MAX_BULK:
            raise InvalidInput(f"add_bulk takes at most {MAX_BULK} jobs per call, got {len(specs)}")
        if not specs:
            return []
        return added_jobs(self._job, self.name, specs, await self.storage.enqueue_many(specs))

    async def add_spread(self, entries: Sequence[Mapping[str, Any]], *, start: float | datetime,
                         end: float | datetime, jitter: float = 0.1,
                         order: Literal["linear", "random"] = "linear",
                         batch_id: str | None = None) -> list[Job]:
        """Schedule the jobs of ``entries`` (as for :meth:`add_bulk`, without ``delay`` or
        ``run_at``) across the window ``[start, end]``: ``start`` and ``end`` both aware
        datetimes, or both seconds from now (server time). Job ``i`` runs in slot ``i`` of
        N equal slots, at its middle moved by at most ``jitter`` × the slot either way
        (0..1), never outside the window; ``order="random"`` deals the slots at random.
        ``batch_id`` makes the call idempotent: the jobs get the ids
        ``<batch_id>.<index>`` (an entry's own ``job_id`` wins), so a re-sent batch
        returns its jobs with ``existing=True``, and the jitter is the same. One
        pipelined round trip, like :meth:`add_bulk`; the same errors."""
        return await self.add_bulk(spread_entries(
            entries, start=start, end=end, jitter=jitter, order=order, batch_id=batch_id))

    def _job(self, job_id: str) -> Job:
        return Job(self.storage, job_id)

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id as stored now, or None if there is none (never added, or
        deleted since: retention, ``drain``, ``clean``). ``refresh`` and ``wait`` of the
        job it returns raise :class:`~shunter.errors.JobNotFound` once it is gone."""
        codec.validate_job_id(job_id)
        try:
            return await self._job(job_id).refresh()
        except JobNotFound:
            return None

    async def counts(self) -> Counts:
        """Jobs per state, plus ``paused`` (1 or 0)."""
        return await self.storage.counts()

    async def job_ids(self, state: State | str, start: int = 0, end: int = -1) -> list[str]:
        """Ids of jobs in ``state`` (waiting/active/scheduled oldest first, finished newest first)."""
        try:
            wanted = State(state)
        except ValueError:
            raise InvalidInput(f"unknown state {state!r}; one of {', '.join(State)}") from None
        return await self.storage.job_ids(wanted, start, end)

    async def pause(self) -> None:
        """Stop workers from claiming new jobs (active jobs finish)."""
        await self.storage.pause()

    async def resume(self) -> None:
        """Let workers claim again."""
        await self.storage.resume()

    async def drain(self) -> int:
        """Delete every waiting and scheduled job; returns how many. Active and finished
        jobs are left alone."""
        return await self.storage.drain()

    async def clean(self, state: State | str = State.COMPLETED, *, older_than: float = 0.0,
                    limit: int | None = None) -> int:
        """Delete completed, failed or cancelled jobs that finished at least ``older_than``
        seconds ago (oldest first, at most ``limit``); returns how many. Retention does
        this automatically per job; ``clean`` is the manual broom."""
        if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or not (
            0 <= older_than <= 10 * 366 * 86400
        ):
            raise InvalidInput(f"older_than must be seconds between 0 and 10 years, got {older_than!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidInput(f"limit must be a positive int or None, got {limit!r}")
        try:
            target = State(state)
        except ValueError:
            raise InvalidInput(f"unknown state {state!r}") from None
        return await self.storage.clean(target, int(older_than * 1000), max_total=limit)

    async def obliterate(self, *, force: bool = False) -> int:
        """Delete the queue and every job in it. Refuses while jobs are active unless
        ``force=True``. Returns the number of jobs deleted."""
        return await self.storage.obliterate(force=force)

    async def cancel(self, job_id: str, *, by: str = "", reason: str = "") -> bool:
        """Cancel a job. A waiting or scheduled job is cancelled at once (returns True); an
        active job's worker is told within one lease-renewal interval and stops the handler
        (returns False: the job becomes ``cancelled`` when the worker confirms, or when its
        lease expires). Finished jobs raise :class:`~shunter.errors.JobNotInState`."""
        codec.validate_job_id(job_id)
        return await self.storage.cancel(job_id, by, reason)

    async def replay(self, job_id: str) -> None:
        """Run a failed or cancelled job again from attempt 1 (dead-letter replay)."""
        codec.validate_job_id(job_id)
        await self.storage.replay(job_id)
