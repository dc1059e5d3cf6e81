"""The Worker: claims jobs from one queue and runs them with bounded concurrency.

Tasks on the worker's event loop: the fetcher (claims jobs, blocks on the server when the
queue is empty), one executor task per job in flight (:mod:`shunter.executor`), and the
maintenance task (rescues expired leases of any worker). Off the loop: the lease keeper
thread (:mod:`shunter.lease`) and the threads of sync handlers (:mod:`shunter.threads`).

An attempt is identified by (queue, job id, fencing token), never by the job id alone: a
worker that was frozen (SIGSTOP, a long GC pause, a VM migration) past its lease can find
the job rescued and claim it again while its first attempt is still winding down. The
new claim interrupts the old attempt (it lost its lease), and each attempt's end removes
only its own entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from . import codec
from .acker import Acker
from .checks import ServerReport, check_server
from .connection import RedisLike, async_client, sync_twin
from .errors import InvalidInput
from .executor import Interrupt, Running, execute
from .job import Job
from .lease import LeaseKeeper
from .options import Backoff
from .outcome import Classifier, Task
from .producer import DEFAULT_BACKOFF
from .storage import DEFAULT_MAX_EVENTS, DEFAULT_MAX_PAYLOAD, UNAVAILABLE, Storage, validate_limits
from .threads import HandlerThreads

__all__ = ["Worker"]

log = logging.getLogger("shunter.worker")

#: One attempt of a job in this worker (see :meth:`Worker.attempt_key`).
AttemptKey = tuple[str, int]


def _positive(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


class Worker:
    """Runs the handlers in ``tasks`` (task name -> callable or :class:`Task`) for one queue.

    - ``concurrency``: jobs run at once (async handlers as tasks, sync ones in threads).
    - ``lease``: seconds a claim is valid without renewal; renewed every ``lease / 3`` from a
      thread, so a blocked event loop does not lose it. A job whose worker dies is rescued
      by any worker once the lease expires; after ``max_stalls`` rescues it fails.
    - ``job_timeout``: default seconds per attempt (a job's own or its task's wins).
    - ``shutdown_timeout``: on SIGTERM/SIGINT or :meth:`close`, how long in-flight jobs may
      finish; the rest are handed back to ``waiting`` without using an attempt.
    - ``cancel_grace``: how long an interrupted handler gets to stop before it is abandoned.
    - ``classify``: ``(exc, job) -> Decision | RetryAfter | None`` for every task.
    - ``max_deferrals``: how often a job may defer itself with :class:`RetryAfter`.
    - ``batch``: most jobs claimed per round trip (default: ``min(concurrency, 50)``).
    - ``max_payload_bytes`` / ``max_events``: caps on results and progress, and on the
      queue's event stream, as for :class:`~shunter.Queue` (use the same values on both).
    - ``name``: the worker id shown in jobs and events (default ``host:pid:random``).
    """

    def __init__(self, queue: str, tasks: Mapping[str, Callable[..., Any] | Task],
                 redis: RedisLike = None, *, concurrency: int = 50, lease: float = 30.0,
                 job_timeout: float = 300.0, max_stalls: int = 1, shutdown_timeout: float = 30.0,
                 cancel_grace: float = 5.0, classify: Classifier | None = None,
                 default_backoff: Backoff = DEFAULT_BACKOFF, max_deferrals: int = 100,
                 batch: int | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 max_events: int = DEFAULT_MAX_EVENTS, block_timeout: float = 5.0,
                 name: str | None = None) -> None:
        codec.validate_queue_name(queue)
        if not isinstance(tasks, Mapping) or not tasks:
            raise InvalidInput("tasks must be a non-empty mapping of task name -> handler")
        self.tasks: dict[str, Task] = {}
        for task_name, handler in tasks.items():
            codec.validate_task_name(task_name)
            self.tasks[task_name] = handler if isinstance(handler, Task) else Task(handler)
        self.concurrency = int(_positive(concurrency, "concurrency", 1, 10_000))
        self.lease = _positive(lease, "lease", 0.1, 3600)
        self.job_timeout = _positive(job_timeout, "job_timeout", 0.001, 7 * 86400)
        self.max_stalls = int(_positive(max_stalls, "max_stalls", 0, 1000))
        self.shutdown_timeout = _positive(shutdown_timeout, "shutdown_timeout", 0, 86400)
        self.cancel_grace = _positive(cancel_grace, "cancel_grace", 0, 3600)
        self.max_deferrals = int(_positive(max_deferrals, "max_deferrals", 0, 100_000))
        default_batch = min(self.concurrency, 50)
        self.batch = int(_positive(default_batch if batch is None else batch, "batch", 1, 1000))
        self.block_timeout = _positive(block_timeout, "block_timeout", 0.01, 60)
        if classify is not None and not callable(classify):
            raise InvalidInput(f"classify must be callable, got {classify!r}")
        if not isinstance(default_backoff, Backoff):
            raise InvalidInput(f"default_backoff must be a Backoff, got {default_backoff!r}")
        self.classify = classify
        self.default_backoff = default_backoff
        if name is not None and (not isinstance(name, str) or not name.isprintable()
                                 or not 0 < len(name) <= 200):
            raise InvalidInput(f"worker name must be 1-200 printable characters, got {name!r}")
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        max_events, max_payload_bytes = validate_limits(max_events, max_payload_bytes)
        self._client, self._owned = async_client(redis)
        self.storage = Storage(self._client, queue, max_payload_bytes=max_payload_bytes,
                               max_events=max_events)
        #: Jobs completed, retried, failed, cancelled, released, and commits refused.
        self.counters: Counter[str] = Counter()
        self.server: ServerReport | None = None
        #: Threads of sync handlers: one per slot, plus one per abandoned handler.
        self.threads = HandlerThreads(self.concurrency)
        self._running: dict[AttemptKey, Running] = {}
        #: The newest attempt of each job running here (to supersede older ones).
        self._newest: dict[str, Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stop = asyncio.Event()
        self._slot = asyncio.Event()
        self._lease: LeaseKeeper | None = None
        self.lease_ms = int(self.lease * 1000)
        #: Slots promised to claims in flight (fetcher and acker), so they never over-claim.
        self.reserved = 0
        #: Claims whose reply never came (connection cut after the script ran): (claim id,
        #: count). Their slots stay reserved until the fetcher re-sends the same claim id,
        #: which returns the same batch instead of leaving it to stall.
        self._unresolved: list[tuple[str, int]] = []
        self._claim_prefix = f"{uuid.uuid4().hex[:12]}:"
        self._claim_seq = 0
        self._nudge = asyncio.Event()
        self.acker = Acker(self)
        self._outage = 0
        self._started_at = time.time()

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: no new claims."""
        return self._stopping

    @property
    def free_slots(self) -> int:
        """Slots neither running a job nor promised to a claim in flight."""
        return self.concurrency - len(self._running) - self.reserved

    @property
    def running(self) -> int:
        """Jobs in flight now."""
        return len(self._running)

    @property
    def loop_lag(self) -> float:
        """Largest event-loop lag (seconds) seen by the lease keeper."""
        return self._lease.max_loop_lag if self._lease else 0.0

    async def run(self, *, burst: bool = False, handle_signals: bool = True) -> None:
        """Process jobs until :meth:`close`, SIGTERM or SIGINT (a second signal skips the
        wait for in-flight jobs). With ``burst=True``, return once nothing is waiting or
        scheduled and no job is in flight (or the queue is paused)."""
        loop = asyncio.get_running_loop()
        self.server = await check_server(self.storage)
        self._lease = LeaseKeeper(sync_twin(self._client), loop, self.lease_ms,
                                  self._on_lease_lost, self._on_cancel_requested)
        self._lease.start()
        signals = self._install_signals(loop) if handle_signals else []
        self._started_at = time.time()
        maintenance = loop.create_task(self._maintain())
        self.acker.start()
        log.info("worker %s on queue %s: concurrency %d, lease %gs, tasks %s", self.id,
                 self.storage.keys.name, self.concurrency, self.lease, ", ".join(self.tasks))
        try:
            await self._fetch(burst)
        finally:
            # The flag, not only the cancel, ends the maintenance loop: on Python 3.11 a
            # cancel that lands while redis-py sends a command is lost (asyncio.wait_for
            # swallows it), and the task would go on rescuing after run() returned.
            self._stopping = True
            self._stop.set()
            maintenance.cancel()
            await asyncio.wait({maintenance}, timeout=5)
            await self._shutdown()
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def close(self) -> None:
        """Ask the worker to stop: no new claims; :meth:`run` returns after in-flight jobs
        finished or were handed back."""
        self._stopping = True
        self._stop.set()
        self._slot.set()
        self._nudge.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        return installed

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            log.warning("second %s: handing in-flight jobs back now", signal.Signals(sig).name)
            self.shutdown_timeout = 0.0
            for run in self._running.values():
                run.signal(Interrupt.SHUTDOWN)
            return
        log.info("%s: finishing in-flight jobs (up to %gs)", signal.Signals(sig).name,
                 self.shutdown_timeout)
        self._stopping = True
        self._stop.set()
        self._slot.set()
        self._nudge.set()

    # -- claiming --------------------------------------------------------------------------
    def new_claim_id(self) -> str:
        """A fresh claim request id: a re-sent claim with the same id returns the same batch."""
        self._claim_seq += 1
        return f"{self._claim_prefix}{self._claim_seq}"

    def claim_unresolved(self, claim_id: str, count: int) -> None:
        """A claim of ``count`` jobs (its slots reserved) got no reply: the script may have
        run on the server. Keep the reservation; the fetcher re-sends it."""
        self._unresolved.append((claim_id, count))
        self._nudge.set()

    async def _fetch(self, burst: bool) -> None:
        while not self._stopping:
            free = self.free_slots
            if self._unresolved:
                # Re-send a claim whose reply was lost, once its slots are really free (the
                # completions that came with it may still be in flight).
                if free < 0:
                    await self._wait_slot()
                    continue
                claim_id, count = self._unresolved.pop(0)
            else:
                if free <= 0:
                    await self._wait_slot()
                    continue
                claim_id, count = self.new_claim_id(), min(free, self.batch)
                self.reserved += count
            try:
                claim = await self.storage.claim(count, self.lease_ms, self.id, claim_id)
            except Exception as exc:  # unreachable, or a script error: never end the worker
                self._unresolved.insert(0, (claim_id, count))
                if not isinstance(exc, UNAVAILABLE):
                    log.error("claim failed: %r", exc)
                await self._server_unavailable(exc)
                continue
            self.reserved -= count
            self._outage = 0
            for fields in claim.jobs:
                self.start_job(fields)
            if claim.jobs or self._unresolved:
                continue
            if burst and not self._running and (claim.pending == 0 or claim.paused):
                return
            timeout = self.block_timeout
            if claim.next_due_ms >= 0:
                timeout = min(timeout, claim.next_due_ms / 1000)
            if burst:
                timeout = min(timeout, 0.05)  # notice our own last job finishing
            await self._wait_for_work(timeout)

    async def _wait_slot(self) -> None:
        self._slot.clear()
        await self._slot.wait()

    async def _server_unavailable(self, exc: BaseException) -> None:
        """Redis is unreachable (restart, failover, network): wait and try again, never exit.
        Jobs in flight keep running; their leases are renewed again once it is back."""
        self._outage += 1
        delay = min(0.05 * 2 ** min(self._outage, 8), 5.0)
        if self._outage in (1, 10) or self._outage % 100 == 0:
            log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def _wait_for_work(self, timeout: float) -> None:
        if timeout <= 0:
            return
        self._nudge.clear()
        blocker = asyncio.ensure_future(self.storage.wait_for_work(timeout))
        stopper = asyncio.ensure_future(self._nudge.wait())
        await asyncio.wait({blocker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not blocker.done():
            blocker.cancel()  # redis-py drops the connection of a cancelled blocking call
            await asyncio.wait({blocker}, timeout=0.1)
            if not blocker.done():
                # The cancel was lost (Python 3.11, see run()): the BZPOPMIN would hold
                # shutdown for its whole timeout. Closing the pool ends it; drop it.
                blocker.add_done_callback(_retrieve)
                return
        elif isinstance(blocker.exception(), UNAVAILABLE):
            await self._server_unavailable(blocker.exception() or Exception())
        if not blocker.cancelled():
            blocker.exception()  # retrieved, so asyncio does not log it at shutdown

    @staticmethod
    def attempt_key(job_id: str, token: int) -> AttemptKey:
        """One attempt of a job in this worker: (job id, fencing token)."""
        return (job_id, token)

    def start_job(self, fields: dict[bytes, bytes]) -> None:
        """Begin running one job just claimed (by the fetcher or the acker)."""
        job = Job(self.storage, fields.get(b"id", b"?").decode("utf-8", "replace"))._load(fields)
        job._loop = asyncio.get_running_loop()
        job._in_worker = True
        run = Running(job)
        key = self.attempt_key(job.id, job.token or 0)
        older = self._newest.get(job.id)
        # Claimed again while an older attempt still runs here: this worker was frozen past
        # its lease and the job was rescued. The older attempt lost its lease; stop it now
        # rather than when the lease keeper next hears of it.
        if (older is not None and self.attempt_key(job.id, older.job.token or 0) != key
                and older.signal(Interrupt.LEASE_LOST)):
            self.counters["lease_lost"] += 1
        self._running[key] = run
        self._newest[job.id] = run
        timeout = job.timeout or (self.tasks[job.task].timeout if job.task in self.tasks else None)
        hard = time.monotonic() + (timeout or self.job_timeout) + self.cancel_grace + self.lease
        assert self._lease is not None
        self._lease.add(self.storage.keys, job.id, job.token or 0, hard)
        task = job._loop.create_task(self._execute(run, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handler_began(self, run: Running, timeout: float) -> None:
        """A sync handler's thread started it (called in that thread): its lease is renewed
        for ``timeout`` from now, not from when it was queued."""
        if self._lease is not None:
            self._lease.set_deadline(self.storage.keys.name, run.job.id, run.job.token or 0,
                                     time.monotonic() + timeout + self.cancel_grace + self.lease)

    async def _execute(self, run: Running, key: AttemptKey) -> None:
        try:
            await execute(self, run)
        except UNAVAILABLE as exc:
            # Redis unreachable at commit time for a whole lease: the lease will expire and
            # the job be rescued.
            log.warning("job %s: could not record its outcome: %s", run.job.id, exc)
        except Exception:
            log.exception("job %s: could not record its outcome", run.job.id)
        finally:
            # Only this attempt's entries: a newer attempt of the same job may be running.
            self._running.pop(key, None)
            if self._newest.get(run.job.id) is run:
                del self._newest[run.job.id]
            if self._lease is not None:
                self._lease.remove(self.storage.keys.name, run.job.id, run.job.token or 0)
            self._slot.set()

    # -- signals from the lease keeper (run on the loop via call_soon_threadsafe) ----------
    def _current(self, queue: str, job_id: str, token: int) -> Running | None:
        run = self._running.get(self.attempt_key(job_id, token))
        return run if run is not None and run.job.token == token else None

    def _on_lease_lost(self, queue: str, job_id: str, token: int) -> None:
        if (run := self._current(queue, job_id, token)) and run.signal(Interrupt.LEASE_LOST):
            self.counters["lease_lost"] += 1

    def _on_cancel_requested(self, queue: str, job_id: str, token: int) -> None:
        if run := self._current(queue, job_id, token):
            run.signal(Interrupt.CANCEL)

    # -- maintenance and shutdown ------------------------------------------------------------
    async def _maintain(self) -> None:
        """Rescue expired leases (of any worker) about twice per lease period; a SET NX PX
        lock in the script keeps the whole fleet to one rescue per period. Each round also
        refreshes this worker's heartbeat (``shunter:{queue}:worker:<id>``, SET PX)."""
        interval = max(self.lease / 2, 0.05)
        while not self._stopping:
            try:
                await self.storage.rescue(self.max_stalls, lock_ms=max(int(interval * 900), 1))
            except Exception as exc:
                log.warning("stall rescue failed: %s", exc)
            # The heartbeat outlives three missed beats, so `shunter status` shows a
            # worker until ~3 maintenance periods after it died.
            with contextlib.suppress(Exception):
                await self.storage.heartbeat(self.id, self._heartbeat(),
                                             max(int(interval * 3000), 5000))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def _heartbeat(self) -> bytes:
        host, pid = socket.gethostname(), os.getpid()
        return codec.dumps({
            "id": self.id, "queue": self.storage.keys.name, "host": host, "pid": pid,
            "concurrency": self.concurrency, "running": len(self._running),
            "abandoned": self.threads.abandoned,
            "started_at": self._started_at, "loop_lag": round(self.loop_lag, 4),
            "counters": dict(self.counters),
        })

    async def _hand_back_unresolved(self) -> None:
        """Jobs of a claim whose reply was lost are ours, unstarted: on the way out, fetch
        them with the same claim id and hand them back at once (best effort; if Redis is
        still unreachable they are rescued when their lease runs out)."""
        while self._unresolved:
            claim_id, count = self._unresolved.pop()
            try:
                # count 0: only the stored batch comes back, never new jobs
                claim = await self.storage.claim(0, self.lease_ms, self.id, claim_id)
                for fields in claim.jobs:
                    with contextlib.suppress(Exception):
                        await self.storage.release(fields[b"id"].decode(), int(fields[b"token"]))
            except Exception as exc:
                log.warning("could not hand back the jobs of an unanswered claim: %s", exc)
            self.reserved -= count

    async def _shutdown(self) -> None:
        self._stopping = True
        pending = {t for t in self._tasks if not t.done()}
        if pending and self.shutdown_timeout > 0:
            log.info("waiting up to %gs for %d job(s)", self.shutdown_timeout, len(pending))
            await asyncio.wait(pending, timeout=self.shutdown_timeout)
        for run in list(self._running.values()):
            run.signal(Interrupt.SHUTDOWN)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.cancel_grace + 10)
        await self.acker.stop()
        await self._hand_back_unresolved()
        if self._lease is not None:
            self._lease.stop()
            await asyncio.to_thread(self._lease.join, 5)
        with contextlib.suppress(Exception):
            await self.storage.forget_worker(self.id)
        self.threads.shutdown()
        if self._owned:
            await self._client.aclose()
        log.info("worker %s stopped: %s", self.id, dict(self.counters))


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a dropped future's outcome as seen, so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()
