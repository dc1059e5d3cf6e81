"""What every scenario shares: its sizes (short for CI, full for ``make chaos``), an
environment that owns a Redis server, a ledger and worker fleets and always tears them
down, and waiting helpers that poll with deadlines instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shunter import Queue
from shunter.storage import UNAVAILABLE

from .checker import Report
from .ledger import Ledger
from .proxy import Fault, Proxy
from .redis_server import RedisServer
from .workers import Fleet, WorkerProcess

__all__ = ["FULL", "SHORT", "Env", "Profile", "drained", "in_flight", "percentile", "wait_for"]

#: Event streams are kept whole during a scenario: the checker reads every transition.
MAX_EVENTS = 10_000_000


@dataclass(frozen=True)
class Profile:
    """Sizes of every scenario. ``lease`` is the workers' lease in seconds."""

    name: str
    lease: float
    storm_jobs: int
    storm_workers: int
    storm_kill_every: float
    storm_rate: float  #: jobs/s offered by the producer (0: as fast as it can)
    rolling_jobs: int
    rolling_restarts: int
    block_jobs: int  #: per kind (sleep, spin)
    stop_rounds: int
    stop_jobs: int
    reclaim_rounds: int  #: SIGSTOP rounds where the frozen worker claims its jobs again
    reclaim_jobs: int  #: jobs in flight in each of those rounds
    restart_jobs: int
    restart_crashes: int
    restart_outage: float
    oom_headroom: int  #: bytes of maxmemory above the idle server's usage
    poison_each: int
    retry_jobs: int
    retry_backoff: float
    model_examples: int
    model_steps: int
    net_jobs: int  #: jobs of the network scenarios
    net_rounds: int  #: rounds of resets, stalls and partitions
    reply_drops: int  #: claim replies and complete replies lost
    restart_long_jobs: int  #: jobs in flight at each crash of the long-handler restart
    group_jobs: int  #: jobs of the group-limits kill scenario
    group_count: int  #: groups they are spread over
    group_workers: int
    group_kill_every: float  #: seconds between two SIGKILLs of a worker holding group slots


SHORT = Profile(
    name="short", lease=1.5,
    storm_jobs=4000, storm_workers=3, storm_kill_every=1.5, storm_rate=500,
    rolling_jobs=400, rolling_restarts=3,
    block_jobs=1, stop_rounds=1, stop_jobs=40, reclaim_rounds=1, reclaim_jobs=2,
    restart_jobs=1500, restart_crashes=1, restart_outage=0.5,
    oom_headroom=3 << 20, poison_each=1,
    retry_jobs=600, retry_backoff=2.0,
    model_examples=150, model_steps=40,
    net_jobs=1500, net_rounds=1, reply_drops=3, restart_long_jobs=8,
    group_jobs=400, group_count=5, group_workers=3, group_kill_every=1.0,
)

FULL = Profile(
    name="full", lease=2.0,
    storm_jobs=100_000, storm_workers=4, storm_kill_every=3.0, storm_rate=0,
    rolling_jobs=10_000, rolling_restarts=8,
    block_jobs=3, stop_rounds=3, stop_jobs=400, reclaim_rounds=4, reclaim_jobs=3,
    restart_jobs=30_000, restart_crashes=3, restart_outage=2.0,
    oom_headroom=24 << 20, poison_each=3,
    retry_jobs=10_000, retry_backoff=4.0,
    model_examples=1500, model_steps=60,
    net_jobs=8_000, net_rounds=3, reply_drops=20, restart_long_jobs=24,
    group_jobs=6_000, group_count=12, group_workers=4, group_kill_every=2.0,
)


class Env:
    """One scenario's world. ``async with Env(...) as env`` starts a Redis of its own and
    opens the ledger; leaving stops every worker process and the server, by pid."""

    def __init__(self, name: str, profile: Profile, root: Path, *, appendfsync: str | None = None,
                 maxmemory: int = 0) -> None:
        self.name = name
        self.profile = profile
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.server = RedisServer(appendfsync=appendfsync, maxmemory=maxmemory)
        self.ledger: Ledger | None = None
        self.fleets: list[Fleet] = []
        self.queues: list[Queue] = []
        self.proxies: list[Proxy] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def led(self) -> Ledger:
        assert self.ledger is not None
        return self.ledger

    async def __aenter__(self) -> Env:
        await asyncio.to_thread(self.server.start)
        db = self.dir / "ledger.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        self.ledger = Ledger(db)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            for fleet in self.fleets:
                await asyncio.to_thread(fleet.stop_all, 20)
            for queue in self.queues:
                with contextlib.suppress(Exception):
                    await queue.close()
            for proxy in self.proxies:
                await asyncio.to_thread(proxy.close)
        finally:
            await asyncio.to_thread(self.server.cleanup)
            if self.ledger is not None:
                self.ledger.close()

    def fleet(self, queue: str, *, concurrency: int = 8, mode: str = "normal",
              lease: float | None = None, env: dict[str, str] | None = None,
              **options: object) -> Fleet:
        fleet = Fleet(queue, self.url, self.led, self.dir, lease or self.profile.lease,
                      concurrency, mode, dict(options), dict(env or {}))
        self.fleets.append(fleet)
        return fleet

    def queue(self, name: str, url: str | None = None) -> Queue:
        queue = Queue(name, url or self.url, max_events=MAX_EVENTS)
        self.queues.append(queue)
        return queue

    async def spawn(self, fleet: Fleet, n: int) -> None:
        await asyncio.to_thread(fleet.spawn, n)

    def proxy(self, pid: int | None, name: str) -> Proxy:
        """A TCP proxy to this env's server whose faults are recorded in the ledger with
        ``pid``: the process behind it, so the checker can tie a lost lease to them."""
        proxy = Proxy("127.0.0.1", self.server.port, name=name).start()
        self.proxies.append(proxy)
        self.record_faults(proxy, pid)
        return proxy

    def record_faults(self, proxy: Proxy, pid: int | None) -> None:
        ledger: list[Ledger] = []  # the proxy's thread writes with a connection of its own

        def record(fault: Fault) -> None:
            if not ledger:
                ledger.append(Ledger(self.led.path))
            ledger[0].fault(fault.kind, pid, fault.start, fault.end, f"{proxy.name}: {fault.detail}")

        proxy.on_fault = record

    async def spawn_proxied(self, fleet: Fleet, n: int) -> list[tuple[WorkerProcess, Proxy]]:
        """Start ``n`` workers, each behind a proxy of its own (its ``--redis``), so a
        network fault hits exactly one process."""
        out = []
        for _ in range(n):
            proxy = self.proxy(None, f"proxy-{fleet.queue}-{len(fleet.procs)}")
            (proc,) = await asyncio.to_thread(fleet.spawn, 1, True, 60.0, proxy.url)
            self.record_faults(proxy, proc.pid)
            out.append((proc, proxy))
        return out


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.05,
                   what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; raise TimeoutError at the deadline.
    A server that is briefly unreachable counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*UNAVAILABLE):
            if value := await check():
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)


async def drained(queue: Queue, timeout: float) -> bool:
    """Wait until nothing is waiting, scheduled or active (quiescence)."""
    async def idle() -> bool:
        c = await queue.counts()
        return c["waiting"] + c["scheduled"] + c["active"] == 0

    try:
        await wait_for(idle, timeout, 0.1, "quiescence")
    except TimeoutError:
        return False
    return True


def in_flight(env: Env, queue: str) -> list[tuple[str, int, int]]:
    """(job, token, pid) of every handler running now (started, not ended), per the ledger."""
    started: dict[tuple[str, int], int] = {}
    for e in env.led.executions(queue):
        if e.phase == "start":
            started[(e.job, e.token)] = e.pid
        else:
            started.pop((e.job, e.token), None)
    return [(j, t, pid) for (j, t), pid in started.items()]


def drain_check(report: Report, ok: bool, timeout: float) -> None:
    report.expect("drained in time", "yes" if ok else "no", ok, f"deadline {timeout:.0f}s")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
