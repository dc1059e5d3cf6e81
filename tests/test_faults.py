"""The fault suite, short version: every scenario of RELIABILITY.md on every change, with
real redis-server processes (own ports) and real worker processes. The control variants
must be caught, proving the checks can fail. Full sizes: ``make chaos``.

Also the regression tests of the engine bugs the suite found (see docs/reliability.md).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from faults.checker import (
    Fault,
    JobTrace,
    Report,
    concurrent_runs,
    explain_rescues,
    worker_pid,
)
from faults.harness import SHORT
from faults.ledger import Execution, WorkerInfo
from faults.model import run_model
from faults.redis_server import RedisServer
from faults.scenarios import SCENARIOS
from shunter.producer import build_spec
from shunter.storage import Storage

from .conftest import eventually

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


def failed(reports: list[Report]) -> list[str]:
    return [f"{r.name}: {c.metric} = {c.value} ({c.note})" for r in reports for c in r.violations]


async def run(name: str, tmp_path: Path) -> list[Report]:
    return await SCENARIOS[name].run(tmp_path, SHORT)


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if not s.expect_fail])
async def test_scenario_holds(name: str, tmp_path: Path) -> None:
    reports = await run(name, tmp_path)
    assert reports and not failed(reports), failed(reports)


async def caught(name: str, tmp_path: Path, required: set[str],
                 optional: frozenset[str] = frozenset()) -> None:
    """A control must fail for the reason it exists, and only for it: every violation
    (each a leaf: one failed check) is one of the expected checks, the ones that always
    follow from the bug are all there, and the scenario did not crash (a crash proves
    nothing)."""
    reports = await run(name, tmp_path)
    errors = [r.error for r in reports if r.error]
    assert not errors, errors
    metrics = {c.metric for r in reports for c in r.violations}
    assert required <= metrics, (required - metrics, failed(reports))
    assert metrics <= required | optional, (metrics - required - optional, failed(reports))


async def test_blocked_loop_control_is_caught(tmp_path: Path) -> None:
    """Renewal forced onto the event loop: the blocked handlers lose their leases with no
    fault to explain it, run twice (each run after its lease was gone) and end failed
    although they returned, and the checker says so."""
    await caught("blocked-loop-control", tmp_path, {
        "rescues explained by a fault", "duplicated", "leases lost (rescues)", "completed",
        "rescued attempts stopped in time", "succeeded jobs that ended failed"})


async def test_sigstop_control_is_caught(tmp_path: Path) -> None:
    """Issue 8 brought back (attempts keyed by job id): the frozen worker claims its jobs
    again on waking (its first renewal held back, so the claim comes first) and the stale
    attempts run on beside the new ones; the end of each stale one drops the new one's
    lease, which runs out with no fault to explain it; the jobs end failed (stalls 2)
    although every handler returned."""
    await caught("sigstop-control", tmp_path, {
        "rescues explained by a fault", "rescued attempts stopped in time",
        "concurrent executions in one worker", "stale attempts interrupted on waking",
        "succeeded jobs that ended failed", "completed, once, with one stall"})


async def test_retry_storm_control_is_caught(tmp_path: Path) -> None:
    """Without jitter the retries come back as one wave, and the spread check fails."""
    await caught("retry-storm-control", tmp_path, {"retry wave widened by jitter (s)"})


# -- the checker's own rules, on made-up histories ---------------------------------------------

LEASE = 1.0
T0 = 1_000_000.0  # wall-clock seconds of the made-up histories


def trace(*events: tuple[float, str, str, int], workers: dict[int, str] | None = None) -> JobTrace:
    return JobTrace([(int(t * 1000), ev, state, tok) for t, ev, state, tok in events], workers or {})


def explain(faults: list[Fault], rescue_at: float, claim_at: float = T0, worker: str = "faults-7") -> bool:
    traces = {"j": trace((claim_at, "claim", "active", 1), (rescue_at, "rescue", "waiting", 1),
                         workers={1: worker} if worker else None)}
    workers = {pid: WorkerInfo(pid, "q", f"faults-{pid}", LEASE, 2, T0) for pid in (7, 8)}
    rescues = explain_rescues(traces, {}, faults, workers, "q")
    return ("j", 1) in rescues.explained


@pytest.mark.parametrize(("faults", "rescue_at", "ok"), [
    ([], T0 + 2, False),  # a lease that ran out with no fault: a worker bug
    ([Fault("SIGSTOP", 7, T0 + 1, T0 + 3)], T0 + 2, True),  # while its worker was stopped
    ([Fault("SIGSTOP", 8, T0 + 1, T0 + 3)], T0 + 2, False),  # another worker was stopped
    ([Fault("redis down", None, T0 + 1, T0 + 3)], T0 + 3.1, True),  # every process
    ([Fault("SIGKILL", 7, T0 + 1, T0 + 1)], T0 + 1 + 1.5 * LEASE + 0.9, True),  # within the slack
    ([Fault("SIGKILL", 7, T0 + 1, T0 + 1)], T0 + 1 + 1.5 * LEASE + 1.1, False),  # too late
    ([Fault("SIGSTOP", 7, T0 + 1.9, T0 + 4)], T0 + 2, False),  # too soon: the lease was fresh
    ([Fault("cut", 7, T0 + 0.5, T0 + 0.5)], T0 + 2, True),  # its proxy cut it off
    ([Fault("stall", 7, T0 + 0.5, T0 + 0.8)], T0 + 2, False),  # too short to lose a lease
    ([Fault("stall", 7, T0 + 0.5, T0 + 1.0)], T0 + 2, True),  # lease / 2: it may
    ([Fault("redis down", None, T0 + 1, T0 + 1.2)], T0 + 2, True),  # a reply lost in the crash
])
def test_a_rescue_is_explained_by_a_fault_on_that_attempt(faults: list[Fault], rescue_at: float,
                                                          ok: bool) -> None:
    assert explain(faults, rescue_at) is ok


def test_a_fault_that_ended_before_the_claim_explains_nothing() -> None:
    """Issue 8: the worker woke (SIGCONT at T0 + 3), claimed the job again a millisecond
    later, and that new attempt's lease was then dropped by the worker itself."""
    stop = Fault("SIGSTOP", 7, T0 + 1, T0 + 3)
    assert not explain([stop], T0 + 4, claim_at=T0 + 3.001)
    assert explain([stop], T0 + 4, claim_at=T0 + 2.9995)  # same ms as the end: benefit of doubt


def test_an_attempt_whose_worker_is_unknown_takes_any_worker_of_its_queue() -> None:
    assert explain([Fault("drop_reply", 8, T0, T0)], T0 + 1.5, worker="")
    assert not explain([Fault("drop_reply", 99, T0, T0)], T0 + 1.5, worker="")  # not of this queue


def test_worker_pid() -> None:
    assert worker_pid("faults-123") == 123
    assert worker_pid("host:123:abc") is None and worker_pid(None) is None


def execution(token: int, phase: str, ts: float, outcome: str | None = None, pid: int = 7) -> Execution:
    return Execution("j", token, 1, pid, phase, outcome, T0 + ts)


@pytest.mark.parametrize(("runs", "flagged"), [
    # the stale attempt went on to return while the new one ran: issue 8
    ([execution(1, "start", 0), execution(2, "start", 3), execution(1, "end", 4, "return"),
      execution(2, "end", 7, "return")], [("j", 1, 2, 7)]),
    # interrupted (cancelled) as the worker woke, even if it ended after the new start
    ([execution(1, "start", 0), execution(2, "start", 3), execution(1, "end", 3.01, "CancelledError"),
      execution(2, "end", 7, "return")], []),
    # one after the other
    ([execution(1, "start", 0), execution(1, "end", 1, "return"), execution(2, "start", 3)], []),
    # never ended while the next one ran
    ([execution(1, "start", 0), execution(2, "start", 3)], [("j", 1, 2, 7)]),
    # in two different workers: at-least-once across processes, not this check
    ([execution(1, "start", 0), execution(2, "start", 3, pid=8), execution(1, "end", 4, "return")], []),
])
def test_concurrent_executions_in_one_worker(runs: list[Execution], flagged: list[object]) -> None:
    assert concurrent_runs(runs) == flagged
    assert math.isfinite(T0)


class Unfenced(Storage):
    """A broken storage layer: completes with whatever token the job has now."""

    __slots__ = ()

    async def complete(self, job_id: str, token: int, result: bytes) -> None:
        current = int(await self.client.hget(self.keys.job(job_id), "token") or 0)
        await super().complete(job_id, current, result)


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def test_model_catches_a_storage_that_ignores_the_fence() -> None:
    """Hypothesis may report several distinct failures at once (an exception group): each
    one must be the fence check, a stale token's write that was accepted or refused for
    the wrong reason (the current token applied to a job that is no longer active)."""
    with RedisServer() as server, pytest.raises(BaseException) as raised:
        run_model(server.url, 150, 40, Unfenced, shrink=False)
    found = leaves(raised.value)
    assert found
    for leaf in found:
        assert isinstance(leaf, AssertionError), repr(leaf)
        assert "accepted with a stale token" in str(leaf) or "JobNotInState" in str(leaf), str(leaf)


# -- regressions of engine bugs found by the suite -------------------------------------------

@pytest.fixture
async def oom_storage() -> AsyncIterator[tuple[Storage, redis.asyncio.Redis]]:
    with RedisServer() as server:
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=False)
        try:
            yield Storage(client, "oom"), client
        finally:
            await client.aclose()


async def test_rescued_job_goes_back_to_its_place_in_line(storage: Storage) -> None:
    """Kill -9 storm: an orphan was queued behind the whole backlog, so it re-ran only
    when the backlog drained (9.6 s for a 2 s lease). It goes back where it was."""
    for n in range(5):
        await storage.enqueue(build_spec("t", n, job_id=f"j{n}", max_payload_bytes=1 << 20))
    claim = await storage.claim(1, 1, "dead-worker")
    assert claim.jobs[0][b"id"] == b"j0"
    await eventually(lambda: storage.rescue(max_stalls=5), 5, message="1 ms lease rescued")
    again = await storage.claim(1, 60_000, "live-worker")
    assert again.jobs[0][b"id"] == b"j0"  # not behind j1..j4


async def test_workers_settle_and_renew_when_memory_is_full(
        oom_storage: tuple[Storage, redis.asyncio.Redis]) -> None:
    """Out of memory: retry, fail, release and renew began with a write that may grow
    memory, so Redis refused them and leases lapsed. They write first with ZREM now."""
    storage, client = oom_storage
    for n in range(4):
        await storage.enqueue(build_spec("t", n, job_id=f"j{n}", max_payload_bytes=1 << 20))
    held = [(f[b"id"].decode(), int(f[b"token"])) for f in (await storage.claim(4, 60_000, "w")).jobs]
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", used)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        await storage.enqueue(build_spec("t", "x" * 100_000, job_id="refused", max_payload_bytes=1 << 20))
    assert await storage.renew(60_000, held) == [1, 1, 1, 1]
    (a, ta), (b, tb), (c, tc), (d, td) = held
    await storage.retry(a, ta, 0, b"{}")
    await storage.fail(b, tb, b"{}")
    await storage.release(c, tc)
    await storage.complete(d, td, b"1")
    assert not await client.exists(storage.keys.job("refused"))
