"""The Worker: wiring and lifecycle (run, close, signals, shutdown) of a worker of one or
more queues.

What runs, and who owns it:

- on the event loop: the fetcher (:mod:`.fetcher`: claims, blocks on the server when idle),
  the acker (:mod:`.acker`: batched completions that claim the next jobs), one executor
  task per attempt (:mod:`.executor`, committing through :mod:`.settler`), and the
  maintenance duties (:mod:`.maintenance`: rescue, heartbeat);
- off the loop: the lease keeper thread (:mod:`.lease`), the threads of sync handlers
  (:mod:`.threads`) and the child processes of ``executor="process"`` tasks (:mod:`.processes`).

:mod:`.slots` owns concurrency accounting for the fetcher and the ackers; they start jobs
through one :meth:`Worker._launch`. Each queue is a :class:`~.lanes.Lane` (its storage,
acker and settler); slots, the lease keeper, threads, maintenance and hooks serve all of
them. Attempts are keyed by (job id, fencing token): a
worker frozen past its lease (SIGSTOP, a long GC pause) can claim a rescued job again
while its first attempt still winds down; the new claim interrupts the old one.
Observers plug in through :mod:`.hooks`. No module of this package imports this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import codec
from ..errors import InvalidInput
from ..job import Job
from ..options import DEFAULT_BACKOFF, Backoff
from ..outcome import Classifier, Task
from ..storage import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_PAYLOAD,
    UNAVAILABLE,
    BlockingStorage,
    Storage,
    validate_limits,
)
from ..storage.connection import RedisLike, async_client, sync_twin
from ..tasks import TaskDef, Tasks, resolve_handlers
from .acker import Acker
from .checks import ServerReport, check_server
from .executor import Interrupt, Middleware, RunContext, Running, execute
from .fetcher import Claimer, ClaimIds, Fetcher
from .hooks import Hooks, HookSet
from .lanes import Lane, Queues, parse_queues
from .lease import LeaseKeeper
from .maintenance import Maintenance
from .processes import ProcessPool
from .resources import Lifespan, Resources
from .settler import Settler
from .slots import Slots
from .threads import HandlerThreads

__all__ = ["Worker"]

log = logging.getLogger("shunter.worker")


def _positive(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


class Worker:
    """Runs the handlers in ``tasks`` for the jobs of one or more queues.

    - ``queues``: a queue name; a list of names, served in strict order (a queue gets free
      slots only while the ones before it have no job ready); or a mapping of name ->
      weight, where each round a queue comes first with a chance proportional to its
      weight. One concurrency limit, lease thread, thread pool and maintenance task serve
      them all, and an idle worker blocks on all of them at once. Default: every queue of
      a :class:`~shunter.Tasks` registry.
    - ``tasks``: a :class:`~shunter.Tasks` registry, or a mapping of task name -> callable
      or :class:`~shunter.Task`.
    - ``concurrency``: jobs run at once (async handlers as tasks, sync ones in threads).
    - ``processes``: child processes for ``Task(fn, executor="process")`` jobs, started as
      they are needed (default: one per CPU).
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
    - ``hooks``: :class:`~shunter.worker.hooks.Hooks` objects told of every claim, start,
      settlement, lost lease and abandoned handler (metrics, tracing).
    - ``lifespan``: ``lifespan(worker)`` returns an async context manager, entered before
      the first claim and left after the last job ended; what it yields is ``job.context``
      in every handler (a database pool, an HTTP client, a model). If entering it raises,
      :meth:`run` raises :class:`~shunter.errors.WorkerStartupError` and claims nothing.
    - ``middleware``: ``async (job, call_next) -> result`` functions around each attempt,
      the first outermost; ``await call_next()`` runs the handler (with its timeout and
      interrupts) and returns its result or raises its error.
    """

    def __init__(self, queues: Queues | None = None,
                 tasks: Tasks | Mapping[str, Callable[..., Any] | Task | TaskDef[Any]] | None = None,
                 redis: RedisLike = None, *, concurrency: int = 50, lease: float = 30.0,
                 job_timeout: float = 300.0, max_stalls: int = 1, shutdown_timeout: float = 30.0,
                 cancel_grace: float = 5.0, classify: Classifier | None = None,
                 default_backoff: Backoff = DEFAULT_BACKOFF, max_deferrals: int = 100,
                 batch: int | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                 max_events: int = DEFAULT_MAX_EVENTS, block_timeout: float = 5.0,
                 name: str | None = None, hooks: Sequence[Hooks] = (),
                 lifespan: Lifespan | None = None, middleware: Sequence[Middleware] = (),
                 processes: int | None = None) -> None:
        #: The arguments, for :meth:`replace`.
        self._init: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.tasks: dict[str, Task] = resolve_handlers(tasks)
        if queues is None:
            queues = tasks.queues if isinstance(tasks, Tasks) else None
            if not queues:
                raise InvalidInput("Worker needs queues= (a queue name, a list, or a mapping of "
                                   "weights), or tasks given as a shunter.Tasks registry")
        order = parse_queues(queues)
        self.queues: list[str] = list(order.names)
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
        if lifespan is not None and not callable(lifespan):
            raise InvalidInput(f"lifespan must be a function of the worker returning an async "
                               f"context manager, got {lifespan!r}")
        if isinstance(middleware, (str, bytes)) or not all(callable(m) for m in middleware):
            raise InvalidInput("middleware must be a list of async (job, call_next) functions")
        self.classify = classify
        self.default_backoff = default_backoff
        if name is not None and (not isinstance(name, str) or not name.isprintable()
                                 or not 0 < len(name) <= 200):
            raise InvalidInput(f"worker name must be 1-200 printable characters, got {name!r}")
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._resources = Resources(lifespan, self.id)
        max_events, max_payload_bytes = validate_limits(max_events, max_payload_bytes)
        #: Jobs completed, retried, failed, cancelled, released, and commits refused.
        self.counters: Counter[str] = Counter()
        self.server: ServerReport | None = None
        if isinstance(hooks, (str, bytes)) or not all(isinstance(h, Hooks) for h in hooks):
            raise InvalidInput("hooks must be a list of shunter.worker.Hooks objects")
        self.hooks = HookSet(hooks)
        self._client, self._owned = async_client(redis)
        #: Threads of sync handlers: one per slot, plus one per abandoned handler.
        self.threads = HandlerThreads(self.concurrency)
        self.processes = ProcessPool(processes, self.cancel_grace)
        self.slots = Slots(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stop = asyncio.Event()
        self._lease: LeaseKeeper | None = None
        self.lease_ms = int(self.lease * 1000)
        ids = ClaimIds()
        #: One lane per queue, in the order given.
        self.lanes: list[Lane] = []
        strict_first = not order.weighted
        for index, (queue, weight) in enumerate(zip(order.names, order.weights, strict=True)):
            lane = Lane(Storage(self._client, queue, max_payload_bytes=max_payload_bytes,
                                max_events=max_events))
            # Completions claim along only where that cannot break the queue order: a lone
            # queue, or the first of a strict order.
            lane.claimer = Claimer(lane.storage, self.slots, functools.partial(self._launch, lane),
                                   ids, self.batch, self.lease_ms, self.id, lambda: self._stopping,
                                   piggyback=index == 0 and strict_first, weight=weight)
            lane.acker = Acker(lane.claimer)
            lane.settler = Settler(lane.storage, lane.acker, self.lease, self.counters, self.hooks)
            self.lanes.append(lane)
        self._lanes = {lane.name: lane for lane in self.lanes}
        #: The first queue's storage.
        self.storage = self.lanes[0].storage
        self.fetcher = Fetcher([lane.claimer for lane in self.lanes],
                               block_timeout=self.block_timeout, stopped=self._stop,
                               weighted=order.weighted)
        self.context = RunContext(
            self.tasks, self.job_timeout, self.cancel_grace, self.classify, self.default_backoff,
            self.max_deferrals, self.threads, self.hooks, self.counters, self._handler_began,
            self.processes, tuple(middleware))
        self.maintenance = Maintenance()
        interval = max(self.lease / 2, 0.05)
        for lane in self.lanes:
            # Rescue about twice per lease period; a SET NX PX lock in the script keeps
            # the whole fleet to one rescue per queue and period.
            self.maintenance.register(f"rescue {lane.name}", interval, functools.partial(
                lane.storage.rescue, self.max_stalls, lock_ms=max(int(interval * 900), 1)))
            # The heartbeat outlives three missed beats, so `shunter status` shows a worker
            # until ~3 maintenance periods after it died.
            self.maintenance.register(f"heartbeat {lane.name}", interval, functools.partial(
                self._beat, lane, max(int(interval * 3000), 5000)))
        self._started_at = time.time()

    def replace(self, **changes: Any) -> Worker:
        """A new worker with the same arguments but ``changes`` (e.g. ``queues=``,
        ``concurrency=``, ``redis=``); nothing else is dropped. The CLI uses it for
        ``-Q``, ``-c`` and ``--redis``."""
        unknown = set(changes) - set(self._init)
        if unknown:
            raise InvalidInput(f"Worker has no option(s) {sorted(unknown)}")
        return Worker(**{**self._init, **changes})

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: no new claims."""
        return self._stopping

    @property
    def free_slots(self) -> int:
        """Slots neither running a job nor promised to a claim in flight."""
        return self.slots.free

    @property
    def running(self) -> int:
        """Jobs in flight now."""
        return self.slots.running

    @property
    def lifespan(self) -> Lifespan | None:
        """The lifespan entered by the next :meth:`run` (settable before it)."""
        return self._resources.lifespan

    @lifespan.setter
    def lifespan(self, lifespan: Lifespan | None) -> None:
        self._resources.lifespan = lifespan

    @property
    def resources(self) -> Any:
        """What the lifespan yielded: every job's ``job.context`` (None without one)."""
        return self._resources.value

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
        for lane in self.lanes:
            await lane.storage.load_settings()  # each queue's stored caps win over our own
        try:
            await self._resources.enter(self)
        except Exception:
            if self._owned:
                await self._client.aclose()
            raise
        self._lease = LeaseKeeper(BlockingStorage(sync_twin(self._client), self.storage.keys.name),
                                  loop, self.lease_ms, self._on_lease_lost, self._on_cancel_requested)
        self._lease.start()
        signals = self._install_signals(loop) if handle_signals else []
        self._started_at = time.time()
        maintenance = loop.create_task(self.maintenance.run())
        for lane in self.lanes:
            lane.acker.start()
        log.info("worker %s on %s %s: concurrency %d, lease %gs, tasks %s", self.id,
                 "queue" if len(self.lanes) == 1 else "queues", ", ".join(self.queues),
                 self.concurrency, self.lease, ", ".join(self.tasks))
        try:
            await self.fetcher.run(burst)
        finally:
            # The stop flag, not only the cancel, ends maintenance: on Python 3.11 a cancel
            # that lands while redis-py sends a command is lost (asyncio.wait_for swallows
            # it), and the task would go on rescuing after run() returned.
            self._stopping = True
            self._stop.set()
            self.maintenance.stop()
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
        self.slots.wake()

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
            for run in self.slots.attempts():
                assert isinstance(run, Running)
                run.signal(Interrupt.SHUTDOWN)
            return
        log.info("%s: finishing in-flight jobs (up to %gs)", signal.Signals(sig).name,
                 self.shutdown_timeout)
        self._stopping = True
        self._stop.set()
        self.slots.wake()

    # -- attempts ------------------------------------------------------------------------------
    def _launch(self, lane: Lane, fields: dict[bytes, bytes]) -> None:
        """Begin running one job just claimed on ``lane`` (by the fetcher or an acker)."""
        job = Job(lane.storage, fields.get(b"id", b"?").decode("utf-8", "replace"))._load(fields)
        job._loop = asyncio.get_running_loop()
        job._in_worker = True
        job.context = self._resources.value
        run = Running(job, lane.name, job.id, job.token or 0)
        if self.slots.add(run):
            # Claimed again while an older attempt still runs here: this worker was frozen
            # past its lease and the job was rescued. The older attempt lost its lease.
            self.counters["lease_lost"] += 1
        if self.hooks.active:
            self.hooks.claimed(job)
        timeout = job.timeout or (self.tasks[job.task].timeout if job.task in self.tasks else None)
        hard = time.monotonic() + (timeout or self.job_timeout) + self.cancel_grace + self.lease
        assert self._lease is not None
        self._lease.add(lane.storage.keys, job.id, job.token or 0, hard)
        task = job._loop.create_task(self._execute(lane, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handler_began(self, run: Running, timeout: float) -> None:
        """A sync handler's thread started it (called in that thread): its lease is renewed
        for ``timeout`` from now, not from when it was queued."""
        if self._lease is not None:
            self._lease.set_deadline(run.queue, run.job_id, run.token,
                                     time.monotonic() + timeout + self.cancel_grace + self.lease)

    async def _execute(self, lane: Lane, run: Running) -> None:
        try:
            await execute(self.context, lane.settler, run)
        except UNAVAILABLE as exc:
            # Redis unreachable at commit time for a whole lease: the lease will expire and
            # the job be rescued.
            log.warning("job %s: could not record its outcome: %s", run.job_id, exc)
        except Exception:
            log.exception("job %s: could not record its outcome", run.job_id)
        finally:
            # Only this attempt's entries: a newer attempt of the same job may be running.
            self.slots.remove(run)
            if self._lease is not None:
                self._lease.remove(run.queue, run.job_id, run.token)

    # -- signals from the lease keeper (run on the loop via call_soon_threadsafe) ----------
    def _on_lease_lost(self, queue: str, job_id: str, token: int) -> None:
        run = self.slots.get(queue, job_id, token)
        if isinstance(run, Running) and run.signal(Interrupt.LEASE_LOST):
            self.counters["lease_lost"] += 1

    def _on_cancel_requested(self, queue: str, job_id: str, token: int) -> None:
        run = self.slots.get(queue, job_id, token)
        if isinstance(run, Running):
            run.signal(Interrupt.CANCEL)

    # -- heartbeat and shutdown ----------------------------------------------------------------
    async def _beat(self, lane: Lane, ttl_ms: int) -> None:
        await lane.storage.heartbeats.beat(self.id, self._heartbeat(lane.name), ttl_ms)

    def _heartbeat(self, queue: str) -> bytes:
        host, pid = socket.gethostname(), os.getpid()
        return codec.dumps({
            "id": self.id, "queue": queue, "queues": self.queues, "host": host, "pid": pid,
            "concurrency": self.concurrency, "running": self.slots.running,
            "abandoned": self.threads.abandoned,
            "started_at": self._started_at, "loop_lag": round(self.loop_lag, 4),
            "counters": dict(self.counters),
        })

    async def _shutdown(self) -> None:
        self._stopping = True
        pending = {t for t in self._tasks if not t.done()}
        if pending and self.shutdown_timeout > 0:
            log.info("waiting up to %gs for %d job(s)", self.shutdown_timeout, len(pending))
            await asyncio.wait(pending, timeout=self.shutdown_timeout)
        for run in self.slots.attempts():
            assert isinstance(run, Running)
            run.signal(Interrupt.SHUTDOWN)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.cancel_grace + 10)
        for lane in self.lanes:
            await lane.acker.stop()
        await self.fetcher.hand_back_unresolved()
        if self._lease is not None:
            self._lease.stop()
            await asyncio.to_thread(self._lease.join, 5)
        for lane in self.lanes:
            with contextlib.suppress(Exception):
                await lane.storage.heartbeats.forget(self.id)
        await self._resources.exit()
        self.threads.shutdown()
        await self.processes.shutdown()
        if self._owned:
            await self._client.aclose()
        log.info("worker %s stopped: %s", self.id, dict(self.counters))
