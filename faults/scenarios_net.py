"""Scenario 11 of RELIABILITY.md: network faults between each process and Redis, through
a TCP proxy per process (faults/proxy.py), so every fault is tied to one pid.

- ``network``: connections reset mid-run, a worker's traffic stalled for longer than the
  lease (a partition that heals), a worker partitioned (connections reset and refused),
  and the producer cut off, refused and losing enqueue replies. Leases may run out: each
  rescue must be explained by the fault on that worker, and nothing is lost, committed
  twice or dead-lettered.
- ``network-replies``: the reply of a ``claim`` or of a ``complete`` (which also claims
  the next jobs) is lost right after the script ran on the server. The worker must get
  its jobs anyway (a re-sent claim with the same request id returns the same batch) and
  know its completion landed: no lease may run out, no job may run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path

from shunter.storage.scripts import SCRIPTS

from .checker import Analysis, Report, analyse
from .harness import Env, Profile, drain_check, drained, wait_for
from .producer import Producer
from .workers import Fleet

__all__ = ["network", "network_replies"]


def orphaned_claims(a: Analysis) -> list[tuple[str, int]]:
    """Attempts that were claimed, never started and rescued: the worker never got them
    (the claim's reply was lost, or it died first)."""
    started = {(job, tok) for job, runs in a.starts.items() for tok, *_ in runs}
    return sorted(key for key in a.rescues.at if key not in started)


def fault_summary(a: Analysis) -> str:
    kinds = Counter(f.kind for f in a.faults)
    return ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "none"


def common_checks(rep: Report, a: Analysis, fleet: Fleet, producer: Producer, total: int) -> None:
    rep.add("faults injected", len(a.faults), None, fault_summary(a))
    rep.expect("worker processes that exited", len(fleet.unexpected_exits()),
               not fleet.unexpected_exits(), "all recovered by themselves")
    failed = sorted(j for j, s in a.final.items() if s != "completed")
    never_ran = [j for j in failed if j not in a.starts]
    rep.expect("jobs not completed (dead-lettered)", len(failed), not failed,
               f"{len(never_ran)} of them never ran" if failed else "every handler succeeds")
    s = producer.stats
    rep.expect("producer: enqueues acknowledged", f"{s.ok}/{total}", s.ok == total and not s.errors,
               f"{s.resent} calls re-sent with the same ids after a cut")


async def network(root: Path, p: Profile) -> list[Report]:
    """11. Resets, stalls longer than the lease and partitions between workers and Redis
    and between the producer and Redis; each worker behind a proxy of its own."""
    rep = Report("11 network cuts, stalls, partitions (proxy per process)")
    lease = p.lease
    async with Env("network", p, root) as env:
        fleet = env.fleet("net", concurrency=16, max_stalls=3)
        workers = await env.spawn_proxied(fleet, 3)
        to_producer = env.proxy(os.getpid(), "proxy-producer")
        producer = Producer(env.queue("net", to_producer.url), env.led, prefix="n")
        queue = env.queue("net")  # the harness's own reads, direct
        hold = lease * 2  # stalls and partitions outlast the lease
        duration = p.net_rounds * (hold + 2.5)
        produce = asyncio.create_task(producer.run(
            p.net_jobs, batch=10, rate=p.net_jobs / duration,
            data=lambda n: {"n": n, "ms": 20 + n % 200}))
        enqueue_sha = SCRIPTS["enqueue"].sha.encode()
        for r in range(p.net_rounds):
            (_, reset), (_, stalled), (_, parted) = workers[r % 3:] + workers[:r % 3]
            await asyncio.sleep(1.0)  # pacing: under load before each round
            reset.cut_all()  # every connection of one worker reset mid-run
            to_producer.cut_all()
            stalled.stall(True)  # another's bytes held for longer than its lease
            parted.refuse(True)  # the third partitioned: reset, and reconnects refused
            parted.cut_all()
            to_producer.drop_reply_after(enqueue_sha)  # an enqueue ran, its reply lost
            await asyncio.sleep(hold)
            stalled.stall(False)
            parted.refuse(False)
            to_producer.refuse(True)  # the producer cannot connect for a while
            await asyncio.sleep(0.5)
            to_producer.refuse(False)
        await produce
        to_producer.disarm()
        timeout = 60 + lease * 4
        ok = await drained(queue, timeout)
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "net", env.led)
        common_checks(rep, a, fleet, producer, p.net_jobs)
        stalls = sum(1 for f in a.faults if f.kind == "stall" and f.end - f.start > lease)
        rep.expect("stalls longer than the lease", stalls, stalls >= p.net_rounds, f"{hold:g}s each")
        orphans = orphaned_claims(a)
        rep.add("claimed, never started, rescued", len(orphans), None,
                "claims whose reply a reset lost (0 once claims are replayed)")
        rep.add("enqueue replies lost", to_producer.dropped, None, "re-sent with the same ids")
    return [rep]


async def network_replies(root: Path, p: Profile) -> list[Report]:
    """11b. Replies lost right after a claim or a complete ran on the server: the worker
    recovers its batch and knows its completion landed, so no lease runs out."""
    rep = Report("11b replies lost after claim / complete (proxy per worker)")
    lease = p.lease
    async with Env("network-replies", p, root) as env:
        fleet = env.fleet("replies", concurrency=8)  # max_stalls 1: a stall may cost a job
        (_, claims), (_, completes) = await env.spawn_proxied(fleet, 2)
        producer = Producer(env.queue("replies"), env.led, prefix="c")
        queue = env.queue("replies")
        n = p.reply_drops
        stop = asyncio.Event()
        # a trickle of short jobs: idle workers claim one by one (claim), busy ones
        # complete and claim the next in one call (complete)
        produce = asyncio.create_task(producer.run(
            p.net_jobs, batch=5, rate=200, stop=stop, data=lambda k: {"n": k, "ms": 20 + k % 80}))

        async def dropped() -> bool:
            return claims.pending_drops() == 0 and completes.pending_drops() == 0

        started = time.monotonic()
        for _ in range(n):  # one at a time: each loss hits a different call, not its re-send
            claims.drop_reply_after(SCRIPTS["claim"].sha.encode())
            completes.drop_reply_after(SCRIPTS["complete"].sha.encode())
            with contextlib.suppress(TimeoutError):  # reported below: replies lost n/n
                await wait_for(dropped, 10 + lease * 4, 0.02, "the armed replies lost")
            await asyncio.sleep(0.2)  # pacing: let the worker recover before the next one
        stop.set()
        await produce
        claims.disarm()
        completes.disarm()
        timeout = 60 + lease * 4
        ok = await drained(queue, timeout)
        drain_check(rep, ok, timeout)
        a = analyse(rep, env.url, "replies", env.led, allow_duplicates=False)
        common_checks(rep, a, fleet, producer, producer.next_n)
        rep.expect("claim replies lost", f"{claims.dropped}/{n}", claims.dropped == n,
                   f"the claim ran on the server, then the connection was reset "
                   f"({time.monotonic() - started:.1f}s to inject all)")
        rep.expect("complete replies lost", f"{completes.dropped}/{n}", completes.dropped == n,
                   "complete (and the claim of the next jobs in the same call) ran, then reset")
        rescues = len(a.rescues.at)
        orphans = orphaned_claims(a)
        rep.expect("leases that ran out", rescues, rescues == 0,
                   f"{len(orphans)} claimed jobs never started (the lost claim's batch not "
                   "recovered)" if orphans else "every lost reply recovered without a lapse")
    return [rep]
