"""The fault suite, short version: every scenario of RELIABILITY.md on every change, with
real redis-server processes (own ports) and real worker processes. The control variants
must be caught, proving the checks can fail. Full sizes: ``make chaos``.

Also the regression tests of the engine bugs the suite found (see docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from faults.checker import Report
from faults.harness import SHORT
from faults.model import run_model
from faults.redis_server import RedisServer
from faults.scenarios import SCENARIOS
from shunter.producer import build_spec
from shunter.storage import Storage

from .conftest import eventually

pytestmark = pytest.mark.timeout(180)


def failed(reports: list[Report]) -> list[str]:
    return [f"{r.name}: {c.metric} = {c.value} ({c.note})" for r in reports for c in r.violations]


async def run(name: str, tmp_path: Path) -> list[Report]:
    return await SCENARIOS[name].run(tmp_path, SHORT)


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if not s.expect_fail])
async def test_scenario_holds(name: str, tmp_path: Path) -> None:
    reports = await run(name, tmp_path)
    assert reports and not failed(reports), failed(reports)


async def test_blocked_loop_control_is_caught(tmp_path: Path) -> None:
    """Renewal forced onto the event loop: the blocked handlers lose their leases, run
    twice and end failed, and the checker says so."""
    metrics = {c.metric for r in await run("blocked-loop-control", tmp_path) for c in r.violations}
    assert {"duplicated", "leases lost (rescues)"} <= metrics, metrics


async def test_retry_storm_control_is_caught(tmp_path: Path) -> None:
    """Without jitter the retries come back as one wave, and the spread check fails."""
    metrics = {c.metric for r in await run("retry-storm-control", tmp_path) for c in r.violations}
    assert metrics == {"retry wave widened by jitter (s)"}, metrics


class Unfenced(Storage):
    """A broken storage layer: completes with whatever token the job has now."""

    __slots__ = ()

    async def complete(self, job_id: str, token: int, result: bytes) -> None:
        current = int(await self.client.hget(self.keys.job(job_id), "token") or 0)
        await super().complete(job_id, current, result)


def test_model_catches_a_storage_that_ignores_the_fence() -> None:
    with RedisServer() as server, pytest.raises(Exception) as caught:
        run_model(server.url, 150, 40, Unfenced)
    assert "stale token" in repr(caught.value) or "sub-exception" in str(caught.value)


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
