"""Scenarios 1-4 of RELIABILITY.md (worker faults) and the registry of all scenarios.

Each scenario is ``async def (root, profile) -> list[Report]``: it builds its own world
(:class:`faults.harness.Env`), injects its faults, drains, and runs the generic checker
plus its own checks. Control variants are registered with ``expect_fail=True``: the suite
passes only if the checker reports a violation for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from shunter.errors import JobNotInState, LeaseLost
from shunter.storage.scripts import SCRIPTS

from .checker import Analysis, Report, analyse
from .harness import Env, Profile, drain_check, drained, in_flight, percentile, wait_for
from .producer import Producer
from .worker_main import ATTEMPTS_BY_JOB_ENV, RENEW_ON_LOOP_ENV

__all__ = ["SCENARIOS", "Scenario"]

Run = Callable[[Path, Profile], Awaitable[list[Report]]]


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Run
    expect_fail: bool = False  #: a control variant: it must be caught


def orphan_latencies(a: Analysis, kills: dict[int, float]) -> tuple[list[float], int]:
    """Seconds from the SIGKILL of the worker that held an attempt to the next claim of
    that job, for every attempt rescued after its worker was killed; and how many rescued
    attempts could not be tied to a kill (claimed, but killed before the handler began)."""
    pid_of = {(job, tok): pid for job, runs in a.starts.items() for tok, _, pid, _ in runs}
    out, untied = [], 0
    for job, trace in a.traces.items():
        events = trace.events
        for i, (_, ev, state, tok) in enumerate(events):
            if ev != "rescue" or state != "waiting":
                continue
            killed = kills.get(pid_of.get((job, tok), -1))
            reclaim = next((ms for ms, e, _, _ in events[i + 1:] if e == "claim"), None)
            if killed is None:
                untied += 1
            elif reclaim is not None:
                out.append(reclaim / 1000 - killed)
    return out, untied


async def kill_storm(root: Path, p: Profile) -> list[Report]:
    """1. Many jobs, several workers, SIGKILL a random worker every few seconds (and start
    a replacement, as a supervisor would); every orphan re-runs within lease + stall
    check + 1 s."""
    rep = Report("1 kill -9 storm")
    rng = random.Random(1)
    async with Env("kill-storm", p, root) as env:
        queue = env.queue("storm")
        fleet = env.fleet("storm", concurrency=32)
        await env.spawn(fleet, p.storm_workers)
        producer = Producer(queue, env.led, prefix="s")
        started = time.monotonic()
        # a steady load near capacity, so the storm lasts many kill periods
        produce = asyncio.create_task(producer.run(p.storm_jobs, batch=20, rate=p.storm_rate,
                                                   data=lambda n: {"n": n, "ms": n % 100}))
        kills: dict[int, float] = {}
        while not produce.done() or (await queue.counts())["waiting"] > 0:
            await asyncio.sleep(p.storm_kill_every)  # pacing of the storm, not a wait
            # only a worker that started handlers lately: a kill of an idle one orphans
            # nothing (a replacement still starting up, on a loaded machine), and a short
            # storm could then end without a single orphan (seen once in CI); no busy
            # worker this round: the next round tries again
            busy = env.led.recent_pids("storm")
            candidates = [w for w in fleet.alive() if w.pid in busy]
            if candidates:
                victim = rng.choice(candidates)
                kills[victim.pid] = fleet.kill(victim, signal.SIGKILL)
                await asyncio.to_thread(fleet.spawn, 1, False)
            if time.monotonic() - started > 3600:
                break
        await produce
        timeout = 60 + p.lease * 4
        ok = await drained(queue, timeout)
        elapsed = time.monotonic() - started
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "storm", env.led)
        bound = p.lease * 1.5 + 1.0
        latencies, untied = orphan_latencies(a, kills)
        worst = max(latencies, default=0.0)
        rep.add("workers SIGKILLed", len(kills))
        rep.add("throughput (jobs/s, with kills)", round(len(a.final) / elapsed))
        rep.expect("orphans re-run within lease + stall check + 1 s", f"{len(latencies)} orphans",
                   worst <= bound, f"worst {worst:.2f}s, p50 {percentile(latencies, .5):.2f}s, "
                   f"bound {bound:.2f}s; {untied} claimed-not-started orphans")
        rep.expect("orphans found", len(latencies) + untied, len(latencies) + untied > 0,
                   "the storm must have orphaned work for the check above to mean anything")
    return [rep]


async def running_on(env: Env, queue: str, pid: int) -> bool:
    """True when worker ``pid`` has a handler running now (started, not ended)."""
    return any(p == pid for *_, p in in_flight(env, queue))


async def rolling_sigterm(root: Path, p: Profile) -> list[Report]:
    """2. Rolling SIGTERM restarts: 0 lost AND 0 duplicated; no attempt consumed by shutdown.
    Part b forces hand-backs (a shutdown timeout shorter than the jobs) and checks that a
    released job re-runs with the same attempt number."""
    rep = Report("2 rolling SIGTERM restarts")
    back = Report("2b SIGTERM hand-back (shutdown timeout < job)")
    async with Env("rolling-sigterm", p, root) as env:
        queue = env.queue("rolling")
        fleet = env.fleet("rolling", concurrency=32, shutdown_timeout=30)
        await env.spawn(fleet, 2)
        producer = Producer(queue, env.led, prefix="r")
        period = 1.5  # one restart per period while the producer runs
        produce = asyncio.create_task(producer.run(
            p.rolling_jobs, batch=20, rate=p.rolling_jobs / (p.rolling_restarts * period + 1),
            data=lambda n: {"n": n, "ms": 10 + n % 100}))
        exits = []
        terms: dict[int, float] = {}
        t0 = time.monotonic()
        for i in range(p.rolling_restarts):
            old = fleet.alive()[0]
            await env.spawn(fleet, 1)  # the replacement is up before the old one goes
            with contextlib.suppress(TimeoutError):  # SIGTERM it while it has work in hand
                await wait_for(lambda pid=old.pid: running_on(env, "rolling", pid), 10, 0.005)
            terms[old.pid] = fleet.kill(old, signal.SIGTERM)
            exited = await asyncio.to_thread(old.wait, 40)
            exits.append((exited, old.proc.returncode if old.proc else None))
            await asyncio.sleep(max(period * (i + 1) - (time.monotonic() - t0), 0))  # pacing
        await produce
        timeout = 60 + p.rolling_jobs / 100
        ok = await drained(queue, timeout)
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "rolling", env.led, allow_duplicates=False)
        clean = all(done and code == 0 for done, code in exits)
        rep.expect("SIGTERMed workers exited by themselves", f"{len(exits)} restarts", clean,
                   ", ".join(f"rc={c}" for _, c in exits))
        attempts = [att for runs in a.starts.values() for _, att, _, _ in runs]
        rep.expect("attempts consumed by shutdown", sum(1 for x in attempts if x > 1),
                   all(x == 1 for x in attempts), "every execution is attempt 1")
        ends = {(e.job, e.token): e.ts for e in env.led.executions("rolling") if e.phase == "end"}
        finishing = sum(1 for job, runs in a.starts.items() for tok, _, pid, ts in runs
                        if pid in terms and ts < terms[pid] < ends.get((job, tok), 0))
        rep.expect("jobs in flight at SIGTERM that finished", finishing, finishing > 0,
                   "the stopping workers finished them: the restarts hit work in progress")
        releases = sum(1 for t in a.traces.values() for _, ev, _, _ in t.events if ev == "release")
        rep.add("jobs handed back", releases, None, "jobs were short enough to finish")

        # b: jobs longer than the shutdown timeout are handed back, attempt not consumed
        q2 = env.queue("handback")
        short = env.fleet("handback", concurrency=4, shutdown_timeout=0.2, cancel_grace=2)
        await env.spawn(short, 2)
        prod2 = Producer(q2, env.led, prefix="h")
        await prod2.run(8, batch=8, data=lambda n: {"n": n, "ms": 1500})
        for _ in range(2):
            old = short.alive()[0]
            await wait_for(lambda pid=old.pid: running_on(env, "handback", pid), 30,
                           what="hand-back jobs running")
            await env.spawn(short, 1)
            short.kill(old, signal.SIGTERM)
            await asyncio.to_thread(old.wait, 30)
        ok = await drained(q2, 60)
        drain_check(back, ok, 60)
        b = analyse(back, env.url, "handback", env.led)
        released = [(job, tok) for job, t in b.traces.items() for _, ev, _, tok in t.events
                    if ev == "release"]
        att = {(job, tok): at for job, runs in b.starts.items() for tok, at, _, _ in runs}
        same = [(job, tok) for job, tok in released
                if any(att.get((job, t2)) == att.get((job, tok)) for t2 in range(tok + 1, tok + 4))]
        back.expect("jobs handed back on SIGTERM", len(released), bool(released))
        back.expect("re-ran with the same attempt number", f"{len(same)}/{len(released)}",
                    len(same) == len(released), "shutdown does not consume an attempt")
    return [rep, back]


async def blocked_loop(root: Path, p: Profile, *, on_loop: bool = False) -> list[Report]:
    """3. Handlers that time.sleep or spin the CPU on the event loop for 3x the lease keep
    their lease (renewal runs in a thread). ``on_loop``: the control variant, renewal
    forced onto the loop, which must lose leases and be caught."""
    name = "3c blocked loop CONTROL (renewal on the loop)" if on_loop else "3 blocked event loop"
    rep = Report(name)
    async with Env("blocked-loop-control" if on_loop else "blocked-loop", p, root) as env:
        queue = env.queue("blocked")
        extra = {RENEW_ON_LOOP_ENV: "1"} if on_loop else {}
        # three single-slot workers: two block, the idle one rescues whatever it may
        fleet = env.fleet("blocked", concurrency=1, env=extra, max_stalls=1)
        await env.spawn(fleet, 3)
        producer = Producer(queue, env.led, prefix="b")
        block = p.lease * 3
        for task in ("block_sleep", "block_spin"):
            await producer.run(p.block_jobs, batch=10, task=task,
                               data=lambda n: {"n": n, "s": block}, max_attempts=1)
        timeout = block * (p.block_jobs * 2 + 2) + 30
        ok = await drained(queue, timeout)
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "blocked", env.led, allow_duplicates=False)
        rescues = sum(1 for t in a.traces.values() for _, ev, _, _ in t.events if ev == "rescue")
        rep.expect("leases lost (rescues)", rescues, rescues == 0,
                   f"blocks of {block:g}s, lease {p.lease:g}s")
        done = sum(1 for s in a.final.values() if s == "completed")
        rep.expect("completed", f"{done}/{len(a.final)}", done == len(a.final) == 2 * p.block_jobs)
    return [rep]


async def blocked_loop_control(root: Path, p: Profile) -> list[Report]:
    return await blocked_loop(root, p, on_loop=True)


async def sigstop(root: Path, p: Profile) -> list[Report]:
    """4. SIGSTOP a worker for 3x the lease, then SIGCONT: its jobs re-run elsewhere and
    its stale completions are refused by the fencing token."""
    rep = Report("4 SIGSTOP / SIGCONT")
    async with Env("sigstop", p, root) as env:
        queue = env.queue("stop")
        fleet = env.fleet("stop", concurrency=4, max_stalls=3)
        await env.spawn(fleet, 3)
        producer = Producer(queue, env.led, prefix="p")
        per_round = max(p.stop_jobs // p.stop_rounds, 8)
        stale: list[tuple[str, int, int]] = []  # (job, token, pid) in flight when stopped
        for _ in range(p.stop_rounds):
            await producer.run(per_round, batch=per_round,
                               data=lambda n: {"n": n, "ms": int(p.lease * 400)})

            async def running() -> list[tuple[str, int, int]]:
                return in_flight(env, "stop")

            now = await wait_for(running, 30, 0.01, "jobs in flight")
            victim = next(w for w in fleet.alive() if w.pid == now[0][2])
            fleet.kill(victim, signal.SIGSTOP)
            stale += [r for r in in_flight(env, "stop") if r[2] == victim.pid]
            await asyncio.sleep(p.lease * 3)  # the fault itself: frozen for 3x the lease
            fleet.kill(victim, signal.SIGCONT)

            async def settled() -> bool:  # the woken worker's stale handlers ended too
                return not in_flight(env, "stop") and await drained(queue, 0)

            with contextlib.suppress(TimeoutError):
                await wait_for(settled, 60, 0.05, "the round settled")
        ok = await drained(queue, 60)
        drain_check(rep, ok, 60)
        a = analyse(rep, env.url, "stop", env.led)
        rerun = [(j, t) for j, t, pid in stale
                 if any(t2 > t and pid2 != pid for t2, _, pid2, _ in a.starts.get(j, []))]
        rep.expect("frozen attempts re-run elsewhere", f"{len(rerun)}/{len(stale)}",
                   bool(stale) and len(rerun) == len(stale))
        refused = [c for c in env.led.commits("stop") if not c.accepted]
        stale_pids = {pid for *_, pid in stale}
        rep.add("stale commits refused by the worker's fence", len(refused), None,
                f"{sum(1 for c in refused if c.pid in stale_pids)} from the frozen worker; the rest "
                "saw the lost lease first and did not send")
        # Replay every stale attempt's completion now, as a zombie would: all refused.
        accepted = 0
        for job, token, _ in stale:
            try:
                await queue.storage.complete(job, token, b'"zombie"')
                accepted += 1
            except (LeaseLost, JobNotInState):
                pass
        rep.expect("zombie completions with stale tokens accepted", accepted, accepted == 0,
                   f"{len(stale)} replayed")
    return [rep]


#: Issue 8's reproduction: lease 1 s, a 4 s async job, the worker frozen for 2 s.
RECLAIM_LEASE = 1.0
#: How long the woken worker's first renewal is held back in the "claim first" rounds.
RENEW_HOLD = RECLAIM_LEASE / 4


async def sigstop_reclaim(root: Path, p: Profile, *, control: bool = False) -> list[Report]:
    """4b. The frozen worker claims the same job again when it wakes (issue 8): a worker
    with lease 1 s and twice as many slots as jobs runs 4 s async jobs, is SIGSTOPped for
    2 s while another process (the harness) rescues them, and on SIGCONT claims them again
    with its free slots. The stale attempts must be interrupted as soon as the worker
    wakes, the new ones must keep their leases, and each job completes once, never failed.
    ``control``: the worker keys attempts by job id (the bug brought back): caught.

    On waking, the worker's claim and its lease keeper's renewal (refused: the job was
    rescued) race. Even rounds hold that renewal back for a moment at the worker's proxy,
    so the claim lands first, the order the bug needs (a control that is caught only when
    the race goes one way would be caught by chance); odd rounds leave the race alone."""
    name = ("4c SIGSTOP CONTROL (attempts keyed by job id)" if control
            else "4b SIGSTOP, re-claimed by the same worker")
    rep = Report(name)
    lease, pause, run_s = RECLAIM_LEASE, 2 * RECLAIM_LEASE, 4 * RECLAIM_LEASE
    per_round = p.reclaim_jobs
    async with Env("sigstop-control" if control else "sigstop-reclaim", p, root) as env:
        queue = env.queue("reclaim")
        extra = {ATTEMPTS_BY_JOB_ENV: "1"} if control else {}
        # a free slot per job on waking (issue 8: one job, concurrency 2); max_stalls 1
        fleet = env.fleet("reclaim", concurrency=2 * per_round, lease=lease, env=extra)
        ((worker, proxy),) = await env.spawn_proxied(fleet, 1)
        renew = SCRIPTS["renew"].sha.encode()
        producer = Producer(queue, env.led, prefix="s")
        stale: list[tuple[str, int, float]] = []  # (job, token, SIGCONT time)
        rescued_while_stopped = 0
        claim_first = 0
        for round_no in range(p.reclaim_rounds):
            jobs = {f"s{producer.next_n + k}" for k in range(per_round)}
            await producer.run(per_round, batch=per_round,
                               data=lambda n: {"n": n, "ms": int(run_s * 1000)})

            async def started(jobs: set[str] = jobs) -> list[tuple[str, int, int]]:
                now = [r for r in in_flight(env, "reclaim") if r[0] in jobs]
                return now if len(now) == len(jobs) else []

            running = await wait_for(started, 30, 0.01, "the round's jobs running")
            fleet.kill(worker, signal.SIGSTOP)
            frozen_at = time.monotonic()
            while time.monotonic() - frozen_at < pause:  # another process rescues meanwhile
                await queue.storage.rescue(1, lock_ms=0)
                await asyncio.sleep(lease / 4)  # pacing of the rescuer
            rescued_while_stopped += sum([getattr(await queue.get_job(j), "state", None) == "waiting"
                                          for j in jobs])
            if round_no % 2 == 0:
                proxy.hold(renew, RENEW_HOLD)  # the claim lands before the refused renewal
                claim_first += 1
            woke = fleet.kill(worker, signal.SIGCONT)
            stale += [(job, tok, woke) for job, tok, _ in running]

            async def settled() -> bool:  # rounds apart: every attempt of this one ended
                return not in_flight(env, "reclaim") and await drained(queue, 0)

            with contextlib.suppress(TimeoutError):
                await wait_for(settled, run_s * 3, 0.05, "the round settled")
        timeout = 30 + run_s * 2
        ok = await drained(queue, timeout)
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "reclaim", env.led)
        total = len(stale)
        rep.expect("rescued by another process while the worker was stopped",
                   f"{rescued_while_stopped}/{total}", rescued_while_stopped == total,
                   f"frozen {pause:g}s, lease {lease:g}s, handlers {run_s:g}s")
        ends = {(e.job, e.token): e for e in a.executions if e.phase == "end"}
        reclaimed = sum(1 for job, tok, _ in stale
                        if any(t2 > tok and pid2 == worker.pid for t2, _, pid2, _ in a.starts.get(job, [])))
        rep.expect("re-claimed by the same worker on waking", f"{reclaimed}/{total}", reclaimed > 0,
                   f"the path of issue 8 was exercised; in {claim_first} of {p.reclaim_rounds} "
                   f"rounds the first renewal was held {RENEW_HOLD:g}s so the claim came first")
        bound = lease / 3 + 0.5  # the first renewal after waking (held or not) is refused
        late, took = [], []
        for job, tok, woke in stale:
            end = ends.get((job, tok))
            if end is not None:
                took.append(end.ts - woke)
            if end is None or end.outcome != "CancelledError" or end.ts - woke > bound:
                late.append((job, tok, end.outcome if end else "still running",
                             round(end.ts - woke, 2) if end else None))
        rep.expect("stale attempts interrupted on waking", f"{total - len(late)}/{total}",
                   not late, f"handler cancelled within {bound:.2f}s of SIGCONT (worst "
                   f"{max(took, default=0):.2f}s)" + (f"; not: {late[:3]}" if late else ""))
        done = sum(1 for job, *_ in stale if a.final.get(job) == "completed")
        stalls = [getattr(await queue.get_job(job), "stalls", None) for job, *_ in stale]  # None: gone
        rep.expect("completed, once, with one stall", f"{done}/{total}",
                   done == total and all(n == 1 for n in stalls), f"stalls {stalls}")
    return [rep]


async def sigstop_control(root: Path, p: Profile) -> list[Report]:
    return await sigstop_reclaim(root, p, control=True)


def _registry() -> list[Scenario]:
    from .model import model_scenario
    from .scenarios_groups import group_kill
    from .scenarios_net import network, network_replies
    from .scenarios_server import (
        oom,
        poison_pills,
        redis_restart,
        redis_restart_long,
        retry_storm,
        retry_storm_control,
    )

    return [
        Scenario("kill-storm", kill_storm),
        Scenario("rolling-sigterm", rolling_sigterm),
        Scenario("blocked-loop", blocked_loop),
        Scenario("blocked-loop-control", blocked_loop_control, expect_fail=True),
        Scenario("sigstop", sigstop),
        Scenario("sigstop-reclaim", sigstop_reclaim),
        Scenario("sigstop-control", sigstop_control, expect_fail=True),
        Scenario("redis-restart", redis_restart),
        Scenario("redis-restart-long", redis_restart_long),
        Scenario("oom", oom),
        Scenario("poison-pills", poison_pills),
        Scenario("retry-storm", retry_storm),
        Scenario("retry-storm-control", retry_storm_control, expect_fail=True),
        Scenario("network", network),
        Scenario("network-replies", network_replies),
        Scenario("model", model_scenario),
        Scenario("group-kill", group_kill),
    ]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in _registry()}
