"""Scenario of issue 11 (groups): kill -9 of workers that hold group slots, under a
per-group concurrency limit.

The slots of a group are its active set ``ga:<group>``; every way out of active frees one
(``leave_active``), rescue of a dead worker's job included. So after a SIGKILL the slots
its jobs held must come back within lease + rescue interval, the limit must hold all
along (no group with more handlers running, nor more ids in its set, than its limit), and
at the end every set is empty: no slot leaked, none freed twice (a set cannot go below
zero, but a slot freed twice would let a group run over its limit, which the samples and
the handler overlaps would show).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from pathlib import Path

import redis.asyncio

from shunter.storage.keys import QueueKeys

from .checker import Report, analyse
from .harness import Env, Profile, drain_check, drained, in_flight
from .producer import Producer

__all__ = ["group_kill"]

#: Jobs of one group that may run at once (queue.configure_groups(concurrency=...)).
GROUP_LIMIT = 2
#: The events of the scripts that end an attempt, each through leave_active.
LEAVES_ACTIVE = frozenset({"complete", "fail", "retry", "release", "abort", "rescue", "ratelimited"})


async def sample_slots(url: str, keys: QueueKeys, groups: list[str], peaks: dict[str, int],
                       strays: list[tuple[str, str]], stop: asyncio.Event) -> int:
    """Until ``stop``: read every group's active set, keep each one's largest size, and
    note ids in a set that are not in the active index (a slot held by a job that is not
    active), read in one MULTI so both are of the same moment. Returns the samples taken."""
    client = redis.asyncio.Redis.from_url(url)
    samples = 0
    try:
        while not stop.is_set():
            with contextlib.suppress(OSError, redis.exceptions.ConnectionError):
                async with client.pipeline(transaction=True) as pipe:
                    for g in groups:
                        pipe.smembers(keys.group_active(g))
                    pipe.zrange(keys.active, 0, -1)
                    *sets, active = await pipe.execute()
                live = set(active)
                for g, members in zip(groups, sets, strict=True):
                    peaks[g] = max(peaks[g], len(members))
                    strays += [(g, m.decode()) for m in members - live]
                samples += 1
            await asyncio.sleep(0.02)  # the sampling period, not a wait for a condition
    finally:
        await client.aclose()
    return samples


def handler_overlap(env: Env, queue: str, group_of: dict[str, str],
                    kills: dict[int, float]) -> dict[str, int]:
    """Per group, the most handlers running at once per the ledger; a handler whose worker
    was killed ends at the kill."""
    marks: list[tuple[float, int, str]] = []
    open_runs: dict[tuple[str, int], tuple[float, int]] = {}
    for e in env.led.executions(queue):
        if e.phase == "start":
            open_runs[(e.job, e.token)] = (e.ts, e.pid)
        elif (e.job, e.token) in open_runs:
            start, _ = open_runs.pop((e.job, e.token))
            marks += [(start, 1, group_of[e.job]), (e.ts, -1, group_of[e.job])]
    for (job, _), (start, pid) in open_runs.items():
        end = kills.get(pid, float("inf"))
        marks += [(start, 1, group_of[job]), (end, -1, group_of[job])]
    running: dict[str, int] = dict.fromkeys(group_of.values(), 0)
    peak = dict(running)
    for _, step, g in sorted(marks, key=lambda m: (m[0], m[1])):  # ends before starts at a tie
        running[g] += step
        peak[g] = max(peak[g], running[g])
    return peak


async def group_kill(root: Path, p: Profile) -> list[Report]:
    """5. kill -9 of workers holding group slots, groups limited to GROUP_LIMIT at once:
    nothing lost or duplicated, slots freed within lease + rescue interval of the kill,
    the limit never exceeded, no slot left over."""
    rep = Report("5 kill -9 under group limits")
    rng = random.Random(5)
    async with Env("group-kill", p, root) as env:
        queue = env.queue("groups")
        keys = queue.storage.keys
        await queue.configure_groups(concurrency=GROUP_LIMIT)
        groups = [f"g{i}" for i in range(p.group_count)]
        # kills come every second or so: a job may be hit twice, even between its handler's
        # return and its commit; max_stalls 5 keeps stall policy out of this scenario (the
        # checker holds that a job whose handler returned never ends failed)
        fleet = env.fleet("groups", concurrency=8, max_stalls=5)
        await env.spawn(fleet, p.group_workers)
        producer = Producer(queue, env.led, prefix="g")
        group_of: dict[str, str] = {}
        entries = producer.entries(p.group_jobs, "work", lambda n: {"n": n, "ms": 40 + n * 37 % 200})
        for n, entry in enumerate(entries):
            entry["group"] = groups[n % len(groups)]
            group_of[entry["job_id"]] = entry["group"]
        peaks = dict.fromkeys(groups, 0)
        strays: list[tuple[str, str]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_slots(env.url, keys, groups, peaks, strays, stop))
        started = time.monotonic()
        for at in range(0, len(entries), 100):
            await producer.send(entries[at:at + 100])
        kills: dict[int, float] = {}
        held: list[tuple[str, int, float]] = []  # (job, token, kill time) of killed attempts
        while (await queue.counts())["waiting"] > 0 and time.monotonic() - started < 600:
            await asyncio.sleep(p.group_kill_every)  # pacing of the kills, not a wait
            # one read of the ledger (it grows: a read takes a while, and the attempts seen
            # running may end before the kill; the checks below allow for that)
            flights = in_flight(env, "groups")
            busy = {pid for *_, pid in flights}
            victims = [w for w in fleet.alive() if w.pid in busy]
            if not victims:
                continue
            victim = rng.choice(victims)
            running = [(job, tok) for job, tok, pid in flights if pid == victim.pid]
            kills[victim.pid] = when = fleet.kill(victim, signal.SIGKILL)
            held += [(job, tok, when) for job, tok in running]
            await asyncio.to_thread(fleet.spawn, 1, False)
        timeout = 60 + p.lease * 4
        ok = await drained(queue, timeout)
        stop.set()
        samples = await sampler
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "groups", env.led)
        rep.add("workers SIGKILLed", len(kills))

        # slots come back: the event that ends a killed attempt frees its slot in the same
        # script (leave_active): a rescue, or the attempt's own end when it finished just
        # as the kill came (its handler ended between the harness's look and the signal)
        bound = p.lease * 1.5 + 1.0  # lease + rescue interval (lease / 2) + 1 s
        freed, late, never = [], [], []
        ended_by: Counter[str] = Counter()
        for job, tok, when in held:
            trace = a.traces[job].events if job in a.traces else []
            end = next(((ms, ev) for ms, ev, _, t in trace if t == tok and ev in LEAVES_ACTIVE), None)
            if end is None:
                never.append(job)
                continue
            ended_by[end[1]] += 1
            took = end[0] / 1000 - when
            freed.append(took)
            # a dead worker writes nothing: only a rescue may come after the kill (the
            # kill is logged just before the signal, hence a little slack)
            if took > bound or (end[1] != "rescue" and took > 0.2):
                late.append((job, end[1], round(took, 2)))
        rep.expect("slots held by killed attempts", len(held), ended_by["rescue"] > 0,
                   "the kills must have hit jobs holding slots for the checks below to mean anything")
        rep.expect("slots freed within lease + rescue interval + 1 s", f"{len(freed)}/{len(held)}",
                   not late and not never, f"worst {max(freed, default=0):.2f}s, bound {bound:.2f}s; "
                   f"freed by {dict(ended_by)} (other than rescue: at the kill)"
                   + (f"; late {late[:3]}" if late else "") + (f"; never {never[:3]}" if never else ""))
        worst = max(peaks.values(), default=0)
        rep.expect("most ids in one group's active set", worst, worst <= GROUP_LIMIT,
                   f"limit {GROUP_LIMIT}, {samples} samples of {len(groups)} groups")
        rep.expect("ids in an active set that were not active", len(strays), not strays,
                   f"{strays[:3]}" if strays else "")
        overlap = handler_overlap(env, "groups", group_of, kills)
        most = max(overlap.values(), default=0)
        rep.expect("most handlers of one group at once", most, most <= GROUP_LIMIT,
                   f"limit {GROUP_LIMIT} (from the ledger; a killed handler ends at its kill)")
        rep.expect("limit used", most, most == GROUP_LIMIT, "the groups did run at their limit")
        client = redis.asyncio.Redis.from_url(env.url)
        try:
            left = {g: await client.scard(keys.group_active(g)) for g in groups}
            lines = {g: await client.zcard(keys.group_waiting(g)) for g in groups}
        finally:
            await client.aclose()
        rep.expect("slots held after the drain", sum(left.values()), not any(left.values()),
                   f"{ {g: n for g, n in left.items() if n} }")
        rep.expect("jobs left in the groups' lines", sum(lines.values()), not any(lines.values()))
    return [rep]

