"""Scenarios 5-8 of RELIABILITY.md: Redis restarts under load and under handlers that
outlast the outage, Redis out of memory, poison pills, and a retry storm (with its
no-jitter control)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from shunter import Backoff
from shunter.storage import UNAVAILABLE

from .checker import Analysis, Report, analyse
from .harness import Env, Profile, drain_check, drained, in_flight, percentile, wait_for
from .producer import Producer

__all__ = ["oom", "poison_pills", "redis_restart", "redis_restart_long", "retry_storm",
           "retry_storm_control"]


async def crash_redis(env: Env, outage: float, detail: str) -> float:
    """SIGKILL the server, keep it down for ``outage`` s, start it again on the same port
    and dir (AOF recovery); recorded in the ledger as a fault on every process. Returns
    the measured outage."""
    t0 = time.monotonic()
    env.led.harness("redis_crash", env.server.pid, detail)
    await asyncio.to_thread(env.server.kill)
    await asyncio.sleep(outage)  # the outage itself
    await asyncio.to_thread(env.server.start)
    env.led.harness("redis_up", env.server.pid, detail)
    return time.monotonic() - t0


async def redis_restart(root: Path, p: Profile) -> list[Report]:
    """5. Crash Redis (SIGKILL) under load and restart it on the same port and dir, with
    AOF ``always`` (nothing acknowledged may be lost) and ``everysec`` (losses are the
    reported window). Workers and producer must recover by themselves."""
    return [await _restart(root, p, "always"), await _restart(root, p, "everysec")]


async def _restart(root: Path, p: Profile, fsync: str) -> Report:
    rep = Report(f"5{'a' if fsync == 'always' else 'b'} Redis crash + restart (AOF {fsync})")
    async with Env(f"redis-restart-{fsync}", p, root, appendfsync=fsync) as env:
        queue = env.queue("restart")
        fleet = env.fleet("restart", concurrency=16, max_stalls=5)
        await env.spawn(fleet, 3)
        producer = Producer(queue, env.led, prefix="x")
        duration = p.restart_crashes * (2.5 + p.restart_outage) + 1.5
        produce = asyncio.create_task(producer.run(
            p.restart_jobs, batch=20, rate=p.restart_jobs / duration,
            data=lambda n: {"n": n, "ms": n % 50}))
        outages = []
        for _ in range(p.restart_crashes):
            await asyncio.sleep(2.0)  # pacing: run under load before each crash
            outages.append(await crash_redis(env, p.restart_outage, fsync))
        await produce
        ok = await drained(queue, 120)
        drain_check(rep, ok, 120)
        a = analyse(rep, env.url, "restart", env.led, loss_window=fsync == "everysec")
        rep.add("crashes (outage s)", len(outages), None, ", ".join(f"{o:.1f}" for o in outages))
        rep.expect("worker processes that exited", len(fleet.unexpected_exits()),
                   not fleet.unexpected_exits() and len(fleet.alive()) == 3, "all recovered by themselves")
        s = producer.stats
        rep.expect("producer: enqueues refused", s.errors, s.errors == 0 and s.ok == p.restart_jobs,
                   f"{s.resent} calls re-sent with the same ids after the crash")
        if fsync == "everysec":
            lost = len(a.enqueues) - len([j for j in a.enqueues if j in a.final])
            rep.add("everysec loss window", f"{lost} jobs", None,
                    "acknowledged but not on disk when Redis was SIGKILLed (a process crash keeps "
                    "the page cache; a machine crash can lose up to ~1 s of writes)")
    return rep


async def redis_restart_long(root: Path, p: Profile) -> list[Report]:
    """5c. Redis crashes (AOF always) while every slot runs a handler longer than the
    outage: once for less than the lease (the leases survive if the keeper renews before
    they run out), once for 1.5 leases (every deadline passes in the server's clock).
    As soon as the server is back, another process (the harness, as another worker's
    maintenance would) rescues what expired, before the holders renew: their renewals are
    refused, the stale handlers must be interrupted, and the jobs re-run and complete
    once, never failed. (A holder that renews first keeps its job: renew extends a lease
    that ran out but was not rescued yet, which is safe: nobody else holds it.)"""
    rep = Report("5c Redis restart, handlers longer than the outage")
    lease = p.lease
    outages = (lease / 2, lease * 1.5)
    run_s = outages[-1] + lease / 2  # every handler outlasts the longest outage
    async with Env("redis-restart-long", p, root, appendfsync="always") as env:
        queue = env.queue("long")
        n = p.restart_long_jobs
        # free slots: a rescued job may be claimed again by the worker whose stale attempt
        # is still winding down (issue 8); max_stalls 1: one rescue each
        fleet = env.fleet("long", concurrency=n)
        await env.spawn(fleet, 2)
        producer = Producer(queue, env.led, prefix="l")
        rows = []
        for outage in outages:
            first = producer.next_n
            await producer.run(n, batch=n, data=lambda k: {"n": k, "ms": int(run_s * 1000)})
            wanted = {f"l{k}" for k in range(first, first + n)}

            async def running(wanted: set[str] = wanted) -> bool:
                return wanted <= {job for job, *_ in in_flight(env, "long")}

            await wait_for(running, 30, 0.01, "every job of the round running")
            took = await crash_redis(env, outage, f"outage {outage:g}s")
            for _ in range(10):  # another worker's rescue, first after the restart
                try:
                    await queue.storage.rescue(1, lock_ms=0)
                    break
                except UNAVAILABLE:  # our own connection died with the server: reconnect
                    await asyncio.sleep(0.01)

            async def settled() -> bool:
                return not in_flight(env, "long") and await drained(queue, 0)

            with contextlib.suppress(TimeoutError):
                await wait_for(settled, 30 + run_s * 3, 0.1, "the round settled")
            rows.append((outage, took, wanted))
        ok = await drained(queue, 60)
        drain_check(rep, ok, 60)
        a = analyse(rep, env.url, "long", env.led)
        rep.expect("worker processes that exited", len(fleet.unexpected_exits()),
                   not fleet.unexpected_exits(), "all recovered by themselves")
        for outage, took, wanted in rows:
            rescued = {job for job, _ in a.rescues.at if job in wanted}
            done = sum(1 for job in wanted if a.final.get(job) == "completed")
            what = "shorter" if outage < lease else "longer"
            rep.add(f"outage {what} than the lease: jobs rescued", f"{len(rescued)}/{len(wanted)}", None,
                    f"down {took:.1f}s, lease {lease:g}s, handlers {run_s:g}s")
            rep.expect(f"outage {what} than the lease: completed", f"{done}/{len(wanted)}",
                       done == len(wanted))
        long_rescued = {job for job, _ in a.rescues.at if job in rows[-1][2]}
        rep.expect("rescued after the long outage", f"{len(long_rescued)}/{n}", bool(long_rescued),
                   "the path of a rescue after a restart, with the holders alive, was exercised")
    return [rep]


async def oom(root: Path, p: Profile) -> list[Report]:
    """6. maxmemory small, noeviction: every refused enqueue gets a clear error and leaves
    nothing behind; jobs already running keep their leases and can still settle; throughput
    recovers once space is freed."""
    rep = Report("6 Redis out of memory (noeviction)")
    async with Env("oom", p, root) as env:
        client = env.server.client()
        queue = env.queue("oom")
        fleet = env.fleet("oom", concurrency=8, max_stalls=3)
        await env.spawn(fleet, 2)
        producer = Producer(queue, env.led, prefix="m",
                            options={"keep_completed": 0, "backoff": Backoff.fixed(0.05)})
        # a job that runs through the whole memory-full period: its lease must hold
        hold = p.lease * 3
        long_ms = int(hold * 1000 + 2000)
        await producer.send(producer.entries(1, data=lambda n: {"n": n, "ms": long_ms}))

        async def long_job_started() -> bool:
            return env.led.count("execution") > 0

        await wait_for(long_job_started, 30, what="long job started")
        await queue.pause()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + p.oom_headroom)
        pad = "x" * 4096
        refused_in_a_row = 0
        while refused_in_a_row < 20:  # fill: until the server refuses
            task = "flaky" if producer.next_n % 4 == 0 else "work"
            ok = await producer.send(producer.entries(1, task, lambda n: {"n": n, "pad": pad,
                                                                         "succeed_on": 2}),
                                     bulk=False)
            refused_in_a_row = 0 if ok else refused_in_a_row + 1
        t_full = time.monotonic()
        while time.monotonic() - t_full < hold:  # memory stays full for 3x the lease
            await producer.send(producer.entries(1, data=lambda n: {"n": n, "pad": pad}), bulk=False)
            await asyncio.sleep(0.05)
        filled = producer.stats.ok
        refused = producer.stats.errors
        await queue.resume()  # free space: the workers drain (keep_completed=0 deletes jobs)
        ok = await drained(queue, 120)
        t_after = time.monotonic()
        more = max(filled // 2, 50)
        await producer.run(more, batch=1, bulk=False, data=lambda n: {"n": n, "pad": pad})
        rate = more / max(time.monotonic() - t_after, 1e-6)
        ok = await drained(queue, 120) and ok
        drain_check(rep, ok, 120)
        a = analyse(rep, env.url, "oom", env.led, allow_duplicates=False)
        errors = [e for status, e in a.enqueues.values() if status == "error"]
        unclear = [e for e in errors if "maxmemory" not in e]
        rep.add("enqueues accepted before full", filled)
        rep.expect("enqueues refused while full", refused, refused > 0 and len(errors) == refused)
        rep.expect("refusals with a clear error", f"{len(errors) - len(unclear)}/{len(errors)}",
                   not unclear, (unclear or errors or [""])[0][:90])
        ghosts = _leftovers(client, queue.storage.keys, [j for j, (s, _) in a.enqueues.items()
                                                          if s == "error"], a)
        rep.expect("half-written refused jobs", len(ghosts), not ghosts, ", ".join(ghosts[:3]))
        refused_commits = [c for c in env.led.commits("oom") if not c.accepted]
        rep.expect("worker commits refused by the server", len(refused_commits), not refused_commits,
                   ", ".join(sorted({c.detail for c in refused_commits})))
        rescues = sum(1 for t in a.traces.values() for _, ev, _, _ in t.events if ev == "rescue")
        rep.expect("leases lost while memory was full", rescues, rescues == 0,
                   f"a job ran {hold + 2:.1f}s through the full period")
        first_after = producer.next_n - more
        after = sum(1 for j, (s, _) in a.enqueues.items() if s == "ok" and int(j[1:]) >= first_after)
        rep.expect("enqueues after space was freed", f"{after}/{more}", after == more,
                   f"{rate:.0f} jobs/s one add() at a time")
        client.close()
    return [rep]


def _leftovers(client: object, keys: object, ids: list[str], a: Analysis) -> list[str]:
    """Refused ids that exist anywhere: a job hash, any index, or the event stream."""
    import redis

    assert isinstance(client, redis.Redis)
    out = []
    for job in ids:
        exists = client.exists(keys.job(job))  # type: ignore[attr-defined]
        indexed = any(client.zscore(getattr(keys, i), job) is not None for i in
                      ("waiting", "scheduled", "active", "completed", "failed", "cancelled"))
        if exists or indexed or job in a.traces:
            out.append(job)
    return out


async def poison_pills(root: Path, p: Profile) -> list[Report]:
    """7. A job that kills its worker each attempt fails after max_stalls; one that always
    raises fails after exactly ``attempts``; one that never returns is stopped by its
    timeout (async: cancelled; sync: abandoned); a non-JSON result fails cleanly."""
    killer = Report("7a poison: kills its worker")
    pills = Report("7b poison: raises, hangs, bad result")
    async with Env("poison", p, root) as env:
        qk, qp = env.queue("killer"), env.queue("pills")
        fk = env.fleet("killer", concurrency=1, mode="poison", max_stalls=1)
        fp = env.fleet("pills", concurrency=4, mode="poison", cancel_grace=0.5)
        await asyncio.gather(env.spawn(fk, 2), env.spawn(fp, 2))
        n = p.poison_each
        await Producer(qk, env.led, prefix="k").run(n, task="kill_self")
        pp = Producer(qp, env.led, prefix="", options={"backoff": Backoff.fixed(0.05)})
        groups = {"raise": ("always_raise", {"max_attempts": 3}),
                  "hang": ("hang", {"timeout": 1.0, "max_attempts": 2}),
                  "hangsync": ("hang_sync", {"timeout": 1.0, "max_attempts": 1}),
                  "badresult": ("bad_result", {"max_attempts": 3}), "ok": ("work", {})}
        for prefix, (task, options) in groups.items():
            pp.prefix = prefix
            await pp.run(n * (10 if prefix == "ok" else 1), task=task, **options)

        async def killer_done() -> bool:
            fk.replace_dead()  # a supervisor restarts what the pill killed
            c = await qk.counts()
            return c["waiting"] + c["active"] + c["scheduled"] == 0

        await wait_for(killer_done, 60 + p.lease * 6 * n, 0.1, "killer jobs settled")
        ok = await drained(qp, 60)
        drain_check(pills, ok, 60)
        drain_check(killer, True, 60 + p.lease * 6 * n)
        a = analyse(killer, env.url, "killer", env.led)
        for job in sorted(a.final):
            info = await qk.get_job(job)
            starts = len(a.starts.get(job, []))
            killer.expect(f"{job}: failed as Stalled after max_stalls=1", f"{starts} runs",
                          info is not None and info.state == "failed" and info.error is not None
                          and info.error.type == "Stalled" and starts == 2,
                          "gone" if info is None else info.error.message if info.error else str(info.state))
        b = analyse(pills, env.url, "pills", env.led)
        expect = {"raise": ("ValueError", 3), "hang": ("JobTimeout", 2), "hangsync": ("JobTimeout", 1),
                  "badresult": ("InvalidInput", 1)}
        for prefix, (etype, runs) in expect.items():
            bad = []
            for job in [j for j in b.enqueues if j.startswith(prefix) and j[len(prefix):].isdigit()]:
                info = await qp.get_job(job)
                got = len(b.starts.get(job, []))
                if info is None:
                    bad.append(f"{job}: gone, {got} runs")
                elif not (info.state == "failed" and info.error and info.error.type == etype
                          and got == runs and info.attempts_made == runs):
                    bad.append(f"{job}: {info.state} {info.error.type if info.error else ''} {got} runs")
            pills.expect(f"{prefix}: failed with {etype} after {runs} run(s)", f"{n - len(bad)}/{n}",
                         not bad, "; ".join(bad[:2]))
        done = sum(1 for j, s in b.final.items() if j.startswith("ok") and s == "completed")
        pills.expect("healthy jobs beside the pills completed", f"{done}/{n * 10}", done == n * 10)
        pills.expect("pill workers that died", len(fp.unexpected_exits()), not fp.unexpected_exits())
    return [killer, pills]


async def retry_storm(root: Path, p: Profile, *, jitter: float = 0.5) -> list[Report]:
    """8. Thousands of jobs fail together and retry; with jitter the retries spread out
    over the jitter window instead of arriving as one wave. ``jitter=0`` is the control."""
    control = jitter == 0
    rep = Report("8c retry storm CONTROL (no jitter)" if control else "8 retry storm with jitter")
    async with Env("retry-storm-control" if control else "retry-storm", p, root) as env:
        queue = env.queue("storm")
        fleet = env.fleet("storm", concurrency=32)
        await env.spawn(fleet, 2)
        backoff = Backoff.fixed(p.retry_backoff, jitter=jitter)
        producer = Producer(queue, env.led, prefix="f", options={"backoff": backoff, "max_attempts": 3})
        await producer.run(p.retry_jobs, batch=500, task="flaky", data=lambda n: {"n": n, "succeed_on": 3})
        timeout = p.retry_backoff * 6 + 60
        ok = await drained(queue, timeout)
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "storm", env.led)
        by_attempt: dict[int, list[float]] = {1: [], 2: [], 3: []}
        wrong = 0
        for runs in a.starts.values():
            if sorted(att for _, att, _, _ in runs) != [1, 2, 3]:
                wrong += 1
            for _, att, _, ts in runs:
                by_attempt.setdefault(att, []).append(ts)
        rep.expect("each job ran exactly attempts 1, 2, 3", f"{len(a.starts) - wrong}/{len(a.starts)}",
                   wrong == 0 and len(a.starts) == p.retry_jobs)
        done = sum(1 for s in a.final.values() if s == "completed")
        rep.expect("completed on the third attempt", f"{done}/{p.retry_jobs}", done == p.retry_jobs)
        w1, w2 = _width(by_attempt[1]), _width(by_attempt[2])
        peak1, peak2 = _peak(by_attempt[1]), _peak(by_attempt[2])
        want = 0.4 * 2 * 0.5 * p.retry_backoff  # 40% of the ±50% jitter window
        rep.expect("retry wave widened by jitter (s)", f"{w1:.2f} -> {w2:.2f}", w2 - w1 >= want,
                   f"p5-p95 of start times, first run vs first retry; must grow by >= {want:.1f}s")
        rep.add("peak starts per 100 ms", f"{peak1} -> {peak2}", None, "first runs -> first retries")
    return [rep]


async def retry_storm_control(root: Path, p: Profile) -> list[Report]:
    return await retry_storm(root, p, jitter=0.0)


def _width(times: list[float]) -> float:
    return percentile(times, 0.95) - percentile(times, 0.05)


def _peak(times: list[float]) -> int:
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t * 10)] = buckets.get(int(t * 10), 0) + 1
    return max(buckets.values(), default=0)
